"""``ReDo``: reset tau-dormant neurons, measured on activations (Sokar et al., 2023)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from regrama_lightning.callbacks.base import NeuronReset, ResidualPolicy
from regrama_lightning.metrics import DormantRatio
from regrama_lightning.reset import InitFn
from regrama_lightning.signals import Activation, ActivitySignal


class ReDo(NeuronReset):
    """Log dormant ratios and periodically reset dormant neurons (ReDo, the GraMa paper's baseline).

    A neuron is dormant when its mean ``|activation|`` over the batch, divided by its layer's mean, is
    ``<= tau``. The activation is whatever the traced graph applies after the layer (and its own norm): ReLU,
    GELU, tanh, ... or nothing; it is not assumed to be ReLU.

    Args:
        tau: Threshold on the normalised score (GraMa paper's ReDo setting: 0.02; ReDo authors reset at 0.1).
        reset_every_n_steps: Reset period in steps of each layer's own optimizer; ``None`` = only measure.
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
        >>> trainer = pl.Trainer(callbacks=[ReDo(tau=0.1, reset_every_n_steps=1000)], max_steps=10)
    """

    prefix = "dormant"
    metric_class = DormantRatio

    def make_signal(self) -> ActivitySignal:
        """The activation after the layer, where the model computes it."""
        return Activation()

    def __init__(
        self,
        tau: float = 0.02,
        reset_every_n_steps: int | None = 1000,
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
