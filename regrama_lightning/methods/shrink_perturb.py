"""``ShrinkPerturb``: shrink the parameters and add noise after optimizer steps (Ash & Adams 2020)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor

from regrama_lightning.actions import derive_seed
from regrama_lightning.methods.stepped import SteppedParameters

Toward = Literal["zero", "init"]
# Defaults per target, from the two reference setups (see the class docstring).
_DEFAULTS: dict[str, tuple[float, float]] = {"zero": (1.0 - 0.1 * 5e-4, 1e-5), "init": (0.999999, 0.0)}


@torch.no_grad()
def shrink_perturb_(
    params: Sequence[Tensor],
    shrink: float,
    sigma: float,
    initial: Sequence[Tensor] | None = None,
    generator_seed: int = 0,
) -> None:
    """``theta <- shrink * theta (+ (1 - shrink) * theta_0) + sigma * eps`` in place, ``eps ~ N(0, 1)``.

    The noise of all parameters of one device and dtype is one draw from a generator seeded with
    ``generator_seed``: the same seed gives the same noise on every process.

    Args:
        params: Parameters to change in place.
        shrink: The factor p on the parameters.
        sigma: Standard deviation of the added noise (0: none).
        initial: theta_0 per parameter, to shrink toward; None shrinks toward zero.
        generator_seed: Seed of the noise.

    Example:
        >>> w = torch.tensor([2.0, 4.0])
        >>> shrink_perturb_([w], shrink=0.5, sigma=0.0, initial=[torch.tensor([0.0, 2.0])])
        >>> w
        tensor([1., 3.])
    """
    params = list(params)
    if not params:
        return
    torch._foreach_mul_(params, shrink)
    if initial is not None:
        torch._foreach_add_(params, list(initial), alpha=1.0 - shrink)
    if sigma == 0:
        return
    groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    for p in params:
        groups.setdefault((p.device, p.dtype), []).append(p)
    for (device, dtype), group in groups.items():
        generator = torch.Generator(device=device).manual_seed(generator_seed)
        noise = torch.randn(sum(p.numel() for p in group), generator=generator, device=device, dtype=dtype)
        views = [n.view_as(p) for n, p in zip(noise.split([p.numel() for p in group]), group, strict=True)]
        torch._foreach_add_(group, views, alpha=sigma)


class ShrinkPerturb(pl.Callback):
    """After every every_n_steps-th step of each optimizer, shrink its parameters and add Gaussian noise.

    ``toward="zero"``: ``theta <- shrink * theta + sigma * eps`` (Ash & Adams 2020). ``toward="init"``:
    ``theta <- shrink * theta + (1 - shrink) * theta_0 + sigma * eps``, ``theta_0`` the parameters at fit start
    (kept in the checkpoint). ``eps`` is standard normal, drawn from a seed that depends on the run's seed, the
    optimizer and its step: identical on every DDP rank, the same in a resumed run, and independent of the
    training's own random stream.

    Defaults (``None``) follow the reference setting of each form: ``toward="zero"`` takes Dohare et al.'s
    (Nature 2024) continual CIFAR setting, weight decay 5e-4 with SGD at step size 0.1 and noise of standard
    deviation 1e-5 per step, i.e. ``shrink = 1 - 0.1 * 5e-4 = 0.99995``, ``sigma = 1e-5``; ``toward="init"``
    takes Plasticine's ``shrink = 0.999999``, ``sigma = 0``. Both act every step (``every_n_steps=1``): with a
    larger period, scale ``1 - shrink`` and ``sigma**2`` by it to keep the same strength.

    Args:
        shrink: The factor on the parameters, in (0, 1]; None: the default of toward.
        sigma: Standard deviation of the noise, >= 0; None: the default of toward.
        toward: "zero" (plain shrink and perturb) or "init" (interpolate toward theta_0).
        every_n_steps: Act after every N-th step of each optimizer (each counts its own steps).
        seed: Seed of the noise; None takes torch.initial_seed() of rank 0.

    Raises:
        ValueError: On an argument out of range, naming it.

    Example:
        >>> trainer = pl.Trainer(callbacks=[ShrinkPerturb(toward="init")], max_steps=10)
    """

    def __init__(
        self,
        shrink: float | None = None,
        sigma: float | None = None,
        toward: Toward = "zero",
        every_n_steps: int = 1,
        seed: int | None = None,
    ) -> None:
        if toward not in _DEFAULTS:
            raise ValueError(f"`toward` must be 'zero' or 'init' (theta_0), got {toward!r}.")
        default_shrink, default_sigma = _DEFAULTS[toward]
        shrink = default_shrink if shrink is None else shrink
        sigma = default_sigma if sigma is None else sigma
        if not (isinstance(shrink, (int, float)) and 0 < shrink <= 1):
            raise ValueError(f"`shrink` must be in (0, 1] (1 keeps the parameters), got {shrink!r}.")
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"`sigma` must be a finite number >= 0 (0: no noise), got {sigma!r}.")
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"`every_n_steps` must be a positive int, got {every_n_steps!r}.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"`seed` must be an int or None, got {seed!r}.")
        self.shrink, self.sigma, self.toward = float(shrink), float(sigma), toward
        self.every_n_steps, self.seed = every_n_steps, seed
        self._stepped = SteppedParameters(keep_initial=toward == "init")
        self._seed = 0

    @property
    def state_key(self) -> str:
        """Checkpoint key built from the arguments."""
        return self._generate_state_key(
            shrink=self.shrink, sigma=self.sigma, toward=self.toward, every_n_steps=self.every_n_steps, seed=self.seed
        )

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Fix the seed on every rank (rank 0's)."""
        seed = self.seed if self.seed is not None else torch.initial_seed() % (2**31)
        self._seed = int(trainer.strategy.broadcast(seed))

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Follow each optimizer's steps (and copy ``theta_0`` for ``toward="init"``)."""
        self._stepped.start(trainer.optimizers, self._after_step)

    def _after_step(self, index: int) -> None:
        step = self._stepped.steps[index]
        if step % self.every_n_steps:
            return
        initial = self._stepped.initial[index] if self.toward == "init" else None
        seed = derive_seed(self._seed, index, "shrink_perturb", step)
        shrink_perturb_(self._stepped.params[index], self.shrink, self.sigma, initial, seed)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Remove the step hooks."""
        self._stepped.remove()

    def state_dict(self) -> dict[str, Any]:
        """Step counts, seed and ``theta_0``."""
        return {**self._stepped.state_dict(), "seed": self._seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore them (``theta_0`` and steps at the next fit start)."""
        self._stepped.load_state_dict(state_dict)
        if state_dict.get("seed") is not None:
            self._seed = int(state_dict["seed"])
