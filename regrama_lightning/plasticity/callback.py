"""``PlasticityMetrics``: the plasticity metrics of every traced layer, logged on a schedule."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.optim import Optimizer

from regrama_lightning.callbacks.discovery import LayerDiscovery
from regrama_lightning.methods.stepped import SteppedParameters
from regrama_lightning.plasticity.parameters import distance_from_init, gradient_norm, weight_magnitude
from regrama_lightning.plasticity.rank import approximate_rank, effective_rank, feature_matrix, srank
from regrama_lightning.plasticity.units import active_unit_fraction, dead_unit_fraction, feature_norm
from regrama_lightning.tracing.layers import NeuronLayer
from regrama_lightning.tracing.probe import ActivationProbe

MetricName = Literal[
    "effective_rank",
    "srank",
    "approximate_rank",
    "dead_unit_fraction",
    "active_unit_fraction",
    "feature_norm",
    "weight_magnitude",
    "distance_from_init",
    "gradient_norm",
]
FEATURE_METRICS: dict[str, Callable[[Tensor, float], Tensor]] = {
    "effective_rank": lambda m, delta: effective_rank(m),
    "srank": srank,
    "approximate_rank": approximate_rank,
    "dead_unit_fraction": lambda m, delta: dead_unit_fraction(m),
    "active_unit_fraction": lambda m, delta: active_unit_fraction(m),
    "feature_norm": lambda m, delta: feature_norm(m),
}
PARAMETER_METRICS = ("weight_magnitude", "distance_from_init", "gradient_norm")
ALL_METRICS: tuple[str, ...] = (*FEATURE_METRICS, *PARAMETER_METRICS)


class _ValueProbe(ActivationProbe):
    """The core's activation probe, keeping each layer's first measured value of the batch whole."""

    def __init__(self, layers: dict[str, NeuronLayer]) -> None:
        super().__init__(layers, lambda *args: None)
        self.values: dict[str, Tensor] = {}

    def _report(self, call: Any, *values: Tensor) -> None:
        super()._report(call, *values)
        if len(values) == 1:  # a layer measured in pieces (a split output) has no one feature matrix: left out
            self.values.setdefault(call.layer.name, values[0].detach())


class PlasticityMetrics(pl.Callback):
    """Log plasticity metrics of the traced layers every every_n_steps training batches.

    Feature metrics are computed on each hidden layer's post-activation values (ReDo's value: what the traced
    graph applies after the layer, and its norm) of the measured batch, with the units along the neuron
    dimension and every other dimension (batch, positions, tokens) as samples; logged as
    ``plasticity/<metric>/<layer>`` and ``plasticity/<metric>`` (the mean over layers; for the unit fractions,
    over all units). Parameter metrics are logged per layer (its weight and bias) and model-wide:
    ``weight_magnitude``, ``distance_from_init`` (from the parameters at fit start, kept in the checkpoint) and
    ``gradient_norm`` (of the gradients each optimizer steps with on the measured batch).

    Args:
        every_n_steps: Measure every N training batches.
        metrics: Names among effective_rank, srank, approximate_rank, dead_unit_fraction, active_unit_fraction,
            feature_norm, weight_magnitude, distance_from_init, gradient_norm; None for all.
        delta: delta of srank and approximate_rank.
        include: fnmatch patterns of layers to measure (default: all hidden Linear/Conv layers).
        exclude: Patterns of layers to leave out.
        step_attribute: LightningModule int attribute to log against (None: the Trainer's step).

    Raises:
        ValueError: On an unknown metric name or an invalid period.

    Example:
        >>> trainer = pl.Trainer(callbacks=[PlasticityMetrics(every_n_steps=100)], max_steps=10)
    """

    def __init__(
        self,
        every_n_steps: int = 1000,
        metrics: Sequence[MetricName] | None = None,
        delta: float = 0.01,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        step_attribute: str | None = None,
    ) -> None:
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"`every_n_steps` must be a positive int, got {every_n_steps!r}.")
        chosen = list(ALL_METRICS if metrics is None else metrics)
        unknown = sorted(set(chosen) - set(ALL_METRICS))
        if unknown or not chosen:
            raise ValueError(f"`metrics` must be a non-empty list among {list(ALL_METRICS)}; unknown: {unknown}.")
        if not 0 <= delta < 1:
            raise ValueError(f"`delta` must be in [0, 1), got {delta}.")
        self.every_n_steps, self.metrics, self.delta = every_n_steps, chosen, float(delta)
        self.include, self.exclude = list(include) if include else None, list(exclude) if exclude else None
        self.step_attribute = step_attribute
        self.last_metrics: dict[str, float] = {}
        self._discovery = LayerDiscovery(type(self).__name__, {}, False, "measure")
        self._stepped = SteppedParameters(keep_initial="distance_from_init" in chosen)
        self._probe: _ValueProbe | None = None
        self._grad_squares: list[Tensor] = []
        self._batches = 0
        self._warned_nonfinite = False

    @property
    def state_key(self) -> str:
        """Checkpoint key built from the arguments."""
        return self._generate_state_key(every_n_steps=self.every_n_steps, metrics=self.metrics, delta=self.delta)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Choose the layers; check ``step_attribute``."""
        if stage != "fit":
            return
        self._discovery.select(pl_module, self.include, self.exclude)
        if self.step_attribute is not None and not isinstance(getattr(pl_module, self.step_attribute, None), int):
            raise ValueError(
                f"`step_attribute={self.step_attribute!r}`: {type(pl_module).__name__} has no int attribute of that "
                "name to log against; add it or use step_attribute=None for the Trainer's step."
            )

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Copy the parameters at fit start (or take the checkpoint's), trace the first batches."""
        self._discovery.assign(trainer.optimizers)
        self._discovery.start_fit(pl_module)
        self._stepped.start(trainer.optimizers)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        """Trace while layers are unknown; on measured batches, keep the layers' activations."""
        self._batches += 1
        if self._discovery.wants_trace:
            self._discovery.start_trace(lambda *args: None)
        elif self._batches % self.every_n_steps == 0 and self._discovery.scored:
            self._probe = _ValueProbe({n: self._discovery.layers[n] for n in self._discovery.scored})
            self._probe.__enter__()
            self._grad_squares = []

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        """On measured batches, the squared norm of the gradients this step uses."""
        if self._probe is not None and "gradient_norm" in self.metrics:
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if params:
                self._grad_squares.append(gradient_norm(params).square())

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        """Finish a trace; compute and log the measured batch's metrics (one host sync)."""
        if self._discovery.tracer is not None:
            self._discovery.finish_trace()
            return
        if self._probe is None:
            return
        self._probe.__exit__(None, None, None)
        values, self._probe = self._probe.values, None
        logs = self._feature_logs(values) | self._parameter_logs(pl_module)
        numbers = torch.stack([v.float().to(pl_module.device) for v in logs.values()]).tolist()
        logged = dict(zip(logs, numbers, strict=True))
        # The x-axis of self.log (and of the other callbacks): batches that stepped, or the given attribute.
        step = (
            getattr(pl_module, self.step_attribute)
            if self.step_attribute
            else trainer.fit_loop.epoch_loop._batches_that_stepped
        )
        for logger in trainer.loggers:
            logger.log_metrics(logged, step=step)
        self.last_metrics.update(logged)

    def _feature_logs(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        logs: dict[str, Tensor] = {}
        layers = self._discovery.layers
        matrices = {}
        for name, value in values.items():
            site = layers[name].activation
            matrices[name] = feature_matrix(value, site.dim if site.dim is not None else -1)
        if not matrices:
            return logs
        # A non-finite feature (a diverging step) would stop the SVD: such a layer logs NaN (one sync, measured
        # batches only).
        finite = dict(zip(matrices, torch.stack([m.isfinite().all() for m in matrices.values()]).tolist(), strict=True))
        if not all(finite.values()) and not self._warned_nonfinite:
            self._warned_nonfinite = True
            rank_zero_warn(
                f"PlasticityMetrics: non-finite activations in layers {[n for n, ok in finite.items() if not ok]}; "
                "their feature metrics are logged as NaN (this warning is shown once)."
            )
        nan = torch.tensor(float("nan"))
        for metric in [m for m in self.metrics if m in FEATURE_METRICS]:
            per_layer = {
                n: FEATURE_METRICS[metric](m, self.delta).float().cpu() if finite[n] else nan
                for n, m in matrices.items()
            }
            logs.update({f"plasticity/{metric}/{n}": v for n, v in per_layer.items()})
            if per_layer and metric in ("dead_unit_fraction", "active_unit_fraction"):
                weights = torch.tensor([float(m.shape[1]) for m in matrices.values()])  # over all units
                total = sum(v * w for v, w in zip(per_layer.values(), weights.tolist(), strict=True))
                logs[f"plasticity/{metric}"] = total / weights.sum()
            elif per_layer:
                logs[f"plasticity/{metric}"] = torch.stack(list(per_layer.values())).mean()
        return logs

    def _parameter_logs(self, pl_module: pl.LightningModule) -> dict[str, Tensor]:
        logs: dict[str, Tensor] = {}
        layers = {n: self._discovery.layers[n].module for n in self._discovery.scored}
        own = {n: [p for p in (m.weight, getattr(m, "bias", None)) if p is not None] for n, m in layers.items()}
        if "weight_magnitude" in self.metrics:
            logs |= {f"plasticity/weight_magnitude/{n}": weight_magnitude(ps) for n, ps in own.items()}
            logs["plasticity/weight_magnitude"] = weight_magnitude(pl_module.parameters())
        if "distance_from_init" in self.metrics:
            initial = self._stepped.initial_by_parameter()
            for n, ps in own.items():
                if all(id(p) in initial for p in ps):
                    logs[f"plasticity/distance_from_init/{n}"] = distance_from_init(ps, [initial[id(p)] for p in ps])
            stepped = [p for ps in self._stepped.params for p in ps]
            logs["plasticity/distance_from_init"] = distance_from_init(stepped, [initial[id(p)] for p in stepped])
        if "gradient_norm" in self.metrics and self._grad_squares:
            logs["plasticity/gradient_norm"] = torch.stack(self._grad_squares).sum().sqrt()
        return logs

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Leave the probe or tracer if training stopped inside a batch."""
        if self._probe is not None:
            self._probe.__exit__(None, None, None)
            self._probe = None
        self._discovery.close()

    def state_dict(self) -> dict[str, Any]:
        """Batches seen and the parameters at fit start."""
        return {**self._stepped.state_dict(), "batches": self._batches}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore them."""
        self._stepped.load_state_dict(state_dict)
        self._batches = int(state_dict.get("batches", 0))
