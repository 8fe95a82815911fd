"""``ReGraMa``: reset neurons whose gradient magnitude (GraMa) has collapsed."""

from __future__ import annotations

from typing import Any, Literal

from regrama_lightning.callbacks.base import NeuronReset
from regrama_lightning.metrics import GraMaRatio
from regrama_lightning.signals import ActivitySignal, OutputGradient, WeightGradient

_SIGNALS: dict[str, type[ActivitySignal]] = {"weight": WeightGradient, "output": OutputGradient}


class ReGraMa(NeuronReset):
    """Log GraMa ratios and periodically reset inactive neurons (Liu et al., "Measure gradients, not activations").

    A neuron is inactive when its gradient magnitude, divided by its layer's mean, is ``<= tau``. Inactive
    neurons get fresh incoming weights (drawn like the layer's initialisation) and zero outgoing weights.

    Args:
        tau: Threshold on the normalised score (paper: 0.01; 0 for exactly-zero gradients).
        reset_every_n_steps: Reset period in steps of each layer's own optimizer (paper: 1000); None = only
            measure.
        score: "weight": mean |W.grad| over a neuron's incoming weights, as in the authors' code (free:
            the gradient is already there). "output": batch mean of per-sample |dL/dh_i| of the layer's
            output, Eq. 2 of the paper (hooks the layer outputs on measured steps).
        **kwargs: Every other argument of NeuronReset (include, exclude, consumers, include_output_layers,
            residual, max_reset_fraction, reset_optimizer_state, zero_outgoing, init_fn, log_every_n_steps,
            log_per_layer, seed, eps, step_attribute, name), checked there; LightningCLI shows and checks them all.

    Raises:
        ValueError: On an invalid argument.

    Example:
        >>> import lightning.pytorch as pl
        >>> trainer = pl.Trainer(callbacks=[ReGraMa(tau=0.01, reset_every_n_steps=1000)], max_steps=10)
    """

    prefix = "grama"
    metric_class = GraMaRatio

    def __init__(
        self,
        tau: float = 0.01,
        reset_every_n_steps: int | None = 1000,
        score: Literal["weight", "output"] = "weight",
        **kwargs: Any,
    ) -> None:
        if score not in ("weight", "output"):
            raise ValueError(
                f"`score` must be 'weight' (|W.grad|, the authors' code) or 'output' (Eq. 2), got {score!r}."
            )
        self.score = score
        super().__init__(tau=tau, reset_every_n_steps=reset_every_n_steps, **kwargs)

    def make_signal(self) -> ActivitySignal:
        """``|W.grad|`` (``score="weight"``) or the output gradient (``score="output"``)."""
        return _SIGNALS[self.score]()
