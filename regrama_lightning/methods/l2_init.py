"""``L2Init``: regularise toward the initial parameters (Kumar et al. 2023, "regenerative regularization")."""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch
from torch.optim import Optimizer

from regrama_lightning.callbacks.discovery import unwrap
from regrama_lightning.methods.stepped import SteppedParameters


class L2Init(pl.Callback):
    """Add strength * (theta - theta_0) to the gradients, the gradient of strength/2 * ||theta - theta_0||^2.

    ``theta_0`` is the parameters at fit start (kept in the checkpoint, so a resumed run pulls toward the same
    point). The term is added right before each optimizer step, once per step, to that optimizer's parameters
    that have a gradient: what the optimizer does not step (frozen parameters, parameters without a gradient
    this step, other optimizers' parameters) is left alone. Adding it before the step rather than after each
    backward gives the same update and does not count it twice when several backward passes (gradient
    accumulation, SAC's actor loss through the critic) add to one step's gradients; it works alike in
    automatic and manual optimisation.

    Args:
        strength: The regularisation coefficient lambda (the GraMa paper's Table 9: 1e-2).

    Raises:
        ValueError: If ``strength`` is not a positive finite number.

    Example:
        >>> trainer = pl.Trainer(callbacks=[L2Init(strength=1e-2)], max_steps=10)
    """

    def __init__(self, strength: float = 1e-2) -> None:
        if not (isinstance(strength, (int, float)) and math.isfinite(strength) and strength > 0):
            raise ValueError(f"`strength` must be a positive finite number (the paper uses 1e-2), got {strength!r}.")
        self.strength = float(strength)
        self._stepped = SteppedParameters(keep_initial=True)
        self._index: dict[int, int] = {}

    @property
    def state_key(self) -> str:
        """Checkpoint key built from the arguments."""
        return self._generate_state_key(strength=self.strength)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Copy ``theta_0`` (or take the checkpoint's)."""
        self._stepped.start(trainer.optimizers)
        self._index = {id(unwrap(o)): i for i, o in enumerate(trainer.optimizers)}

    @torch.no_grad()
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        """Add the pull toward ``theta_0`` to the gradients this step will use (one batched call)."""
        index = self._index.get(id(unwrap(optimizer)))
        if index is None:
            return
        stepped = self._stepped
        pairs = [
            (p, t) for p, t in zip(stepped.params[index], stepped.initial[index], strict=True) if p.grad is not None
        ]
        if pairs:
            params, initial = zip(*pairs, strict=True)
            torch._foreach_add_([p.grad for p in params], torch._foreach_sub(params, initial), alpha=self.strength)

    def state_dict(self) -> dict[str, Any]:
        """``theta_0``."""
        return self._stepped.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore ``theta_0`` at the next fit start."""
        self._stepped.load_state_dict(state_dict)
