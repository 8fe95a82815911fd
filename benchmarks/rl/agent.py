"""``OffPolicyAgent``: the abstract LightningModule base of replay-based agents (SAC, BRO-net, DACER).

It owns what every off-policy agent shares: the training environment, the replay buffer on the training device,
the environment-driven data loop (:mod:`benchmarks.rl.loop`) and its own counters. Lightning's ``global_step``
counts every optimizer step (up to three per SAC update), so the agent counts ``env_steps`` (transitions taken,
over all sub-environments) and ``updates`` (training batches, counted when one starts) itself; logs use
``env_steps`` as their x-axis, and the callbacks can too (``ReGraMa(step_attribute="env_steps")``).

Checkpoints hold the counters, the update credit and, with ``checkpoint_buffer=True`` (the default), the replay
buffer's stored rows, so that a resumed run trains on the same data. With ``checkpoint_buffer=False`` checkpoints
stay small and a resumed run refills the buffer with ``learning_starts`` steps of its current policy before it
updates again. The environment itself cannot be saved: a resumed run starts new episodes.

The interface an agent implements (and all that the runner, the evaluation, the methods and ``perf.py`` use):
``act`` (exploration), ``act_deterministic`` (evaluation), ``networks`` (the trained networks the callbacks may
score and reset, by attribute name), ``configure_optimizers`` and ``update`` (one update from a batch, given the
optimizers and a backward function, so that the same arithmetic runs under Lightning and in a plain loop).
"""

from __future__ import annotations

import inspect
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .config import LoopConfig
from .envs import make_env
from .loop import Collector, ReplayLoop
from .networks import NetworkConfig
from .replay import ReplayBuffer, Transition


def _as_is(batch: Transition) -> Transition:
    return batch


Backward = Callable[[Tensor], None]


def polyak(targets: Sequence[Tensor], sources: Sequence[Tensor], tau: float) -> None:
    """``target += tau * (source - target)`` for every pair, one fused op, under ``no_grad``."""
    with torch.no_grad():
        torch._foreach_lerp_(list(targets), list(sources), tau)


def check_hyperparameters(
    unit: Mapping[str, float] | None = None,
    positive: Mapping[str, float] | None = None,
    non_negative: Mapping[str, float] | None = None,
    counts: Mapping[str, int] | None = None,
) -> None:
    """Validate agent hyperparameters by kind, naming the first bad one.

    Args:
        unit: Values in ``(0, 1]`` (discounts, Polyak steps).
        positive: Values ``> 0`` (learning rates).
        non_negative: Values ``>= 0`` (weights that 0 switches off).
        counts: Positive integers (periods, sizes).

    Raises:
        ValueError: On the first value out of its range.
    """
    for name, value in (unit or {}).items():
        if not 0 < value <= 1:
            raise ValueError(f"`{name}` must be in (0, 1], got {value!r}.")
    for name, value in (positive or {}).items():
        if not value > 0:
            raise ValueError(f"`{name}` must be > 0, got {value!r}.")
    for name, value in (non_negative or {}).items():
        if not value >= 0:
            raise ValueError(f"`{name}` must be >= 0, got {value!r}.")
    for name, value in (counts or {}).items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


class OffPolicyAgent(pl.LightningModule, ABC):
    """An agent trained from a replay buffer that its own environment loop fills.

    Subclasses build their networks in ``__init__`` (``self.obs_dim``/``self.act_dim`` are known by then) and
    define :meth:`act`, :meth:`act_deterministic`, :meth:`networks`, ``configure_optimizers`` (a list) and
    :meth:`update` (one update on a :class:`~benchmarks.rl.replay.Transition` batch, incrementing nothing: the
    base class counts). Optimisation is manual: ``training_step`` calls :meth:`update` with Lightning's optimizers
    and ``manual_backward``, so that callbacks see every optimizer step.

    Args:
        env_id: A gymnasium id (``"HalfCheetah-v5"``) or ``"dmc:<domain>-<task>"`` (``"dmc:dog-walk"``).
        loop: The data-loop settings (steps, learning starts, replay ratio, batch and buffer size, ...); ``None``:
            the agent's :attr:`LOOP`. A dict of its fields (as checkpoints store it) is accepted too.

    Raises:
        ValueError: On an invalid argument or an unknown environment.
    """

    #: The networks the benchmark resets by default (keys of :meth:`networks`).
    RESET_NETWORKS: ClassVar[tuple[str, ...]] = ("critic",)
    #: The agent's default loop settings (an agent with other defaults overrides this, not the fields).
    LOOP: ClassVar[LoopConfig] = LoopConfig()

    def __init__(self, env_id: str = "HalfCheetah-v5", loop: LoopConfig | None = None) -> None:
        super().__init__()
        self.automatic_optimization = False
        loop = LoopConfig.of(loop, type(self).LOOP)
        self.env_id = env_id
        self.loop = loop
        self.total_steps = loop.total_steps
        self.learning_starts = loop.learning_starts
        self.replay_ratio = float(loop.replay_ratio)
        self.batch_size = loop.batch_size
        self.buffer_size = loop.buffer_size
        self.num_envs = loop.num_envs
        self.seed = loop.seed
        self.checkpoint_buffer = loop.checkpoint_buffer
        probe = make_env(env_id, seed=loop.seed)  # the networks need the dimensions now, in __init__
        self.obs_dim = int(probe.single_observation_space.shape[0])
        self.act_dim = int(probe.single_action_space.shape[0])
        probe.close()
        self.env_steps = 0
        self.updates = 0
        self.episodes = 0
        self.update_credit = 0.0
        self.batches_drawn = 0
        self.collector: Collector | None = None
        self._restored_buffer: dict[str, Any] | None = None
        self._clock: tuple[float, int, int] | None = None
        self.seconds_before = 0.0  # training time of the attempts before this one, up to their checkpoint
        self._fit_began: float | None = None

    # -- to be defined by the agent -------------------------------------------------------------------------
    @abstractmethod
    def act(self, obs: Tensor) -> Tensor:
        """The exploration policy: actions in ``[-1, 1]`` for a batch of observations on the module's device."""

    @abstractmethod
    def act_deterministic(self, obs: Tensor) -> Tensor:
        """The evaluation policy: actions in ``[-1, 1]``, reproducible for the same observations."""

    @abstractmethod
    def networks(self) -> dict[str, nn.Module]:
        """The trained networks by attribute name (``{"critic": ..., "actor": ...}``); targets excluded."""

    @abstractmethod
    def update(self, batch: Transition, optimizers: Sequence[Any], backward: Backward) -> dict[str, Any]:
        """One update on ``batch``: losses, ``backward(loss)`` and ``optimizer.step()`` calls, target updates.

        Args:
            batch: Replay transitions on the module's device.
            optimizers: The optimizers of ``configure_optimizers``, in order (Lightning's wrappers or the bare ones).
            backward: ``manual_backward`` under Lightning, ``Tensor.backward`` in a plain loop.

        Returns:
            Values to log (tensors are read only on logging updates, in one host sync).
        """

    def training_step(self, batch: Transition, batch_idx: int) -> None:
        """One :meth:`update` with Lightning's optimizers; its values are logged every ``log_every_n_steps``."""
        optimizers = self.optimizers()
        logs = self.update(batch, optimizers if isinstance(optimizers, list) else [optimizers], self.manual_backward)
        if self.should_log():
            self.write_logs({**logs, **self.throughput()})

    def save_hyperparameters_with_networks(self, **networks: Any) -> list[NetworkConfig]:
        """``save_hyperparameters``, with the network configs stored as plain dicts (``weights_only`` loading).

        Returns:
            The configs, in the order given (dicts of fields and ``None`` accepted, see ``NetworkConfig.of``).
        """
        configs = [NetworkConfig.of(v) for v in networks.values()]
        self.save_hyperparameters(ignore=[*networks, "loop"], frame=inspect.currentframe().f_back)
        self.hparams.update({k: asdict(c) for k, c in zip(networks, configs, strict=True)})
        self.hparams["loop"] = asdict(self.loop)
        return configs

    # -- the data loop ------------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        """The environment loop as a DataLoader (environment and buffer: made at the first fit, kept for later ones)."""
        if self.collector is None:
            rank_seed = self.seed + 1000 * self.global_rank
            buffer = ReplayBuffer(self.buffer_size, self.obs_dim, self.act_dim, device=self.device)
            if self._restored_buffer is not None:
                buffer.load_state_dict(self._restored_buffer)
                self._restored_buffer = None
            env = make_env(self.env_id, seed=rank_seed + self.env_steps, num_envs=self.num_envs)
            self.collector = Collector(env, buffer, seed=rank_seed + self.env_steps)
            self.collector.env_steps = self.env_steps
        # batch_size=None: the dataset yields whole batches; _as_is skips the default per-item conversion.
        return DataLoader(ReplayLoop(self), batch_size=None, collate_fn=_as_is)

    def collect(self) -> None:
        """One environment step: random actions during the first ``learning_starts`` steps, then the policy."""
        episodes = self.collector.step(None if self.env_steps < self.learning_starts else self.act)
        self.env_steps = self.collector.env_steps
        for episode_return, length in episodes:
            self.episodes += 1
            self.write_logs({"train/episode_return": episode_return, "train/episode_length": float(length)})

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Batches are sampled on the module's device already."""
        return batch

    def on_train_start(self) -> None:
        """Start the clock of this attempt."""
        self._fit_began = time.perf_counter()

    @property
    def train_seconds(self) -> float:
        """Wall-clock seconds of training, over every attempt of a resumed run (up to the checkpoint it resumed)."""
        running = time.perf_counter() - self._fit_began if self._fit_began is not None else 0.0
        return self.seconds_before + running

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Count the update (before it runs, so that checkpoints saved after it include it)."""
        self.updates += 1

    def on_train_epoch_end(self) -> None:
        """Stop the fit once the step budget is spent, whatever the Trainer's ``max_epochs``."""
        if self.env_steps >= self.total_steps:
            self.trainer.should_stop = True

    def close(self) -> None:
        """Close the training environment; a later fit starts a new one (and an empty buffer).

        It stays open between fits on purpose, so that ``trainer.fit`` can be called again to continue training.
        """
        if self.collector is not None:
            self.collector.env.close()
            self.collector = None

    # -- logging ----------------------------------------------------------------------------------------
    def should_log(self) -> bool:
        """Whether this update logs its losses: every Trainer ``log_every_n_steps``-th update.

        As Lightning and the neuron callbacks count (their measured steps are these updates of the critic), so
        that the losses and the ratios of an update share a step, and a row of ``metrics.csv``.
        """
        return self.updates % self.trainer.log_every_n_steps == 0

    def write_logs(self, values: Mapping[str, float | Tensor]) -> None:
        """Write values to every logger at ``env_steps``, with one host sync for all tensor values.

        ``self.log`` would log at Lightning's step and costs far more per call than an update can spare, so
        the agent writes to its loggers itself at the steps it chooses.
        """
        names = [k for k, v in values.items() if isinstance(v, Tensor)]
        numbers = dict(values)
        if names:
            numbers.update(zip(names, torch.stack([values[k].detach().float() for k in names]).tolist(), strict=True))
        for logger in self.trainer.loggers:
            logger.log_metrics(numbers, step=self.env_steps)
        self.trainer.callback_metrics.update({k: torch.tensor(v) for k, v in numbers.items()})

    def throughput(self) -> dict[str, float]:
        """Environment steps and updates per second since the previous call (wall clock, no device sync)."""
        now = (time.perf_counter(), self.env_steps, self.updates)
        last, self._clock = self._clock, now
        if last is None or now[0] <= last[0]:
            return {}
        elapsed = now[0] - last[0]
        return {
            "perf/env_steps_per_s": (now[1] - last[1]) / elapsed,
            "perf/updates_per_s": (now[2] - last[2]) / elapsed,
        }

    # -- checkpoints -------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save the counters and (with ``checkpoint_buffer``) the replay buffer."""
        state: dict[str, Any] = {
            "env_steps": self.env_steps,
            "updates": self.updates,
            "episodes": self.episodes,
            # A batch Lightning fetched ahead is lost with this process: give its credit back.
            "update_credit": self.update_credit + self.batches_drawn - self.updates,
            "seconds": self.train_seconds,
        }
        if self.checkpoint_buffer and self.collector is not None:
            state["buffer"] = self.collector.buffer.state_dict()
        checkpoint["off_policy_agent"] = state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the counters; the buffer is restored when the data loop is created."""
        state = checkpoint["off_policy_agent"]
        self.env_steps, self.updates, self.episodes = state["env_steps"], state["updates"], state["episodes"]
        self.update_credit = state["update_credit"]
        self.batches_drawn = self.updates
        self._restored_buffer = state.get("buffer")
        self.seconds_before = float(state.get("seconds", 0.0))
        self.collector = None
