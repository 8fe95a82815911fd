"""BRO-net (Bigger, Regularized, Optimistic; Nauman et al. 2024) as a LightningModule: GraMa paper Tables 1-3.

Networks (Tables 1-2): ``Linear -> LayerNorm -> ReLU``, then ``N`` BroNetBlocks ``x + LN(Linear(ReLU(LN(Linear(x)))))``
(:class:`~benchmarks.rl.networks.ResidualBlock` with LayerNorm), then a Linear head; width 256, one block in the
actor, two in each critic (``actor_net.depth``/``critic_net.depth``: 1-4 in the paper's scaling study, Fig. 9).
Optimisation (Table 3): actor lr 1e-4, critic lr 1e-3, replay ratio 2, batch 128, discount 0.99, buffer 10^6.

BRO's own components, named as in its paper, each an option:

* ``n_quantiles``: a quantile (distributional) critic trained with the quantile Huber loss (BRO: 100 quantiles);
  ``1`` gives a scalar critic trained on the squared TD error.
* ``pessimism`` (beta): both the TD target and the actor maximise ``mean - pessimism * uncertainty`` of the two
  critics, with ``uncertainty = |Q1 - Q2| / 2`` (per quantile), as BRO's PyTorch code does.
* ``optimism`` (beta_o): with ``optimism > 0`` an optimistic actor explores: it maximises ``mean + optimism *
  uncertainty`` under a KL penalty (``kl_weight``) towards the conservative actor, whose standard deviation it
  uses times ``std_multiplier``. The conservative actor is evaluated. (BRO adapts beta_o and the KL weight by
  dual descent; here both are fixed.)
* ``full_reset_steps``: full parameter resets (networks, targets, temperature, optimizer state) at these
  environment steps; BRO's schedule is :data:`BRO_RESET_STEPS`. Off by default, so that the neuron-reset methods
  compare on their own (the GraMa paper does not name BRO's full resets among its settings).

Other choices: AdamW with ``weight_decay`` (BRO's PyTorch code: 1e-3) on the networks, none on the temperature;
initial temperature 1 and target entropy ``-|A| / 2`` (BRO); PyTorch's default initialisation (BRO's code uses
orthogonal), so that a neuron reset re-draws from the initial distribution; log-std in ``[-10, 2]`` (BRO's code).
"""

from __future__ import annotations

import bisect
import copy
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from .agent import Backward, OffPolicyAgent, check_hyperparameters, polyak
from .config import LoopConfig
from .networks import NetworkConfig, ResidualBlock, SquashedGaussianActor, TwinQ
from .replay import Transition

BroNetBlock = ResidualBlock  # Table 1: Linear, LayerNorm, ReLU, Linear, LayerNorm, residual add
BRO_RESET_STEPS: tuple[int, ...] = (15_000, 50_000, 250_000, 500_000, 750_000)


def bro_net(blocks: int, width: int = 256) -> NetworkConfig:
    """A BRO-net trunk: ``Linear -> LN -> ReLU`` and ``blocks`` BroNetBlocks of ``width`` neurons.

    Example:
        >>> bro_net(2)
        NetworkConfig(width=256, depth=2, activation='relu', layer_norm=True, residual=True)
    """
    return NetworkConfig(width=width, depth=blocks, activation="relu", layer_norm=True, residual=True)


def quantile_huber_loss(pred: Tensor, target: Tensor, taus: Tensor, kappa: float = 1.0) -> Tensor:
    """Quantile regression Huber loss (Dabney et al. 2018), summed over predicted quantiles, mean over the rest.

    Args:
        pred: Predicted quantiles ``(B, N)`` at fractions ``taus``.
        target: Target samples ``(B, M)`` (no gradient).
        taus: Quantile fractions ``(N,)``.
        kappa: Huber threshold.

    Returns:
        The scalar loss.
    """
    td = target[:, None, :] - pred[:, :, None]  # (B, N, M)
    huber = F.huber_loss(pred[:, :, None].expand_as(td), target[:, None, :].expand_as(td), "none", delta=kappa)
    weight = (taus[None, :, None] - (td.detach() < 0).float()).abs()
    return (weight * huber / kappa).sum(1).mean()


def _columns(q: Tensor) -> Tensor:
    """Critic outputs as ``(B, N)``: a scalar critic's ``(B,)`` becomes one column."""
    return q[:, None] if q.dim() == 1 else q


class BRO(OffPolicyAgent):
    """BRO-net on a continuous-control task (see the module docstring for every component).

    Args:
        env_id: The task (see :class:`~benchmarks.rl.agent.OffPolicyAgent`).
        loop: Data-loop settings (:class:`~benchmarks.rl.config.LoopConfig`); ``None``: :attr:`LOOP`.
        actor_net: Actor trunk (paper: one BroNetBlock of 256).
        critic_net: Trunk of each critic (paper: two BroNetBlocks of 256).
        gamma: Discount.
        target_tau: Polyak step of the target critics (``target += target_tau * (online - target)``).
        actor_lr: Actor learning rate.
        critic_lr: Critic learning rate.
        alpha_lr: Temperature learning rate.
        weight_decay: AdamW weight decay of the networks.
        n_quantiles: Quantiles per critic; 1 for a scalar critic.
        kappa: Huber threshold of the quantile loss.
        pessimism: Weight of the critics' disagreement subtracted in the target and the actor's objective.
        optimism: Weight of the disagreement added by the optimistic exploration actor; 0 explores with the
            conservative actor.
        kl_weight: KL penalty of the optimistic actor towards the conservative one.
        std_multiplier: Scale of the conservative standard deviation used by the optimistic actor.
        full_reset_steps: Environment steps at which every network is reset (BRO: ``BRO_RESET_STEPS``).

    Raises:
        ValueError: On an invalid argument.

    Example:
        >>> import lightning.pytorch as pl
        >>> loop = BRO.LOOP.replace(total_steps=150, learning_starts=100, batch_size=16)  # replay ratio 2 kept
        >>> agent = BRO("Pendulum-v1", loop, n_quantiles=8, actor_net=bro_net(1, 32), critic_net=bro_net(1, 32))
        >>> trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
        ...                      enable_model_summary=False)
        >>> trainer.fit(agent)
        >>> agent.env_steps, agent.updates
        (150, 102)
    """

    RESET_NETWORKS: ClassVar[tuple[str, ...]] = ("critic", "actor")
    #: The paper's replay ratio 2 and batch 128.
    LOOP: ClassVar[LoopConfig] = LoopConfig(replay_ratio=2.0, batch_size=128)

    def __init__(
        self,
        env_id: str = "HalfCheetah-v5",
        loop: LoopConfig | None = None,
        actor_net: NetworkConfig | None = bro_net(1),  # noqa: B008 (frozen: a safe default)
        critic_net: NetworkConfig | None = bro_net(2),  # noqa: B008
        gamma: float = 0.99,
        target_tau: float = 0.005,
        actor_lr: float = 1e-4,
        critic_lr: float = 1e-3,
        alpha_lr: float = 3e-4,
        weight_decay: float = 1e-3,
        n_quantiles: int = 100,
        kappa: float = 1.0,
        pessimism: float = 1.0,
        optimism: float = 0.0,
        kl_weight: float = 1.0,
        std_multiplier: float = 0.75,
        full_reset_steps: tuple[int, ...] = (),
    ) -> None:
        super().__init__(env_id, loop)
        check_hyperparameters(
            unit={"gamma": gamma, "target_tau": target_tau},
            positive={"actor_lr": actor_lr, "critic_lr": critic_lr, "alpha_lr": alpha_lr, "kappa": kappa}
            | {"std_multiplier": std_multiplier},
            non_negative={"weight_decay": weight_decay, "optimism": optimism, "kl_weight": kl_weight},
            counts={"n_quantiles": n_quantiles},
        )
        steps = tuple(full_reset_steps)
        if any(not isinstance(s, int) or s < 1 for s in steps) or list(steps) != sorted(set(steps)):
            raise ValueError(f"`full_reset_steps` must be increasing positive environment steps, got {steps!r}.")
        actor_net, critic_net = self.save_hyperparameters_with_networks(
            actor_net=actor_net if actor_net is not None else bro_net(1),
            critic_net=critic_net if critic_net is not None else bro_net(2),
        )
        self.actor = SquashedGaussianActor(self.obs_dim, self.act_dim, actor_net, log_std_min=-10.0)
        self.critic = TwinQ(self.obs_dim, self.act_dim, critic_net, outputs=n_quantiles)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optimistic = (
            SquashedGaussianActor(self.obs_dim, self.act_dim, actor_net, log_std_min=-10.0) if optimism > 0 else None
        )
        self.log_alpha = nn.Parameter(torch.tensor(0.0))  # BRO: initial temperature 1
        self.target_entropy = -self.act_dim / 2
        taus = (torch.arange(n_quantiles, dtype=torch.float32) + 0.5) / n_quantiles  # quantile midpoints
        self.register_buffer("taus", taus, persistent=False)
        self.gamma, self.target_tau = gamma, target_tau
        self.actor_lr, self.critic_lr, self.alpha_lr, self.weight_decay = actor_lr, critic_lr, alpha_lr, weight_decay
        self.n_quantiles, self.kappa = n_quantiles, kappa
        self.pessimism, self.optimism = pessimism, optimism
        self.kl_weight, self.std_multiplier = kl_weight, std_multiplier
        self.full_reset_steps = steps
        self.full_resets_done = 0
        self._polyak: tuple[list[Tensor], list[Tensor]] | None = None

    # -- the interface --------------------------------------------------------------------------------------
    def networks(self) -> dict[str, nn.Module]:
        """The twin critic, the actor and (with ``optimism``) the optimistic actor."""
        nets = {"critic": self.critic, "actor": self.actor}
        if self.actor_optimistic is not None:
            nets["actor_optimistic"] = self.actor_optimistic
        return nets

    def act(self, obs: Tensor) -> Tensor:
        """A sampled action: from the optimistic actor with ``optimism``, else from the actor."""
        if self.actor_optimistic is None:
            return self.actor.sample(obs)[0]
        return torch.tanh(self._optimistic(obs)[0])

    def act_deterministic(self, obs: Tensor) -> Tensor:
        """The conservative actor's squashed mean."""
        return self.actor.deterministic(obs)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """Critic; actor with the temperature (no weight decay on it); the optimistic actor, if any."""
        wd = self.weight_decay
        optimizers = [
            torch.optim.AdamW(self.critic.parameters(), lr=self.critic_lr, weight_decay=wd),
            torch.optim.AdamW(
                [
                    {"params": list(self.actor.parameters()), "lr": self.actor_lr, "weight_decay": wd},
                    {"params": [self.log_alpha], "lr": self.alpha_lr, "weight_decay": 0.0},
                ]
            ),
        ]
        if self.actor_optimistic is not None:
            optimizers.append(torch.optim.AdamW(self.actor_optimistic.parameters(), lr=self.actor_lr, weight_decay=wd))
        return optimizers

    # -- the losses -------------------------------------------------------------------------------------------
    def _value(self, q1: Tensor, q2: Tensor, beta: float) -> tuple[Tensor, Tensor]:
        """``mean + beta * uncertainty`` of the twin critics (per quantile) and the uncertainty."""
        uncertainty = (q1 - q2).abs() / 2
        return (q1 + q2) / 2 + beta * uncertainty, uncertainty

    def critic_loss(self, batch: Transition) -> tuple[Tensor, Tensor, Tensor]:
        """Quantile Huber (or squared) TD error of both critics towards the pessimistic soft target.

        Returns:
            The loss, the mean Q and the mean critic disagreement (both for logging).
        """
        alpha = self.log_alpha.detach().exp()
        with torch.no_grad():
            next_action, next_log_prob = self.actor.sample(batch.next_obs)
            next_q, _ = self._value(*map(_columns, self.critic_target(batch.next_obs, next_action)), -self.pessimism)
            keep = self.gamma * (1.0 - batch.terminated)
            target = batch.reward[:, None] + keep[:, None] * (next_q - alpha * next_log_prob[:, None])  # (B, N)
        q1, q2 = map(_columns, self.critic(batch.obs, batch.action))
        if self.n_quantiles > 1:
            loss = quantile_huber_loss(q1, target, self.taus, self.kappa)
            loss = loss + quantile_huber_loss(q2, target, self.taus, self.kappa)
        else:
            loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        with torch.no_grad():
            mean, uncertainty = self._value(q1, q2, 0.0)
        return loss, mean.mean(), uncertainty.mean()

    def _frozen_value(self, obs: Tensor, action: Tensor, beta: float) -> Tensor:
        """``mean + beta * uncertainty`` per state (quantiles averaged), critics frozen: no critic gradients."""
        self.critic.requires_grad_(False)
        value, _ = self._value(*map(_columns, self.critic(obs, action)), beta)
        self.critic.requires_grad_(True)
        return value.mean(-1)

    def actor_loss(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """``E[alpha log pi - (mean - pessimism * uncertainty)]`` plus the temperature's loss; and the entropy."""
        action, log_prob = self.actor.sample(obs)
        q = self._frozen_value(obs, action, -self.pessimism)
        alpha = self.log_alpha.exp()
        loss = (alpha.detach() * log_prob - q).mean() - (alpha * (log_prob.detach() + self.target_entropy)).mean()
        return loss, -log_prob.detach().mean()

    def _optimistic(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """A pre-tanh optimistic sample, its mean and log-std, and the conservative mean and log-std (detached)."""
        mean, _ = self.actor_optimistic(obs)
        with torch.no_grad():
            mean_c, log_std_c = self.actor(obs)
        log_std = log_std_c + math.log(self.std_multiplier)
        return mean + log_std.exp() * torch.randn_like(mean), mean, log_std, (mean_c, log_std_c)

    def optimistic_loss(self, obs: Tensor) -> Tensor:
        """``-E[mean + optimism * uncertainty] + kl_weight * KL(pi_optimistic || pi_conservative)`` (pre-tanh)."""
        pre, mean, log_std, (mean_c, log_std_c) = self._optimistic(obs)
        q = self._frozen_value(obs, torch.tanh(pre), self.optimism)
        kl = log_std_c - log_std + ((2 * log_std).exp() + (mean - mean_c).square()) / (2 * (2 * log_std_c).exp())
        return (self.kl_weight * (kl - 0.5).sum(-1) - q).mean()

    def update_targets(self) -> None:
        """Polyak averaging, one fused op over all target parameters."""
        if self._polyak is None:  # parameters are updated in place, never replaced: list them once
            self._polyak = (list(self.critic_target.parameters()), list(self.critic.parameters()))
        polyak(*self._polyak, self.target_tau)

    def full_reset(self, optimizers: Sequence[Any]) -> None:
        """BRO's full reset, in place, so that the callbacks keep their references.

        Every network is re-drawn, the targets copied, the temperature set back to 1 and optimizer state cleared.
        """
        with torch.no_grad():
            for net in self.networks().values():
                for module in net.modules():
                    if module is not net and hasattr(module, "reset_parameters"):
                        module.reset_parameters()
            for target, online in zip(self.critic_target.parameters(), self.critic.parameters(), strict=True):
                target.copy_(online)
            self.log_alpha.zero_()
        for optimizer in optimizers:
            getattr(optimizer, "optimizer", optimizer).state.clear()  # Adam state is recreated at the next step

    # -- one update ------------------------------------------------------------------------------------------
    def update(self, batch: Transition, optimizers: Sequence[Any], backward: Backward) -> dict[str, Any]:
        """Critic step, target update, actor (and temperature) step, optimistic actor step (BRO's order)."""
        due = bisect.bisect_right(self.full_reset_steps, self.env_steps)  # host ints only
        if due > self.full_resets_done:
            self.full_reset(optimizers)
            self.full_resets_done = due
        critic_opt, actor_opt = optimizers[:2]
        q_loss, q_mean, uncertainty = self.critic_loss(batch)
        critic_opt.zero_grad()
        backward(q_loss)
        critic_opt.step()
        self.update_targets()
        pi_loss, entropy = self.actor_loss(batch.obs)
        actor_opt.zero_grad()
        backward(pi_loss)
        actor_opt.step()
        logs = {"train/critic_loss": q_loss, "train/q": q_mean, "train/q_uncertainty": uncertainty}
        logs.update(
            {"train/actor_loss": pi_loss, "train/entropy": entropy, "train/alpha": self.log_alpha.detach().exp()}
        )
        if self.actor_optimistic is not None:
            optimistic_opt = optimizers[2]
            o_loss = self.optimistic_loss(batch.obs)
            optimistic_opt.zero_grad()
            backward(o_loss)
            optimistic_opt.step()
            logs["train/optimistic_loss"] = o_loss
        return logs

    # -- checkpoints -------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Also save how many full resets were done."""
        super().on_save_checkpoint(checkpoint)
        checkpoint["off_policy_agent"]["full_resets_done"] = self.full_resets_done

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Also restore how many full resets were done."""
        super().on_load_checkpoint(checkpoint)
        self.full_resets_done = checkpoint["off_policy_agent"].get("full_resets_done", 0)
