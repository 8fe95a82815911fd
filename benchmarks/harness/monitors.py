"""The GraMa and ReDo callbacks every benchmark run carries, one of them resetting for ``regrama``/``redo``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl

from regrama_lightning import ReDo, ReGraMa

from .methods import METHODS

#: Factories of the callbacks named in ``MethodInfo.extras``; each gets the run's ``seed`` and the monitors'
#: shared arguments (``include``, ``step_attribute``, ...) as keywords and takes what it needs.
EXTRAS: dict[str, Callable[..., pl.Callback]] = {}


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
