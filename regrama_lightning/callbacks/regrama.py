"""``ReGraMa``: reset neurons whose gradient magnitude (GraMa) has collapsed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from regrama_lightning.callbacks.base import NeuronReset, ResidualPolicy
from regrama_lightning.metrics import GraMaRatio
from regrama_lightning.reset import InitFn
from regrama_lightning.signals import ActivitySignal, OutputGradient, WeightGradient

_SIGNALS: dict[str, type[ActivitySignal]] = {"weight": WeightGradient, "output": OutputGradient}


class ReGraMa(NeuronReset):
    """Log GraMa ratios and periodically reset inactive neurons (Liu et al., "Measure gradients, not activations").

    A neuron is inactive when its gradient magnitude, divided by its layer's mean, is ``<= tau``. Inactive
    neurons get fresh incoming weights (drawn like the layer's initialisation) and zero outgoing weights.

    Args:
        tau: Threshold on the normalised score (paper: 0.01; 0 for exactly-zero gradients).
        reset_every_n_steps: Reset period in steps of each layer's own optimizer (paper: 1000); ``None`` = only
            measure.
        score: ``"weight"``: mean ``|W.grad|`` over a neuron's incoming weights, as in the authors' code (free:
            the gradient is already there). ``"output"``: batch mean of per-sample ``|dL/dh_i|`` of the layer's
            output, Eq. 2 of the paper (hooks the layer outputs on measured steps).
        include: See :class:`~regrama_lightning.callbacks.base.NeuronReset` for this and the other arguments.
        exclude: Layer name patterns to leave alone.
        consumers: Readers of a layer given by hand.
        include_output_layers: Also score and reset network heads.
        residual: Policy for neurons that write into a residual stream.
        max_reset_fraction: Cap on the fraction of a layer reset at once.
        reset_optimizer_state: Zero optimizer state of touched entries.
        zero_outgoing: Zero the reset neurons' outgoing weights (``False``: keep them, as the authors' code).
        init_fn: Custom re-initialisation of a layer copy.
        log_every_n_steps: Measurement period for logging.
        log_per_layer: Log one ratio per layer.
        seed: Seed of the re-draws.
        eps: Added to the layer mean.
        step_attribute: LightningModule attribute used as the x-axis of the logs (``None``: the Trainer's step).
        name: Checkpoint key (``None``: built from the arguments).

    Raises:
        ValueError: On an invalid argument.

    Example:
        >>> import lightning.pytorch as pl
        >>> trainer = pl.Trainer(callbacks=[ReGraMa(tau=0.01, reset_every_n_steps=1000)], max_steps=10)
    """

    prefix = "grama"
    metric_class = GraMaRatio

    def make_signal(self) -> ActivitySignal:
        """``|W.grad|`` (``score="weight"``) or the output gradient (``score="output"``)."""
        return _SIGNALS[self.score]()

    def __init__(
        self,
        tau: float = 0.01,
        reset_every_n_steps: int | None = 1000,
        score: Literal["weight", "output"] = "weight",
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        consumers: Mapping[str, Sequence[str]] | None = None,
        include_output_layers: bool = False,
        residual: ResidualPolicy = "measure",
        max_reset_fraction: float | None = None,
        reset_optimizer_state: bool = True,
        zero_outgoing: bool = True,
        init_fn: InitFn | None = None,
        log_every_n_steps: int | None = None,
        log_per_layer: bool = True,
        seed: int | None = None,
        eps: float = 1e-9,
        step_attribute: str | None = None,
        name: str | None = None,
    ) -> None:
        if score not in ("weight", "output"):
            raise ValueError(
                f"`score` must be 'weight' (|W.grad|, the authors' code) or 'output' (Eq. 2), got {score!r}."
            )
        self.score = score
        super().__init__(
            tau=tau,
            reset_every_n_steps=reset_every_n_steps,
            include=include,
            exclude=exclude,
            consumers=consumers,
            include_output_layers=include_output_layers,
            residual=residual,
            max_reset_fraction=max_reset_fraction,
            reset_optimizer_state=reset_optimizer_state,
            zero_outgoing=zero_outgoing,
            init_fn=init_fn,
            log_every_n_steps=log_every_n_steps,
            log_per_layer=log_per_layer,
            seed=seed,
            eps=eps,
            step_attribute=step_attribute,
            name=name,
        )
