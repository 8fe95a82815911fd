"""The GraMa and ReDo callbacks every benchmark run carries, one of them resetting for ``regrama``/``redo``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl

from regrama_lightning import (
    ContinualBackprop,
    L2Init,
    NeuronPruning,
    PlasticityMetrics,
    ReBorn,
    ReDo,
    ReGraMa,
    ShrinkPerturb,
)

from .methods import METHODS

#: Factories of the callbacks named in ``MethodInfo.extras``; each gets the run's ``seed`` and the monitors'
#: shared arguments (``include``, ``step_attribute``, ...) as keywords and takes what it needs.
#: A factory gets ``reset_every`` (the benchmark's reset period) where the benchmark passes it.
EXTRAS: dict[str, Callable[..., pl.Callback]] = {
    "cbp": lambda seed=None, include=None, step_attribute=None, **_: ContinualBackprop(
        seed=seed, include=include, step_attribute=step_attribute
    ),
    "reborn": lambda seed=None, include=None, step_attribute=None, reset_every=1000, **_: ReBorn(
        reset_every_n_steps=reset_every, seed=seed, include=include, step_attribute=step_attribute
    ),
    "snp": lambda seed=None, **_: ShrinkPerturb(seed=seed),
    "l2init": lambda **_: L2Init(strength=1e-2),
    # Decoupled weight decay as a shrink after every step: AdamW's default decay 1e-2 at step size 1e-3.
    "wd": lambda **_: ShrinkPerturb(shrink=1.0 - 1e-3 * 1e-2, sigma=0.0),
    "prune-grama": lambda include=None, step_attribute=None, reset_every=1000, **_: NeuronPruning(
        tau=0.01, reset_every_n_steps=reset_every, include=include, step_attribute=step_attribute
    ),
    "prune-redo": lambda include=None, step_attribute=None, reset_every=1000, **_: NeuronPruning(
        tau=0.02, score="activation", reset_every_n_steps=reset_every, include=include, step_attribute=step_attribute
    ),
}


def method_monitors(
    method: str, reset_every: int | None, grama_tau: float = 0.01, redo_tau: float = 0.02, **shared: Any
) -> tuple[ReGraMa, ReDo]:
    """The GraMa and ReDo callbacks every benchmark run carries, so that both ratios compare across methods.

    Both measure; the one that ``method`` resets with (:attr:`MethodInfo.resets`) also resets every
    ``reset_every`` steps of its optimizer (``None``: only on request, see ``NeuronReset.request_reset``). Any
    other method (``"vanilla"``, ``"fresh"``) only measures.

    Args:
        method: A name of :data:`~benchmarks.harness.methods.METHODS`.
        reset_every: Reset period of the resetting callback.
        grama_tau: GraMa threshold (paper: 0.01).
        redo_tau: ReDo threshold (the paper's ReDo baseline: 0.02).
        **shared: Further arguments of both callbacks (``include``, ``seed``, ``log_every_n_steps``, ...).

    Returns:
        ``(ReGraMa, ReDo)``.

    Raises:
        ValueError: On an unknown method.
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {list(METHODS)}, got {method!r}.")
    resets = METHODS[method].resets
    grama = ReGraMa(tau=grama_tau, reset_every_n_steps=reset_every if resets == "grama" else None, **shared)
    dormant = ReDo(tau=redo_tau, reset_every_n_steps=reset_every if resets == "redo" else None, **shared)
    return grama, dormant


def extra_callbacks(method: str, **shared: Any) -> list[pl.Callback]:
    """The callbacks ``method`` carries besides the monitors (its ``extras``), in the table's order.

    Args:
        method: A name of :data:`~benchmarks.harness.methods.METHODS`.
        **shared: What the factories may use (``seed``, ``include``, ``step_attribute``, ...).

    Returns:
        The callbacks (none for ``vanilla``, ``regrama``, ``redo``, ``fresh``).
    """
    return [EXTRAS[name](**shared) for name in METHODS[method].extras]


def plasticity_metrics(
    every_n_steps: int, step_attribute: str | None = None, include: list[str] | None = None, **_: Any
) -> PlasticityMetrics:
    """The plasticity metrics every benchmark run logs, whatever the method (``plasticity/<metric>[/<layer>]``)."""
    return PlasticityMetrics(every_n_steps=every_n_steps, step_attribute=step_attribute, include=include)
