"""Set-up shared by the benchmark scripts."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch

from regrama_lightning import ReDo, ReGraMa


def prepare(threads: int) -> None:
    """Fix the number of torch CPU threads; silence banners and warnings that say nothing about the result."""
    torch.set_num_threads(threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*log_every_n_steps.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")  # a deprecation inside Lightning itself
    # The run folder holds run.json before the CSV logger starts; benchmarks.runs decides what a folder may hold.
    warnings.filterwarnings("ignore", ".*exists and is not empty.*")


def method_monitors(
    method: str, reset_every: int | None, grama_tau: float = 0.01, redo_tau: float = 0.02, **shared: Any
) -> tuple[ReGraMa, ReDo]:
    """The GraMa and ReDo callbacks every benchmark run carries, so that both ratios compare across methods.

    Both measure; the one named by ``method`` (``"regrama"`` or ``"redo"``) also resets every ``reset_every``
    steps of its optimizer (``None``: only on request, see ``NeuronReset.request_reset``). Any other method
    (``"vanilla"``, ``"fresh"``) only measures.

    Args:
        method: The benchmark's method name.
        reset_every: Reset period of the resetting callback.
        grama_tau: GraMa threshold (paper: 0.01).
        redo_tau: ReDo threshold (the paper's ReDo baseline: 0.02).
        **shared: Further arguments of both callbacks (``include``, ``seed``, ``log_every_n_steps``, ...).

    Returns:
        ``(ReGraMa, ReDo)``.
    """
    grama = ReGraMa(tau=grama_tau, reset_every_n_steps=reset_every if method == "regrama" else None, **shared)
    dormant = ReDo(tau=redo_tau, reset_every_n_steps=reset_every if method == "redo" else None, **shared)
    return grama, dormant
