"""DACER (diffusion actor-critic with entropy regulator; Wang et al. 2024) as a LightningModule: Tables 4-5.

* Actor: a noise-prediction MLP over (observation, noisy action, sinusoidal time embedding); an action is drawn
  by ``diffusion_steps`` reverse DDPM steps (cosine schedule, ``x_0`` clipped to ``[-1, 1]``, start ``0.5 *
  N(0, I)``), then Gaussian noise of scale ``action_noise * alpha`` is added and the action clipped (DACER's
  entropy regulator). The policy loss ``-E[min(Q1, Q2)(s, a)]`` is backpropagated through the whole reverse chain.
* Critics: two distributional critics (Table 4: a mean and a standard deviation per state-action pair) trained
  with DSAC-T's loss (clipped target samples, a running mean of the critics' standard deviation), as DACER does.
* Temperature: every ``alpha_every`` updates the policy's entropy is estimated by fitting a 3-component Gaussian
  mixture to ``entropy_samples`` actions per state (:func:`~benchmarks.rl.gmm.gmm_entropy`), and ``log_alpha``
  takes one Adam step on ``-log_alpha * (target_entropy - entropy)`` (target ``-0.9 |A|``).
* Delayed updates: the actor and the targets every ``policy_delay`` updates; critics every update.

Settings (Table 5): actor and critic lr 3e-4, alpha lr 3e-2, batch 256, tau 0.005, delay 2, reward scale 1, hidden
width 256, discount 0.99. Table 4 lists ReLU networks (DACER's own code uses mish: ``--actor-net-activation mish``).
From DACER's code: 20 diffusion steps, initial ``log_alpha`` 1.2, action noise 0.15, entropy every 10,000 updates
from 200 samples per state.

The whole reverse chain runs on the device with its noise drawn up front; schedule constants are Python floats,
so no step reads a tensor back to the host.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from .agent import Backward, OffPolicyAgent, check_hyperparameters, polyak
from .config import LoopConfig
from .gmm import gmm_entropy
from .networks import NetworkConfig, TwinQ, make_network
from .replay import Transition


def cosine_schedule(steps: int, s: float = 0.008) -> list[float]:
    """Betas of the cosine schedule (Nichol & Dhariwal 2021), clipped at 0.999.

    Example:
        >>> [round(b, 4) for b in cosine_schedule(3)]
        [0.2571, 0.6683, 0.999]
    """
    t = torch.linspace(0, steps, steps + 1, dtype=torch.float64)
    ac = torch.cos((t / steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - ac[1:] / ac[:-1]).clamp(0, 0.999).tolist()


def time_embedding(steps: int, dim: int) -> Tensor:
    """Sinusoidal embeddings of the diffusion steps ``0..steps-1``, ``(steps, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, dtype=torch.float64) / max(half - 1, 1))
    angles = torch.arange(steps, dtype=torch.float64)[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], -1).float()


class DiffusionActor(nn.Module):
    """A DDPM policy: a noise-prediction network and its reverse chain.

    Args:
        obs_dim: Observation features.
        act_dim: Action dimensions.
        config: Hidden layers of the noise-prediction network.
        steps: Diffusion steps.
        time_dim: Width of the sinusoidal time embedding.
    """

    def __init__(self, obs_dim: int, act_dim: int, config: NetworkConfig, steps: int, time_dim: int) -> None:
        super().__init__()
        self.act_dim, self.steps = act_dim, steps
        self.net = make_network(obs_dim + act_dim + time_dim, act_dim, config)
        self.register_buffer("embedding", time_embedding(steps, time_dim), persistent=False)
        betas = torch.tensor(cosine_schedule(steps), dtype=torch.float64)
        ac = torch.cumprod(1 - betas, 0)
        ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
        variance = betas * (1 - ac_prev) / (1 - ac)
        # Host constants: the chain indexes them with Python ints, never a device tensor.
        self.recip = (1 / ac).sqrt().tolist()
        self.recip_m1 = (1 / ac - 1).sqrt().tolist()
        self.coef_x0 = (betas * ac_prev.sqrt() / (1 - ac)).tolist()
        self.coef_xt = ((1 - ac_prev) * (1 - betas).sqrt() / (1 - ac)).tolist()
        self.sigma = (0.5 * variance.clamp_min(1e-20).log()).exp().tolist()

    def forward(self, obs: Tensor, x: Tensor, t: int) -> Tensor:
        """The predicted noise at step ``t``."""
        return self.net(torch.cat([obs, x, self.embedding[t].expand(len(obs), -1)], -1))

    def sample(self, obs: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Actions by the reverse chain from ``0.5 * N(0, I)`` (differentiable with respect to the network).

        Args:
            obs: ``(B, obs_dim)``.
            generator: Source of the chain's noise (default: the global one).

        Returns:
            ``(B, act_dim)`` actions in ``[-1, 1]`` up to the last step's noise-free mean.
        """
        shape = (self.steps + 1, len(obs), self.act_dim)
        noise = torch.randn(shape, device=obs.device, dtype=obs.dtype, generator=generator)
        x = 0.5 * noise[0]
        for i, t in enumerate(reversed(range(self.steps))):
            x0 = (x * self.recip[t] - self(obs, x, t) * self.recip_m1[t]).clamp(-1, 1)
            x = x0 * self.coef_x0[t] + x * self.coef_xt[t]
            if t > 0:
                x = x + self.sigma[t] * noise[i + 1]
        return x


class DACER(OffPolicyAgent):
    """DACER on a continuous-control task (see the module docstring).

    Args:
        env_id: The task (see :class:`~benchmarks.rl.agent.OffPolicyAgent`).
        loop: Data-loop settings (:class:`~benchmarks.rl.config.LoopConfig`); ``None``: :attr:`LOOP`.
        actor_net: Hidden layers of the noise-prediction network.
        critic_net: Hidden layers of each distributional critic.
        gamma: Discount.
        target_tau: Polyak step of the target critics (``target += target_tau * (online - target)``).
        actor_lr: Actor learning rate.
        critic_lr: Critic learning rate.
        alpha_lr: Temperature learning rate.
        policy_delay: Actor and target update period in updates.
        reward_scale: Rewards are multiplied by this in the critic target.
        diffusion_steps: Reverse DDPM steps per action.
        time_dim: Width of the time embedding.
        init_log_alpha: Initial log-temperature.
        action_noise: Added action noise is ``action_noise * alpha * N(0, I)``.
        target_entropy_scale: Target entropy is ``-target_entropy_scale * |A|``.
        alpha_every: Entropy estimate and temperature step period in updates.
        entropy_samples: Actions sampled per state for the entropy estimate.
        entropy_states: States of the batch used for the entropy estimate (at most the batch).
        entropy_components: Mixture components of the entropy estimate.

    Raises:
        ValueError: On an invalid argument.

    Example:
        >>> import lightning.pytorch as pl
        >>> net = NetworkConfig(width=16)
        >>> loop = LoopConfig(total_steps=130, learning_starts=100, batch_size=16)
        >>> agent = DACER("Pendulum-v1", loop, diffusion_steps=4,
        ...               actor_net=net, critic_net=net, entropy_samples=8, entropy_states=4)
        >>> trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
        ...                      enable_model_summary=False)
        >>> trainer.fit(agent)
        >>> agent.env_steps, agent.updates
        (130, 31)
    """

    RESET_NETWORKS: ClassVar[tuple[str, ...]] = ("critic", "actor")

    def __init__(
        self,
        env_id: str = "HalfCheetah-v5",
        loop: LoopConfig | None = None,
        actor_net: NetworkConfig | None = NetworkConfig(),  # noqa: B008 (frozen: a safe default)
        critic_net: NetworkConfig | None = NetworkConfig(),  # noqa: B008
        gamma: float = 0.99,
        target_tau: float = 0.005,
        actor_lr: float = 3e-4,
        critic_lr: float = 3e-4,
        alpha_lr: float = 3e-2,
        policy_delay: int = 2,
        reward_scale: float = 1.0,
        diffusion_steps: int = 20,
        time_dim: int = 16,
        init_log_alpha: float = 1.2,
        action_noise: float = 0.15,
        target_entropy_scale: float = 0.9,
        alpha_every: int = 10_000,
        entropy_samples: int = 200,
        entropy_states: int = 256,
        entropy_components: int = 3,
    ) -> None:
        super().__init__(env_id, loop)
        check_hyperparameters(
            unit={"gamma": gamma, "target_tau": target_tau},
            positive={"actor_lr": actor_lr, "critic_lr": critic_lr, "alpha_lr": alpha_lr},
            non_negative={"action_noise": action_noise},
            counts={"policy_delay": policy_delay, "diffusion_steps": diffusion_steps, "alpha_every": alpha_every}
            | {"entropy_states": entropy_states, "entropy_components": entropy_components, "time_dim": time_dim},
        )
        if not isinstance(entropy_samples, int) or entropy_samples < entropy_components:
            raise ValueError(
                f"`entropy_samples` must be an integer >= entropy_components ({entropy_components}), "
                f"got {entropy_samples!r}."
            )
        if time_dim % 2:
            raise ValueError(f"`time_dim` must be even (sines and cosines), got {time_dim}.")
        actor_net, critic_net = self.save_hyperparameters_with_networks(actor_net=actor_net, critic_net=critic_net)
        self.actor = DiffusionActor(self.obs_dim, self.act_dim, actor_net, diffusion_steps, time_dim)
        self.critic = TwinQ(self.obs_dim, self.act_dim, critic_net, outputs=2)  # mean and std (Table 4: 256 -> 2)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(float(init_log_alpha)))
        self.register_buffer("entropy", torch.zeros(()))
        self.register_buffer("mean_q_std", torch.full((2,), -1.0))  # DSAC-T's running std per critic; -1: unset
        self.target_entropy = -target_entropy_scale * self.act_dim
        self.gamma, self.target_tau, self.reward_scale = gamma, target_tau, reward_scale
        self.actor_lr, self.critic_lr, self.alpha_lr = actor_lr, critic_lr, alpha_lr
        self.policy_delay, self.action_noise, self.alpha_every = policy_delay, action_noise, alpha_every
        self.entropy_samples, self.entropy_states, self.entropy_components = (
            entropy_samples,
            entropy_states,
            entropy_components,
        )
        self._polyak: tuple[list[Tensor], list[Tensor]] | None = None

    # -- the interface --------------------------------------------------------------------------------------
    def networks(self) -> dict[str, nn.Module]:
        """The twin distributional critic and the diffusion actor."""
        return {"critic": self.critic, "actor": self.actor}

    def policy(self, obs: Tensor, noise: bool = True, generator: torch.Generator | None = None) -> Tensor:
        """The reverse chain, plus the entropy regulator's noise (``noise=True``), clipped to ``[-1, 1]``."""
        action = self.actor.sample(obs, generator)
        if noise:
            scale = self.log_alpha.detach().exp() * self.action_noise
            action = action + scale * torch.randn(action.shape, device=obs.device, generator=generator)
        return action.clamp(-1, 1)

    def act(self, obs: Tensor) -> Tensor:
        """A sampled action with the entropy regulator's noise."""
        return self.policy(obs)

    def act_deterministic(self, obs: Tensor) -> Tensor:
        """The chain without added noise, its own noise from a fixed seed (DACER: a key derived from the data)."""
        return self.policy(obs, noise=False, generator=torch.Generator(obs.device).manual_seed(0))

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """Critics, actor, temperature."""
        return [
            torch.optim.Adam(self.critic.parameters(), lr=self.critic_lr),
            torch.optim.Adam(self.actor.parameters(), lr=self.actor_lr),
            torch.optim.Adam([self.log_alpha], lr=self.alpha_lr),
        ]

    # -- the losses -------------------------------------------------------------------------------------------
    @staticmethod
    def _mean_std(out: Tensor) -> tuple[Tensor, Tensor]:
        return out[:, 0], F.softplus(out[:, 1])

    def critic_loss(self, batch: Transition) -> tuple[Tensor, Tensor, Tensor]:
        """DSAC-T's loss of both critics; also the mean Q and the mean predicted std (for logging)."""
        with torch.no_grad():
            next_action = self.policy(batch.next_obs)
            (m1, s1), (m2, s2) = (self._mean_std(o) for o in self.critic_target(batch.next_obs, next_action))
            z = torch.randn((2, *m1.shape), device=m1.device).clamp(-3, 3)
            sample = torch.where(m1 < m2, m1 + s1 * z[0], m2 + s2 * z[1])
            reward, keep = self.reward_scale * batch.reward, self.gamma * (1.0 - batch.terminated)
            backup, backup_sample = reward + keep * torch.minimum(m1, m2), reward + keep * sample
        loss = torch.zeros((), device=batch.obs.device)
        stds, means = [], []
        for i, out in enumerate(self.critic(batch.obs, batch.action)):
            mean, std = self._mean_std(out)
            with torch.no_grad():
                new = std.mean()
                old = self.mean_q_std[i]
                running = torch.where(old == -1.0, new, self.target_tau * new + (1 - self.target_tau) * old)
                self.mean_q_std[i] = running
                bounded = mean + (backup_sample - mean).clamp(-3 * running, 3 * running)
                std_d = std.clamp_min(0)
            eps = 0.1
            term = mean * (backup - mean.detach()) / (std_d.square() + eps)
            term = term + std * ((mean.detach() - bounded).square() - std_d.square()) / (std_d.pow(3) + eps)
            loss = loss - (running.square() + eps) * term.mean()
            stds.append(std.detach().mean())
            means.append(mean.detach().mean())
        return loss, torch.stack(means).mean(), torch.stack(stds).mean()

    def actor_loss(self, obs: Tensor) -> Tensor:
        """``-E[min(Q1, Q2)(s, a)]`` through the reverse chain, critics frozen (no critic gradients)."""
        action = self.policy(obs)
        self.critic.requires_grad_(False)
        q1, q2 = (self._mean_std(o)[0] for o in self.critic(obs, action))
        self.critic.requires_grad_(True)
        return -torch.minimum(q1, q2).mean()

    @torch.no_grad()
    def estimate_entropy(self, obs: Tensor) -> Tensor:
        """DACER's mixture entropy of the noisy policy at (up to) ``entropy_states`` states of ``obs``."""
        obs = obs[: self.entropy_states]
        actions = self.policy(obs.repeat_interleave(self.entropy_samples, 0))
        return gmm_entropy(actions.view(len(obs), self.entropy_samples, -1), self.entropy_components)

    def update_targets(self) -> None:
        """Polyak averaging, one fused op over all target parameters."""
        if self._polyak is None:  # parameters are updated in place, never replaced: list them once
            self._polyak = (list(self.critic_target.parameters()), list(self.critic.parameters()))
        polyak(*self._polyak, self.target_tau)

    # -- one update ------------------------------------------------------------------------------------------
    def update(self, batch: Transition, optimizers: Sequence[Any], backward: Backward) -> dict[str, Any]:
        """Critic step, and DACER's delayed steps.

        Every ``policy_delay`` updates an actor step and a target update; every ``alpha_every`` updates an entropy
        estimate and a temperature step.
        """
        critic_opt, actor_opt, alpha_opt = optimizers
        update = self.updates - 1  # this update's index, from 0
        q_loss, q_mean, q_std = self.critic_loss(batch)
        critic_opt.zero_grad()
        backward(q_loss)
        critic_opt.step()
        logs: dict[str, Any] = {"train/critic_loss": q_loss, "train/q": q_mean, "train/q_std": q_std}
        if update % self.policy_delay == 0:
            pi_loss = self.actor_loss(batch.obs)
            actor_opt.zero_grad()
            backward(pi_loss)
            actor_opt.step()
            self.update_targets()
            logs["train/actor_loss"] = pi_loss
        if update % self.alpha_every == 0:
            self.entropy.copy_(self.estimate_entropy(batch.obs))
            alpha_loss = -self.log_alpha * (self.target_entropy - self.entropy)
            alpha_opt.zero_grad()
            backward(alpha_loss)
            alpha_opt.step()
        logs.update({"train/entropy": self.entropy.clone(), "train/alpha": self.log_alpha.detach().exp()})
        return logs
