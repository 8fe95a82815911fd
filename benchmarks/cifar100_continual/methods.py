"""The compared methods as Lightning callbacks: vanilla, ReDo, ReGraMa (the core callbacks) and a fresh network.

Every method carries a GraMa and a ReDo measurement, so that both ratios are logged for all of them; ``redo`` and
``regrama`` let one of the two reset. The paper resets "whenever a new data category is introduced": a reset is
requested (``NeuronReset.request_reset``) before the first step of each epoch that adds classes and happens on
that step, scored on its batch (which holds the new classes). ``reset_every_n_steps`` resets on a fixed step
period instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import lightning.pytorch as pl

from regrama_lightning import NeuronReset, ReDo, ReGraMa

from ..harness.methods import METHODS as METHOD_INFO
from ..harness.monitors import extra_callbacks, method_monitors
from .config import METHODS
from .schedule import ClassSchedule

__all__ = ["METHODS", "FreshStart", "Method", "ResetAtClassAdditions", "TaskLRSchedule", "make_method"]


class ResetAtClassAdditions(pl.Callback):
    """Makes the first optimizer step of every epoch that adds classes a reset step of the given callbacks.

    Args:
        schedule: The run's class schedule.
        targets: The ``ReGraMa``/``ReDo`` callbacks that reset.
    """

    def __init__(self, schedule: ClassSchedule, targets: Sequence[NeuronReset]) -> None:
        self.schedule = schedule
        self.targets = list(targets)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Request the resets when this epoch adds classes."""
        if self.schedule.is_increment(trainer.current_epoch):
            for target in self.targets:
                target.request_reset()


class FreshStart(pl.Callback):
    """At every class addition, re-initialise the whole network and forget the optimizer state.

    A reference for full plasticity: each class set is learnt by a new network (same architecture and optimizer
    settings). Parameters are re-drawn in place by each module's ``reset_parameters`` (BatchNorm statistics
    included), so the optimizer keeps working on the same tensors.

    Args:
        schedule: The run's class schedule.
    """

    def __init__(self, schedule: ClassSchedule) -> None:
        self.schedule = schedule
        self.restarts = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Re-initialise when this epoch adds classes."""
        if not self.schedule.is_increment(trainer.current_epoch):
            return
        for module in pl_module.modules():
            if module is not pl_module and callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
        for optimizer in trainer.optimizers:
            optimizer.state.clear()  # Adam moments, SGD momentum: created afresh at the next step
        self.restarts += 1


class TaskLRSchedule(pl.Callback):
    """Step decay of the learning rate, restarted with every class set (Dohare et al.: x0.2 at 60, 120, 160).

    Args:
        schedule: The run's class schedule.
        milestones: Epochs within a task at which the rate is multiplied by ``gamma``.
        gamma: The factor.

    Raises:
        ValueError: On a negative milestone or a factor outside (0, 1].
    """

    def __init__(self, schedule: ClassSchedule, milestones: Sequence[int], gamma: float) -> None:
        if any(m < 1 for m in milestones):
            raise ValueError(f"`milestones` must be epochs >= 1 within a task, got {list(milestones)}.")
        if not 0 < gamma <= 1:
            raise ValueError(f"`gamma` must be in (0, 1], got {gamma}.")
        self.schedule = schedule
        self.milestones = sorted(milestones)
        self.gamma = gamma
        self._base: list[list[float]] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Remember each parameter group's configured rate."""
        self._base = [[group["lr"] for group in opt.param_groups] for opt in trainer.optimizers]

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Set this epoch's rate."""
        passed = sum(self.schedule.epoch_in_task(trainer.current_epoch) >= m for m in self.milestones)
        for optimizer, base in zip(trainer.optimizers, self._base, strict=True):
            for group, lr in zip(optimizer.param_groups, base, strict=True):
                group["lr"] = lr * self.gamma**passed


@dataclass
class Method:
    """A method's callbacks, with its two measuring (and possibly resetting) callbacks at hand."""

    name: str
    grama: ReGraMa
    dormant: ReDo
    callbacks: list[pl.Callback] = field(default_factory=list)


def make_method(
    name: str,
    schedule: ClassSchedule,
    reset_every_n_steps: int | None = None,
    grama_tau: float = 0.01,
    redo_tau: float = 0.02,
    log_every_n_steps: int = 10,
    seed: int = 0,
) -> Method:
    """Build one method's callbacks.

    Args:
        name: One of :data:`METHODS`.
        schedule: The run's class schedule (for resets at class additions and fresh starts).
        reset_every_n_steps: ``None``: ``redo``/``regrama`` reset at each class addition (the paper); N: every N
            optimizer steps instead.
        grama_tau: GraMa threshold (paper: 0.01).
        redo_tau: ReDo threshold (paper's ReDo baseline: 0.02).
        log_every_n_steps: Measure both ratios every N steps (reset steps are always measured); give the Trainer
            the same ``log_every_n_steps`` so each measurement is logged in the step it was made.
        seed: Seed of the re-draws.

    Returns:
        The method; put ``method.callbacks`` in the Trainer.

    Raises:
        ValueError: On an unknown method name (the callbacks check their own arguments).

    Example:
        >>> m = make_method("regrama", ClassSchedule(5, 1, 15))
        >>> [type(c).__name__ for c in m.callbacks]
        ['ResetAtClassAdditions', 'ReGraMa', 'ReDo']
    """
    if name not in METHODS:
        raise ValueError(f"Unknown method {name!r}; choose one of {list(METHODS)}.")
    period = reset_every_n_steps
    grama, dormant = method_monitors(name, period, grama_tau, redo_tau, log_every_n_steps=log_every_n_steps, seed=seed)
    callbacks: list[pl.Callback] = [grama, dormant]
    resets = METHOD_INFO[name].resets
    if resets is not None and period is None:
        callbacks.insert(0, ResetAtClassAdditions(schedule, [grama if resets == "grama" else dormant]))
    if name == "fresh":
        callbacks.insert(0, FreshStart(schedule))
    callbacks += extra_callbacks(name, seed=seed)
    return Method(name, grama, dormant, callbacks)
