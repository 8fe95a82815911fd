"""The data-loop settings every off-policy agent shares, declared once (light: no torch).

The agents take them as one :class:`LoopConfig` (``SAC("Pendulum-v1", LoopConfig(total_steps=600))``), each with
its own defaults (:attr:`OffPolicyAgent.LOOP`, e.g. BRO-net's replay ratio 2 and batch 128: start from them with
``BRO.LOOP.replace(total_steps=3000)``, as ``LoopConfig(...)`` starts from the plain defaults); the command line
makes one flag per field (``--learning-starts``, ``--batch-size``, ...) and checks them with the same code before
any run folder is touched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def _check(name: str, value: Any, fix: str, integer: bool = True, allow_zero: bool = False) -> None:
    kind = int if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        what = "integer" if integer else "number"
        raise ValueError(
            f"`{name}` must be a {'non-negative' if allow_zero else 'positive'} {what}, got {value!r}; {fix}."
        )


@dataclass(frozen=True)
class LoopConfig:
    """How an off-policy agent collects data and when it updates.

    Args:
        total_steps: Environment steps to train for; the epoch, and the fit, end there.
        learning_starts: Uniformly random actions for this many first steps; no update before the buffer holds
            this many transitions.
        replay_ratio: Updates per environment step (fractions accumulate: 0.5 = one update every two steps).
        batch_size: Transitions per update.
        buffer_size: Replay capacity (oldest transitions are overwritten).
        num_envs: Sub-environments stepped together (each step adds ``num_envs`` transitions).
        seed: Seed of the environments (rank ``r`` of a multi-process run adds ``1000 * r``) and random actions.
        checkpoint_buffer: Save the replay buffer in checkpoints, so that a resumed run trains on the same data
            (without it a resumed run refills the buffer with ``learning_starts`` steps of its current policy).

    Raises:
        ValueError: On a value out of range, naming the field and the fix.

    Example:
        >>> LoopConfig(total_steps=600, learning_starts=200).batch_size
        256
    """

    total_steps: int = 1_000_000
    learning_starts: int = 5_000
    replay_ratio: float = 1.0
    batch_size: int = 256
    buffer_size: int = 1_000_000
    num_envs: int = 1
    seed: int = 0
    checkpoint_buffer: bool = True

    def __post_init__(self) -> None:
        _check("total_steps", self.total_steps, "the number of environment steps to train for")
        _check("learning_starts", self.learning_starts, "use 0 to act with the policy from the start", True, True)
        _check("replay_ratio", self.replay_ratio, "e.g. 1 (one update per step) or 0.5", integer=False)
        _check("batch_size", self.batch_size, "e.g. 256")
        _check("num_envs", self.num_envs, "e.g. 1")
        _check("buffer_size", self.buffer_size, "e.g. 1_000_000")
        _check("seed", self.seed, "e.g. 0", True, True)
        if self.learning_starts >= self.total_steps:
            raise ValueError(
                f"`learning_starts={self.learning_starts}` is not below `total_steps={self.total_steps}`: the run "
                "would end before its first update. Lower learning_starts (--learning-starts on the command line) "
                "or raise total_steps (--steps)."
            )
        need = max(self.learning_starts, self.batch_size, self.num_envs)
        if self.buffer_size < need:
            raise ValueError(
                f"`buffer_size={self.buffer_size}` must hold at least learning_starts, batch_size and num_envs "
                f"({need}) transitions; raise it (--buffer-size)."
            )

    def replace(self, **changes: Any) -> LoopConfig:
        """A copy with ``changes``: ``BRO.LOOP.replace(total_steps=3000)`` keeps BRO-net's other loop defaults.

        Example:
            >>> LoopConfig(batch_size=128).replace(total_steps=600, learning_starts=200).batch_size
            128
        """
        return dataclasses.replace(self, **changes)

    @classmethod
    def of(cls, value: LoopConfig | Mapping[str, Any] | None, default: LoopConfig | None = None) -> LoopConfig:
        """A config from itself, from a dict of its fields (checkpoint hyperparameters), or ``default``."""
        if value is None:
            return default or cls()
        if isinstance(value, Mapping):
            return cls(**value)
        if not isinstance(value, cls):
            raise ValueError(f"Expected a LoopConfig, a dict of its fields or None, got {type(value).__name__}.")
        return value
