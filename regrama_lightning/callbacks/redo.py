"""``ReDo``: reset tau-dormant neurons, measured on activations (Sokar et al., 2023)."""

from __future__ import annotations

from typing import Any

from regrama_lightning.callbacks.base import NeuronReset
from regrama_lightning.metrics import DormantRatio
from regrama_lightning.signals import Activation, ActivitySignal


class ReDo(NeuronReset):
    """Log dormant ratios and periodically reset dormant neurons (ReDo, the GraMa paper's baseline).

    A neuron is dormant when its mean ``|activation|`` over the batch, divided by its layer's mean, is
    ``<= tau``. The activation is whatever the traced graph applies after the layer (and its own norm): ReLU,
    GELU, tanh, ... or nothing; it is not assumed to be ReLU.

    Args:
        tau: Threshold on the normalised score (GraMa paper's ReDo setting: 0.02; ReDo authors reset at 0.1).
        reset_every_n_steps: Reset period in steps of each layer's own optimizer; None = only measure.
        **kwargs: Every other argument of NeuronReset (include, exclude, consumers, include_output_layers,
            residual, max_reset_fraction, reset_optimizer_state, zero_outgoing, init_fn, log_every_n_steps,
            log_per_layer, seed, eps, step_attribute, name), checked there; LightningCLI shows and checks them all.

    Raises:
        ValueError: On an invalid argument.

    Example:
        >>> import lightning.pytorch as pl
        >>> trainer = pl.Trainer(callbacks=[ReDo(tau=0.1, reset_every_n_steps=1000)], max_steps=10)
    """

    prefix = "dormant"
    metric_class = DormantRatio

    def __init__(
        self,
        tau: float = 0.02,
        reset_every_n_steps: int | None = 1000,
        **kwargs: Any,
    ) -> None:
        super().__init__(tau=tau, reset_every_n_steps=reset_every_n_steps, **kwargs)

    def make_signal(self) -> ActivitySignal:
        """The activation after the layer, where the model computes it."""
        return Activation()
