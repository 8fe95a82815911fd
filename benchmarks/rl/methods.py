"""The compared methods as callback lists: every run measures both GraMa and ReDo ratios; at most one resets.

Resets follow the agent's update count, not each optimizer's step count: an agent whose actor steps less often
than its critic (DACER: every other update) still resets both every ``reset_every`` updates. The resetting
callback gets no period of its own; :class:`ResetEveryNUpdates` asks it (``NeuronReset.request_reset``) to make
the next step of every optimizer it follows a reset step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl

from regrama_lightning import NeuronReset, ReDo, ReGraMa

from ..harness.methods import METHODS as METHODS_INFO
from ..harness.methods import method_names
from ..harness.monitors import extra_callbacks, method_monitors

Method = Literal["vanilla", "regrama", "redo"]
METHODS = method_names("rl")


class ResetEveryNUpdates(pl.Callback):
    """Request a reset of ``callback`` before every ``every``-th update of the agent (its ``updates`` counter).

    Place it before ``callback`` in the Trainer's list: ReDo hooks activations in its own
    ``on_train_batch_start``, which must see the request.

    Args:
        callback: The resetting callback.
        every: Period in agent updates.

    Raises:
        ValueError: On a non-positive period.
    """

    def __init__(self, callback: NeuronReset, every: int) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"`reset_every` must be a positive number of updates, got {every!r}.")
        self.callback, self.every = callback, every

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        """The agent counts the update after the callbacks' hook: the update about to run is ``updates + 1``."""
        if (pl_module.updates + 1) % self.every == 0:
            self.callback.request_reset()


def method_callbacks(
    method: Method,
    networks: Sequence[str] = ("critic",),
    reset_every: int = 1000,
    grama_tau: float = 0.01,
    redo_tau: float = 0.02,
    max_reset_fraction: float | None = None,
    seed: int | None = None,
    zero_outgoing: bool = True,
) -> list[pl.Callback]:
    """Callbacks for one method; all log against the agent's ``env_steps``.

    Args:
        method: ``"vanilla"`` (measure only), ``"regrama"`` (reset GraMa-inactive neurons) or ``"redo"`` (reset
            dormant neurons).
        networks: Names of the agent's networks to score and reset (keys of its ``networks()``: ``"critic"``,
            ``"actor"``, ...); both critics of a twin critic are covered by ``"critic"``. Target networks are
            never trained, so never scored.
        reset_every: Reset period in agent updates (paper: 1000).
        grama_tau: GraMa threshold (paper: 0.01).
        redo_tau: ReDo threshold (paper: 0.02).
        max_reset_fraction: Cap on the fraction of a layer reset at once (paper, SAC on Humanoid: 0.05).
        seed: Seed of the re-draws.
        zero_outgoing: Zero reset neurons' outgoing weights (the paper); ``False`` keeps them (authors' code).

    Returns:
        ``[ResetEveryNUpdates, ReGraMa, ReDo]`` for a resetting method (the schedule first), ``[ReGraMa, ReDo]``
        for ``"vanilla"``; both callbacks measure.

    Raises:
        ValueError: On an unknown method, an empty network list or a bad period.
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}.")
    if not networks:
        raise ValueError("`networks` must name at least one network, e.g. ['critic'].")
    include = [f"{name}.*" for name in networks]
    grama, redo = method_monitors(
        "vanilla",  # measuring only: the schedule below asks for the resets
        None,
        grama_tau,
        redo_tau,
        include=include,
        step_attribute="env_steps",
        seed=seed,
        max_reset_fraction=max_reset_fraction,
        zero_outgoing=zero_outgoing,
    )
    extras = extra_callbacks(method, include=include, step_attribute="env_steps", seed=seed)
    resets = METHODS_INFO[method].resets
    if resets is None:
        return [grama, redo, *extras]
    return [ResetEveryNUpdates(grama if resets == "grama" else redo, reset_every), grama, redo, *extras]


def monitors(callbacks: Sequence[pl.Callback]) -> tuple[NeuronReset, NeuronReset]:
    """The GraMa and the ReDo callback of a ``method_callbacks`` list, in that order."""
    grama = next(c for c in callbacks if isinstance(c, ReGraMa))
    redo = next(c for c in callbacks if isinstance(c, ReDo))
    return grama, redo


def resetting(callbacks: Sequence[pl.Callback]) -> NeuronReset | None:
    """The callback that resets in a ``method_callbacks`` list, if any."""
    return next((c.callback for c in callbacks if isinstance(c, ResetEveryNUpdates)), None)
