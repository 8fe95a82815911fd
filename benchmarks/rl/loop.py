"""The environment-driven data loop: the environment steps with the current policy, Lightning trains on replay.

Lightning iterates a ``DataLoader``; here its dataset is a :class:`ReplayLoop`, an ``IterableDataset`` that, between
two training batches, steps the vectorised environment as often as the replay ratio asks, writes the transitions into
the replay buffer and yields a batch sampled from it. So ``trainer.fit(agent)`` is all it takes: any Trainer, any
accelerator, any callback, and the epoch ends when the agent has taken its budget of environment steps.

Host <-> device traffic per environment step: the policy's action comes to the host once (the environment needs
it) and the environment's outputs (next observation, the true last observation of finished episodes, reward,
termination) go to the device in one packed copy. Updates read nothing back from the device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import IterableDataset

from .envs import final_observations
from .replay import ReplayBuffer, Transition

if TYPE_CHECKING:
    from gymnasium.vector import VectorEnv

Policy = Callable[[Tensor], Tensor]


class Collector:
    """Steps a vectorised environment with a policy and stores every transition in a replay buffer.

    The environment must auto-reset in the same step (``AutoresetMode.SAME_STEP``) and report the true last
    observation of a finished episode in ``infos["final_obs"]``, as :func:`benchmarks.rl.envs.make_env` does: that
    observation, not the reset one, is the stored ``next_obs``. Only termination stops bootstrapping; a time-limit
    truncation is stored as not terminated.

    Args:
        env: The vectorised environment (actions in ``[-1, 1]``).
        buffer: Where transitions go; its device is the device of the observations handed to the policy.
        seed: Seed of the first reset (sub-environment ``i`` gets ``seed + i``) and of the random actions.

    Example:
        >>> from benchmarks.rl.envs import make_env
        >>> env = make_env("Pendulum-v1", seed=0)
        >>> collector = Collector(env, ReplayBuffer(100, 3, 1), seed=0)
        >>> episodes = collector.step(None)  # one uniformly random action per sub-environment
        >>> len(collector.buffer), collector.env_steps
        (1, 1)
    """

    def __init__(self, env: VectorEnv, buffer: ReplayBuffer, seed: int) -> None:
        self.env, self.buffer = env, buffer
        self.num_envs = env.num_envs
        self.obs_dim = buffer.obs_dim
        self.env_steps = 0
        self._random = np.random.default_rng(seed)
        obs, _ = env.reset(seed=seed)
        self.obs = self._to_device(np.asarray(obs, dtype=np.float32))

    def _to_device(self, array: np.ndarray) -> Tensor:
        return torch.from_numpy(array).to(self.buffer.device, non_blocking=True)

    def step(self, policy: Policy | None) -> list[tuple[float, int]]:
        """One step of every sub-environment; ``policy=None`` takes uniformly random actions.

        Returns:
            ``(return, length)`` of every episode that ended in this step.
        """
        if policy is None:
            host = self._random.uniform(-1.0, 1.0, (self.num_envs, self.buffer.act_dim)).astype(np.float32)
            action = self._to_device(host)
        else:
            with torch.no_grad():
                action = policy(self.obs)
            host = action.cpu().numpy()  # the environment needs it: the one device -> host copy of the step
        next_obs, reward, terminated, _, infos = self.env.step(host)  # truncation: still bootstrapped
        last_obs = final_observations(next_obs, infos)  # not the reset observation of a finished episode
        packed = np.concatenate([next_obs, last_obs, reward[:, None], terminated[:, None]], axis=1, dtype=np.float32)
        device = self._to_device(packed)  # the one host -> device copy of the step
        d = self.obs_dim
        self.buffer.add(self.obs, action, device[:, 2 * d], device[:, d : 2 * d], device[:, 2 * d + 1])
        self.obs = device[:, :d]
        self.env_steps += self.num_envs
        episodes = []
        if "episode" in infos:
            for i in np.flatnonzero(infos["_episode"]):
                episodes.append((float(infos["episode"]["r"][i]), int(infos["episode"]["l"][i])))
        return episodes


class Fed(Protocol):
    """What :class:`ReplayLoop` reads and calls of an agent."""

    collector: Collector
    env_steps: int
    total_steps: int
    learning_starts: int
    replay_ratio: float
    batch_size: int
    update_credit: float
    batches_drawn: int

    def collect(self) -> None:
        """Step the environment once (all sub-environments)."""


class ReplayLoop(IterableDataset):
    """Yields replay batches, stepping the environment in between as the agent's replay ratio asks.

    The agent (see :class:`benchmarks.rl.agent.OffPolicyAgent`) owns the collector, the counters and the
    schedule, so that they are saved with it and a resumed run picks up where it stopped. Per environment step,
    ``replay_ratio`` updates are credited once the buffer holds ``learning_starts`` transitions (fractions carry
    over); batches are yielded while credit lasts, then the environment steps again, until ``total_steps``
    environment steps have been taken. Credit left when a checkpoint is saved is spent first after resuming.

    Lightning fetches one batch ahead, so the environment step(s) before batch ``k + 1`` run with the policy as it
    was before update ``k``: acting lags learning by one update, as in an asynchronous actor.

    Args:
        agent: The agent to feed.
    """

    def __init__(self, agent: Fed) -> None:
        super().__init__()
        self.agent = agent

    def __iter__(self) -> Iterator[Transition]:
        agent = self.agent
        buffer = agent.collector.buffer
        while True:
            # A resumed run without its buffer keeps its credit until the buffer is refilled.
            while agent.update_credit >= 1 and len(buffer) >= max(agent.learning_starts, 1):
                agent.update_credit -= 1
                agent.batches_drawn += 1
                yield buffer.sample(agent.batch_size)
            if agent.env_steps >= agent.total_steps:
                return
            agent.collect()
            if len(buffer) >= agent.learning_starts:
                agent.update_credit += agent.replay_ratio * agent.collector.num_envs
