"""Soft Actor-Critic as a LightningModule, with CleanRL's defaults (Haarnoja et al. 2018; Huang et al. 2022).

Twin critics with Polyak-averaged targets, a tanh-squashed Gaussian actor, automatic entropy tuning towards
``-|A|`` and delayed policy updates (every ``policy_frequency`` updates, that many actor steps). Optimisation is
manual: two optimizers (critic; actor and temperature) step in one update, so Lightning's ``global_step`` advances
by up to three per update; the agent's own ``updates`` and ``env_steps`` are the counters to read.

The actor loss is taken with the critics' parameters frozen, so it adds nothing to their gradients: a critic's
GraMa score (read when the critic optimizer steps) comes from the critic loss alone, and no backward pass is
spent on gradients nobody uses.

Where this differs from CleanRL's ``sac_continuous_action.py`` (none changes what is optimised):

* Actions live in ``[-1, 1]`` (the environments are rescaled by :func:`~benchmarks.rl.envs.make_env`), so there
  is no action scale/bias; the tanh correction of the log-probability is the exact ``2 (log 2 - x -
  softplus(-2x))`` instead of ``log(1 - tanh(x)^2 + 1e-6)``.
* The temperature's loss reuses the log-probabilities of the actor's own loss (CleanRL draws a fresh sample
  after the actor step), and the temperature is a parameter group of the actor's Adam (learning rate ``critic_lr``,
  as CleanRL's separate Adam: Adam is element-wise, so one step of the group is the same arithmetic).
* Updates are counted per training batch, not per environment step (the same at replay ratio 1).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from .agent import Backward, OffPolicyAgent, check_hyperparameters, polyak
from .config import LoopConfig
from .networks import NetworkConfig, SquashedGaussianActor, TwinQ
from .replay import Transition


class SAC(OffPolicyAgent):
    """Soft Actor-Critic on a continuous-control task.

    Args:
        env_id: The task (see :class:`~benchmarks.rl.agent.OffPolicyAgent`).
        loop: Data-loop settings (:class:`~benchmarks.rl.config.LoopConfig`); ``None``: :attr:`LOOP`.
        actor_net: Actor hidden layers (a dict of its fields, as checkpoints store it, is accepted too).
        critic_net: Hidden layers of each critic.
        gamma: Discount.
        target_tau: Polyak step of the target critics (``target += target_tau * (online - target)``).
        actor_lr: Actor learning rate.
        critic_lr: Critics' (and the temperature's) learning rate.
        policy_frequency: Actor update period in updates (and actor steps per period).
        target_network_frequency: Target update period in updates.
        alpha: Fixed entropy temperature without ``autotune`` (with it the temperature starts at 1, log-alpha 0,
            as in CleanRL).
        autotune: Learn the temperature towards the target entropy ``-|A|``.

    Raises:
        ValueError: On an invalid argument.

    Example:
        >>> import lightning.pytorch as pl
        >>> agent = SAC("Pendulum-v1", LoopConfig(total_steps=300, learning_starts=100, batch_size=32))
        >>> trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
        ...                      enable_model_summary=False)
        >>> trainer.fit(agent)
        >>> agent.env_steps, agent.updates
        (300, 201)
    """

    def __init__(
        self,
        env_id: str = "HalfCheetah-v5",
        loop: LoopConfig | None = None,
        actor_net: NetworkConfig | None = NetworkConfig(),  # noqa: B008 (frozen: a safe default)
        critic_net: NetworkConfig | None = NetworkConfig(),  # noqa: B008
        gamma: float = 0.99,
        target_tau: float = 0.005,
        actor_lr: float = 3e-4,
        critic_lr: float = 1e-3,
        policy_frequency: int = 2,
        target_network_frequency: int = 1,
        alpha: float = 0.2,
        autotune: bool = True,
    ) -> None:
        super().__init__(env_id, loop)
        check_hyperparameters(
            unit={"gamma": gamma, "target_tau": target_tau},
            positive={"actor_lr": actor_lr, "critic_lr": critic_lr, "alpha": alpha},
            counts={"policy_frequency": policy_frequency, "target_network_frequency": target_network_frequency},
        )
        actor_net, critic_net = self.save_hyperparameters_with_networks(actor_net=actor_net, critic_net=critic_net)
        self.actor = SquashedGaussianActor(self.obs_dim, self.act_dim, actor_net)
        self.critic = TwinQ(self.obs_dim, self.act_dim, critic_net)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        # CleanRL: log-alpha starts at 0 when tuned; the fixed alpha only applies without autotune.
        self.log_alpha = nn.Parameter(torch.tensor(0.0 if autotune else math.log(alpha)), requires_grad=autotune)
        self.target_entropy = -float(self.act_dim)
        self.gamma, self.target_tau = gamma, target_tau
        self.actor_lr, self.critic_lr = actor_lr, critic_lr
        self.policy_frequency, self.target_network_frequency = policy_frequency, target_network_frequency
        self.autotune = autotune
        self._polyak: tuple[list[Tensor], list[Tensor]] | None = None

    def act(self, obs: Tensor) -> Tensor:
        """A sampled (exploring) action."""
        return self.actor.sample(obs)[0]

    def act_deterministic(self, obs: Tensor) -> Tensor:
        """The evaluation action: the squashed mean."""
        return self.actor.deterministic(obs)

    def networks(self) -> dict[str, nn.Module]:
        """The twin critic and the actor."""
        return {"critic": self.critic, "actor": self.actor}

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """Critic optimizer, then one for the actor and (with ``autotune``) the temperature.

        The temperature's loss reads the actor's log-probabilities detached and the actor's loss reads the
        temperature detached, so one backward of their sum and one step give each exactly its own gradient: one
        step instead of two per actor update.
        """
        actor_groups: list[dict[str, Any]] = [{"params": list(self.actor.parameters()), "lr": self.actor_lr}]
        if self.autotune:
            actor_groups.append({"params": [self.log_alpha], "lr": self.critic_lr})
        return [torch.optim.Adam(self.critic.parameters(), lr=self.critic_lr), torch.optim.Adam(actor_groups)]

    # -- the losses (the plain-PyTorch reference in perf.py calls the same ones) ---------------------------
    def critic_loss(self, batch: Transition) -> tuple[Tensor, Tensor]:
        """Soft Bellman error of both critics, and the mean Q of the batch (for logging)."""
        alpha = self.log_alpha.detach().exp()
        with torch.no_grad():
            next_action, next_log_prob = self.actor.sample(batch.next_obs)
            target_q = torch.min(*self.critic_target(batch.next_obs, next_action)) - alpha * next_log_prob
            target = batch.reward + (1.0 - batch.terminated) * self.gamma * target_q
        q1, q2 = self.critic(batch.obs, batch.action)
        return F.mse_loss(q1, target) + F.mse_loss(q2, target), q1.detach().mean()

    def actor_loss(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Actor loss (plus the temperature's, with ``autotune``) and the policy entropy estimate.

        The actor's part is ``E[alpha log pi(a|s) - min Q(s, a)]`` with the critics frozen, the temperature's
        ``-E[alpha (log pi(a|s) + target_entropy)]``.
        """
        action, log_prob = self.actor.sample(obs)
        self.critic.requires_grad_(False)
        q = torch.min(*self.critic(obs, action))
        self.critic.requires_grad_(True)
        alpha = self.log_alpha.exp()
        loss = (alpha.detach() * log_prob - q).mean()
        if self.autotune:
            loss = loss - (alpha * (log_prob.detach() + self.target_entropy)).mean()
        return loss, -log_prob.detach().mean()

    def update_targets(self) -> None:
        """Polyak averaging, one fused op over all target parameters."""
        if self._polyak is None:  # parameters are updated in place (resets too), never replaced: list them once
            self._polyak = (list(self.critic_target.parameters()), list(self.critic.parameters()))
        polyak(*self._polyak, self.target_tau)

    # -- one update ---------------------------------------------------------------------------------------
    def update(self, batch: Transition, optimizers: Sequence[Any], backward: Backward) -> dict[str, Any]:
        """Critic step; every ``policy_frequency`` updates, that many actor (and temperature) steps."""
        critic_opt, actor_opt = optimizers
        q_loss, q_mean = self.critic_loss(batch)
        critic_opt.zero_grad()
        backward(q_loss)
        critic_opt.step()
        logs: dict[str, Any] = {"train/critic_loss": q_loss, "train/q": q_mean}
        update = self.updates - 1  # this update's index, from 0
        if update % self.policy_frequency == 0:
            for _ in range(self.policy_frequency):
                pi_loss, entropy = self.actor_loss(batch.obs)
                actor_opt.zero_grad()
                backward(pi_loss)
                actor_opt.step()
            logs.update({"train/actor_loss": pi_loss, "train/entropy": entropy})
        if update % self.target_network_frequency == 0:
            self.update_targets()
        logs["train/alpha"] = self.log_alpha.detach().exp()
        return logs
