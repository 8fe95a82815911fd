"""The shared machinery of the ``ReGraMa`` and ``ReDo`` callbacks: schedule, gathering, logging, resets."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.utils.hooks import RemovableHandle

from regrama_lightning.buffer import MeasurementBuffer
from regrama_lightning.gather import MagnitudeGatherer, Signal
from regrama_lightning.metrics import NeuronActivityRatio
from regrama_lightning.reset import InitFn, reset_neurons, select_neurons
from regrama_lightning.tracing.layers import NeuronLayer
from regrama_lightning.tracing.probe import ActivationProbe
from regrama_lightning.tracing.selection import explicit_consumers, neuron_layers, output_hooks, select_layers
from regrama_lightning.tracing.tracer import TopologyTracer

ResidualPolicy = Literal["measure", "reset", "exclude"]
_SHARDED = ("FSDP", "DeepSpeed", "ModelParallel", "XLAFSDP")
_MAX_RETRACES = 8  # batches traced after a new layer first ran, before giving up on tracing it


class NeuronReset(pl.Callback):
    """Measures per-neuron activity of every Linear/Conv layer and resets inactive neurons on a schedule.

    Subclasses choose the signal (``ReGraMa``: gradients; ``ReDo``: activations). The first training batch is
    traced to learn the model's structure (see :mod:`regrama_lightning.topology`), and so is the batch after a
    layer first runs later on (LayerDrop, routing); otherwise the callback costs nothing on steps it does not
    measure. Steps are counted once per ``optimizer.step()`` (an LBFGS step that evaluates its closure many
    times is one step, measured on its last evaluation).

    Args:
        tau: Inactive when the layer-normalised score is ``<= tau``; ``0`` means exactly zero.
        reset_every_n_steps: Reset every N steps of the optimizer that owns a layer (each optimizer counts its
            own steps); ``None`` only measures and logs.
        include: ``fnmatch`` patterns of layer names to consider (default: all Linear/Conv layers).
        exclude: Patterns of layer names to leave alone.
        consumers: Readers of a layer given by hand, ``{layer: [reader, ...]}``, for models the tracer cannot
            map; each reader must be a Linear/Conv layer that takes the layer's neurons in order (in contiguous
            blocks when flattened).
        include_output_layers: Also score and reset layers that no weight reads (network heads). A layer read
            by weights of another optimizer, or by frozen weights, is not an output layer: its reset zeroes those
            weights' columns too.
        residual: Neurons whose output is summed into a shared stream (residual connections): ``"measure"``
            scores them but never resets them (their outgoing columns are shared with other neurons);
            ``"reset"`` re-draws their incoming weights and keeps the shared outgoing ones; ``"exclude"`` does
            not score them.
        max_reset_fraction: Reset at most this fraction of a layer's neurons (the lowest-scoring ones).
        reset_optimizer_state: Zero the optimizer state of the touched entries.
        zero_outgoing: Zero the reset neurons' outgoing weights (the paper, ReDo). ``False`` keeps them, as the
            authors' released SAC code does: a re-drawn neuron then feeds its readers at once, and its gradient
            score is not zero right after the reset.
        init_fn: Re-initialises a copy of a layer in place; defaults to the layer's ``reset_parameters``.
        log_every_n_steps: Measure and log every N optimizer steps; ``None`` follows the Trainer's
            ``log_every_n_steps``. Reset steps are always measured.
        log_per_layer: Also log one ratio per layer.
        seed: Seed of the re-draws; ``None`` takes ``torch.initial_seed()`` of rank 0.
        eps: Added to each layer's mean when normalising.
        step_attribute: Name of an ``int`` attribute of the LightningModule to use as the x-axis of the logs
            (e.g. ``"env_steps"`` for an RL agent); ``None`` uses the Trainer's step, as ``self.log`` does.

    Raises:
        ValueError: On any invalid argument, naming it and the fix.
    """

    signal: Signal = "weight"
    prefix = "grama"
    metric_class: type[NeuronActivityRatio] = NeuronActivityRatio

    def __init__(
        self,
        tau: float,
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
    ) -> None:
        _check_number("tau", tau, low=0.0, fix="use 0 to flag only neurons with exactly zero score")
        _check_period("reset_every_n_steps", reset_every_n_steps, "use None to measure without resetting")
        _check_period("log_every_n_steps", log_every_n_steps, "use None to follow the Trainer's setting")
        for arg, patterns in (("include", include), ("exclude", exclude)):
            if isinstance(patterns, str):
                raise ValueError(f"`{arg}` must be a list of patterns, not a string: use [{patterns!r}].")
            if patterns is not None and not all(isinstance(p, str) for p in patterns):
                raise ValueError(f"`{arg}` must be a list of layer-name patterns (str), got {patterns!r}.")
        if consumers is not None:
            if not isinstance(consumers, Mapping):
                raise ValueError(f"`consumers` must map a layer name to a list of reader names, got {consumers!r}.")
            for layer, readers in consumers.items():
                if (
                    not isinstance(layer, str)
                    or isinstance(readers, str)
                    or not all(isinstance(r, str) for r in readers)
                ):
                    raise ValueError(
                        f"`consumers` must map a layer name to a list of reader names, got {layer!r}: {readers!r}; "
                        f"write {{{layer!r}: [{readers!r}]}} for a single reader."
                        if isinstance(readers, str)
                        else f"`consumers` must map a layer name to a list of reader names, got {layer!r}: {readers!r}."
                    )
        if residual not in ("measure", "reset", "exclude"):
            raise ValueError(f"`residual` must be 'measure', 'reset' or 'exclude', got {residual!r}.")
        if max_reset_fraction is not None:
            _check_number("max_reset_fraction", max_reset_fraction, low=0.0, high=1.0, fix="use None for no cap")
            if max_reset_fraction == 0:
                raise ValueError("`max_reset_fraction=0` would never reset: use reset_every_n_steps=None instead.")
        _check_number("eps", eps, low=0.0, fix="use a small positive number such as 1e-9")
        if eps == 0:
            raise ValueError("`eps` must be > 0 (it keeps an all-zero layer from dividing by zero), got 0; use 1e-9.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"`seed` must be an int or None (None: derived from torch's seed), got {seed!r}.")
        if step_attribute is not None and (not isinstance(step_attribute, str) or not step_attribute.isidentifier()):
            raise ValueError(f"`step_attribute` must be an attribute name such as 'env_steps', got {step_attribute!r}.")
        flags = (
            ("include_output_layers", include_output_layers),
            ("reset_optimizer_state", reset_optimizer_state),
            ("zero_outgoing", zero_outgoing),
            ("log_per_layer", log_per_layer),
        )
        for arg, flag in flags:
            if not isinstance(flag, bool):
                raise ValueError(f"`{arg}` must be True or False, got {flag!r}.")
        if init_fn is not None and not callable(init_fn):
            raise ValueError("`init_fn` must be a callable that re-initialises a module in place, or None.")
        self.tau = float(tau)
        self.reset_every_n_steps = reset_every_n_steps
        self.include = list(include) if include else None
        self.exclude = list(exclude) if exclude else None
        self.consumers = {k: list(v) for k, v in (consumers or {}).items()}
        self.include_output_layers = include_output_layers
        self.residual = residual
        self.max_reset_fraction = max_reset_fraction
        self.reset_optimizer_state = reset_optimizer_state
        self.zero_outgoing = zero_outgoing
        self.init_fn = init_fn
        self.log_every_n_steps = log_every_n_steps
        self.log_per_layer = log_per_layer
        self.seed = seed
        self.eps = eps
        self.step_attribute = step_attribute

        self.layers: dict[str, NeuronLayer] = {}  # traced structure of each layer, once it has been traced
        self._traced: dict[str, NeuronLayer] = {}  # every neuron layer as all traces so far saw it
        self._watchers: list[RemovableHandle] = []
        self._step_hooks: list[RemovableHandle] = []
        self._written: set[int] = set()  # optimizers with a measurement written for the step under way
        self._probe: ActivationProbe | None = None
        self._paused_for: int | None = None  # optimizer whose update the probe is paused for
        self._closures: dict[int, int] = {}  # per optimizer: closure evaluations in the step under way
        self._reevaluates: set[int] = set()  # optimizers that evaluate their closure several times per step
        self._warned_unrun = False
        self._trainer: pl.Trainer | None = None
        self.scored: list[str] = []  # layers scored (and logged)
        self.last_metrics: dict[str, float] = {}
        self._candidates: dict[str, nn.Module] = {}
        self._owner: dict[str, int] = {}  # layer name -> optimizer index
        self._pending: set[str] = set()  # candidates not traced yet
        self._ran: set[str] = set()  # layers not traced yet that have run: batches are traced until they are seen
        self._ran_now: set[str] = set()  # layers that ran in the batch being traced
        self._traces = 0  # traces since a layer not traced yet first ran
        self._opt_index: dict[int, int] = {}
        self._steps: list[int] = []
        self._measuring: set[int] = set()
        self._measured: set[int] = set()
        self._reset_due: set[int] = set()
        self._requested: set[int] = set()  # optimizers whose next step resets, whatever the period
        self._names: list[list[str]] = []  # per optimizer: layers measured (scored, or not traced yet)
        self._hooked: list[list[str]] = []  # per optimizer: layers whose forward is hooked when measuring
        self._scored_names: list[list[str]] = []  # per optimizer: scored layers, in its metric's order
        self._scored_index: list[Tensor] = []  # their positions in the metric
        self._buffers: list[MeasurementBuffer] = []  # per optimizer: measurements not read yet
        self._states: dict[int, Tensor] = {}  # per optimizer: its latest read measurement
        self._latest_counts: dict[int, tuple[float, float]] = {}  # per optimizer: latest (inactive, neurons)
        self._log_every = 1
        self._tracer: TopologyTracer | None = None
        self._gatherer: MagnitudeGatherer | None = None
        self._metrics: list[NeuronActivityRatio] = []
        self._warned_nonfinite = False
        self._stepped = False
        self._resets = 0
        self._state_key: str | None = None

    # -- set-up -----------------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Validate the strategy, the Trainer's logging period and the layer selection; fix the seed on every rank."""
        if stage != "fit":
            return
        strategy = type(trainer.strategy).__name__
        if any(s in strategy for s in _SHARDED):
            raise ValueError(
                f"{type(self).__name__} does not support {strategy}: parameters, gradients and optimizer state "
                "are sharded there, so neurons cannot be scored or reset as a whole. Use strategy='ddp' or a "
                "single device."
            )
        if self.log_every_n_steps is None and trainer.log_every_n_steps < 1:
            raise ValueError(
                f"Trainer(log_every_n_steps={trainer.log_every_n_steps}) gives {type(self).__name__} no measuring "
                f"period: pass {type(self).__name__}(log_every_n_steps=N), or a positive Trainer(log_every_n_steps)."
            )
        layers = neuron_layers(pl_module)
        if not layers:
            raise ValueError(
                f"{type(pl_module).__name__} has no Linear or Conv1d/2d/3d layer, so there are no neurons to "
                f"score: {type(self).__name__} needs at least one."
            )
        for name in self.consumers:
            if name not in layers:
                raise ValueError(f"`consumers` key {name!r} is not a Linear/Conv layer; choose among {sorted(layers)}.")
        selected = select_layers(layers, self.include, self.exclude)
        parametrized = [n for n, m in selected.items() if parametrize.is_parametrized(m)]
        if parametrized:
            raise ValueError(
                f"Layers {parametrized} are parametrized (weight_norm, spectral_norm, ...): their weight is computed, "
                "so its rows cannot be re-drawn in place. Leave them out with `exclude=[...]`."
            )
        self._candidates = {n: m for n, m in selected.items() if m.weight.requires_grad}
        if not self._candidates:
            raise ValueError(
                "No trainable Linear/Conv layer is left after `include`/`exclude` "
                f"(include={self.include}, exclude={self.exclude}); loosen the patterns."
            )
        if self.step_attribute is not None and not isinstance(getattr(pl_module, self.step_attribute, None), int):
            raise ValueError(
                f"`step_attribute={self.step_attribute!r}`: {type(pl_module).__name__} has no int attribute of that "
                "name to log against; add it or use step_attribute=None for the Trainer's step."
            )
        seed = self.seed if self.seed is not None else torch.initial_seed() % (2**31)
        self._seed = int(trainer.strategy.broadcast(seed))

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Match each layer to the optimizer that steps it (by parameter identity); count each one's steps."""
        optimizers = [_unwrap(o) for o in trainer.optimizers]
        param_owner: dict[int, list[int]] = {}
        for i, optimizer in enumerate(optimizers):
            for group in optimizer.param_groups:
                for p in group["params"]:
                    param_owner.setdefault(id(p), []).append(i)
        self._owner = {}
        for name, module in list(self._candidates.items()):
            owners = sorted(set(param_owner.get(id(module.weight), [])))
            if len(owners) > 1:
                raise ValueError(
                    f"Layer {name!r} is stepped by optimizers {owners}; a layer's score and reset period need a "
                    "single owner. Give each parameter to one optimizer or exclude the layer."
                )
            if not owners:
                rank_zero_warn(f"{type(self).__name__}: layer {name!r} is in no optimizer; it is not scored.")
                del self._candidates[name]
                continue
            self._owner[name] = owners[0]
        if not self._candidates:
            raise ValueError("No selected Linear/Conv layer is stepped by an optimizer, so there is nothing to score.")
        # Optimizers of no selected layer (e.g. SAC's temperature) are not followed: no steps, no reset events.
        followed = set(self._owner.values())
        self._opt_index = {id(o): i for i, o in enumerate(optimizers) if i in followed}
        self._remove_hooks()
        # One count per optimizer.step(): Lightning's hooks fire once per closure evaluation (LBFGS: many).
        self._step_hooks = [
            o.register_step_post_hook(partial(self._after_step, i)) for i, o in enumerate(optimizers) if i in followed
        ]
        if len(self._steps) != len(optimizers):
            self._steps = [0] * len(optimizers)
        self._trainer = trainer
        self._pending = set(self._candidates)
        self.layers, self.scored, self._traced = {}, [], {}
        hooks = output_hooks(pl_module)
        self._gatherer = MagnitudeGatherer(self._candidates, self.signal, {n: hooks[n] for n in self._candidates})
        self._metrics = [
            self.metric_class(
                {n: _size(m) for n, m in self._candidates.items() if self._owner[n] == i} or {"_": 1},
                tau=self.tau,
                eps=self.eps,
            ).to(pl_module.device)
            for i in range(len(optimizers))
        ]
        self._log_every = self.log_every_n_steps or trainer.log_every_n_steps
        # Read measurements about as often as the Trainer logs (at least every 64 measurements), not each one.
        capacity = max(1, min(64, trainer.log_every_n_steps // self._log_every))
        self._buffers = [MeasurementBuffer(m, capacity) for m in self._metrics]
        self._states, self._latest_counts = {}, {}
        self._ran, self._ran_now, self._traces = set(), set(), 0
        self._refresh_names()
        self._watch_unrun(announce=False)

    def _refresh_names(self) -> None:
        """Per optimizer, the layers to measure and to log; rebuilt whenever tracing learns more."""
        groups = range(len(self._metrics))
        self._names = [
            [n for n in self._candidates if self._owner[n] == g and (n in self._pending or n in self.scored)]
            for g in groups
        ]
        # The "activation" signal is measured by the tracer or the probe, never by module hooks.
        self._hooked = self._names if self.signal == "output" else [[] for _ in groups]
        self._scored_names, self._scored_index = [], []
        for metric in self._metrics:
            positions = [i for i, n in enumerate(metric.layer_names) if n in self.scored]
            self._scored_names.append([metric.layer_names[i] for i in positions])
            self._scored_index.append(torch.tensor(positions, dtype=torch.long, device=metric.total.device))
        if self.signal == "weight":
            for buffer, names in zip(self._buffers, self._names, strict=True):
                buffer.watch_weights({n: self._candidates[n] for n in names})

    def request_reset(self, optimizer_index: int | None = None) -> None:
        """Make the next step of an optimizer (default: of every optimizer) a measured reset step.

        For schedules that are not a fixed number of steps, e.g. a reset at each task change of a continual
        benchmark: call it from ``on_train_epoch_start`` or any hook before the step.

        Args:
            optimizer_index: Index in ``trainer.optimizers``; ``None`` for all of them.

        Raises:
            RuntimeError: If called before ``on_fit_start``, when the optimizers are not known yet.
            ValueError: If the index names no optimizer that steps a selected layer.
        """
        if not self._metrics:
            raise RuntimeError("request_reset() needs the optimizers: call it from a hook at or after on_fit_start.")
        owning = sorted(self._opt_index.values())
        if optimizer_index is None:
            self._requested.update(owning)
        elif optimizer_index not in owning:
            raise ValueError(
                f"`optimizer_index` must be one of {owning} (optimizers of selected layers), got {optimizer_index}."
            )
        else:
            self._requested.add(optimizer_index)

    def _now(self, trainer: pl.Trainer) -> int:
        """The x-axis value of logs made now."""
        if self.step_attribute is not None:
            return getattr(trainer.lightning_module, self.step_attribute)
        return trainer.fit_loop.epoch_loop._batches_that_stepped

    # -- per batch --------------------------------------------------------------------------------------
    def _due(self, step: int) -> tuple[bool, bool]:
        reset = self.reset_every_n_steps is not None and step % self.reset_every_n_steps == 0
        return step % self._log_every == 0 or reset, reset

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Trace when layers are still unknown; set up the measurement of optimizers whose next step is measured."""
        if self._tracer is None and (not self._traced or self._ran):
            self._tracer = TopologyTracer(pl_module, on_activation=self._traced_activation)
            self._tracer.__enter__()
            self._ran_now = set()
            self._traces += 1
        if self.signal == "weight":
            return  # nothing to hook: |W.grad| is read when the optimizer steps
        self._measuring = {g for g, s in enumerate(self._steps) if self._due(s + 1)[0] or g in self._requested}
        for group in self._measuring:
            self._gatherer.attach(self._hooked[group])
        if self.signal == "activation" and self._measuring and self._tracer is None:
            watched = [n for g in self._measuring for n in self._names[g] if n in self.scored]
            self._probe = ActivationProbe({n: self.layers[n] for n in watched}, self._gatherer.observe_activation)
            self._probe.__enter__()

    def _traced_activation(self, name: str, output: Tensor, total: Tensor, count: int) -> None:
        if name in self._owner and self._owner[name] in self._measuring:
            self._gatherer.observe_activation(name, output, total, count)

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        """Start a gathering window for layers whose gradients were cleared since the last backward."""
        for group in self._measuring:  # always empty for the "weight" signal
            self._gatherer.start_window(self._names[group])

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Remember the gradients this backward left, to see the next ``zero_grad``."""
        for group in self._measuring:
            self._gatherer.end_backward(self._names[group])

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """At measured steps, write the window's magnitudes into the optimizer's buffer, on the device.

        An optimizer that evaluates its closure several times (LBFGS) passes here each time: the row written
        last is the one its step keeps.
        """
        group = self._opt_index.get(id(_unwrap(optimizer)))
        if group is None:
            return
        self._before_update(group)
        measure, _ = self._due(self._steps[group] + 1)
        if not (measure or group in self._requested) or (self.signal != "weight" and group not in self._measuring):
            return
        buffer = self._buffers[group]
        if buffer.full:  # several steps of one optimizer in one batch
            self._flush(trainer, resets=False)
        if self.signal == "weight":
            buffer.write_weight_grads()
        else:
            buffer.write(*self._gatherer.collect(self._names[group]))
        self._written.add(group)

    def _before_update(self, group: int) -> None:
        """Pause the probe for the optimizer's update, which computes no activation.

        Not for an optimizer that evaluates its closure (the forward) again inside its step (LBFGS): its second
        evaluation reveals it, and the probe then stays on through its steps.
        """
        self._closures[group] = self._closures.get(group, 0) + 1
        if self._closures[group] > 1:
            self._reevaluates.add(group)
        if self._probe is not None and group not in self._reevaluates and self._probe.pause():
            self._paused_for = group

    def _after_step(self, group: int, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """Count one step of the optimizer; keep its measurement; note a due reset."""
        self._closures[group] = 0
        if self._paused_for == group:
            self._probe.resume()
            self._paused_for = None
        self._steps[group] += 1
        self._stepped = True
        reset = self._due(self._steps[group])[1]
        if group in self._requested:
            self._requested.discard(group)
            reset = True
        if group in self._written:
            self._written.discard(group)
            self._buffers[group].commit()
            self._measured.add(group)
        if reset:
            self._reset_due.add(group)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Finish the trace; evaluate and log recorded measurements when due; apply due resets."""
        self._leave_probe()
        if self._tracer is not None and self._stepped:
            # A trace covers whole optimizer-step windows (all micro-batches of an accumulation).
            self._finish_trace()
        self._stepped = False
        self._written.clear()  # a measurement whose step never came (an AMP step skipped on overflow)
        if not self._measured and not self._reset_due:
            return
        step = self._now(trainer)
        for group in self._measured:
            self._buffers[group].stamp(step)
            if self.signal == "output":
                self._gatherer.detach(self._names[group])
        self._measured.clear()
        # Reading is batched: one host sync per flush, at resets and when a buffer is full.
        if self._reset_due or any(b.full for b in self._buffers):
            self._flush(trainer)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        """Log what is still buffered, so that a resumed run has no gap."""
        self._flush(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log what is still buffered."""
        self._flush(trainer)

    def _flush(self, trainer: pl.Trainer, resets: bool = True) -> None:
        """Evaluate every buffered measurement (synced across ranks), apply due resets, log, in one host sync."""
        reduce = None
        if trainer.world_size > 1:  # the union of all ranks' samples, as the metric's own sync would give
            reduce = partial(trainer.strategy.reduce, reduce_op="sum")
        parts: list[Tensor] = []
        layout: list[tuple[int, list[int]]] = []
        for group, (buffer, metric) in enumerate(zip(self._buffers, self._metrics, strict=True)):
            if not len(buffer):
                continue
            buffer.stamp(self._now(trainer))
            rows, steps = buffer.take(reduce if metric.sync_on_compute else None)
            self._states[group] = rows[-1]
            summary = metric.summary(rows)
            index = self._scored_index[group]
            parts.append(torch.cat([summary.inactive[:, index], summary.neurons[:, index]], 1).flatten())
            parts.append(summary.skipped.float())
            layout.append((group, steps))
        reset_groups = sorted(self._reset_due) if resets else []
        if reset_groups:
            parts.append(self._reset(trainer, reset_groups).view(1))
            self._reset_due.clear()
        if parts:
            self._log(trainer, torch.cat(parts).tolist(), layout, bool(reset_groups))  # the flush's one host sync

    def _log(self, trainer: pl.Trainer, numbers: list[float], layout: list[tuple[int, list[int]]], reset: bool) -> None:
        """Turn a flush's numbers into per-step logs: layer ratios, global ratio over every optimizer's layers.

        A measurement skipped for non-finite values logs ``nan`` ratios (never its optimizer's last finite one)
        until that optimizer's next finite measurement, and ``<prefix>/skipped`` counts the skips of each step.
        """
        rows: dict[int, list[tuple[int, list[float], list[float], float]]] = {}  # step -> measurements
        at = 0
        for group, steps in layout:
            k = len(self._scored_names[group])
            skipped = numbers[at + 2 * k * len(steps) : at + (2 * k + 1) * len(steps)]
            for i, step in enumerate(steps):
                counts = numbers[at + 2 * k * i : at + 2 * k * (i + 1)]
                rows.setdefault(step, []).append((group, counts[:k], counts[k:], skipped[i]))
            at += (2 * k + 1) * len(steps)
            self._warn_if_skipped(skipped)
        logs: dict[int, dict[str, float]] = {}
        for step in sorted(rows):
            logs[step] = {f"{self.prefix}/skipped": sum(r[3] for r in rows[step])}
            for group, inactive, neurons, skipped in rows[step]:
                self._latest_counts[group] = (math.nan, math.nan) if skipped else (sum(inactive), sum(neurons))
                if self.log_per_layer:
                    for name, i, n in zip(self._scored_names[group], inactive, neurons, strict=True):
                        logs[step][f"{self.prefix}/{name}"] = i / n if n else math.nan
            total = sum(n for _, n in self._latest_counts.values())
            if total != 0:  # nan (a skipped measurement) is logged as nan
                logs[step][f"{self.prefix}/ratio"] = sum(i for i, _ in self._latest_counts.values()) / total
        if reset:
            now = self._now(trainer)
            logs.setdefault(max(logs, default=now), {})["reset/neurons"] = numbers[-1]
        latest: dict[str, float] = {}
        for step, values in logs.items():
            for logger in trainer.loggers:
                logger.log_metrics(values, step=step)
            latest.update(values)
        self.last_metrics.update(latest)
        if latest:  # for monitors such as EarlyStopping and ModelCheckpoint
            trainer.callback_metrics.update(zip(latest, torch.tensor(list(latest.values())).unbind(), strict=True))

    def _warn_if_skipped(self, skipped: list[float]) -> None:
        if any(skipped) and not self._warned_nonfinite:
            rank_zero_warn(
                f"{type(self).__name__}: a measurement had non-finite gradients or activations and was skipped; "
                f"no neuron is reset on it, its ratios are logged as nan and `{self.prefix}/skipped` counts it "
                "(this warning is shown once)."
            )
            self._warned_nonfinite = True

    # -- tracing ----------------------------------------------------------------------------------------
    def _finish_trace(self) -> None:
        """Merge what the trace saw; layers that have not run yet are traced after they first run."""
        self._tracer.__exit__(None, None, None)
        traced = self._tracer.topology()
        self._tracer = None
        for name, layer in traced.items():
            if name in self._traced:
                self._traced[name].merge(layer)
            else:
                self._traced[name] = layer
        missed = sorted(n for n in self._ran_now if not traced[n].called)
        if missed:
            raise ValueError(
                f"{type(self).__name__}: layers {missed} ran, but not through F.linear/F.conv with their own weight, "
                "so the tracer cannot see their outputs (a custom forward?). Leave them out with `exclude=[...]`."
            )
        done = [n for n in self._candidates if n in self._pending and self._traced[n].called]
        self._pending.difference_update(done)
        self._ran.difference_update(done)
        if self._ran and self._traces > _MAX_RETRACES:
            rank_zero_warn(
                f"{type(self).__name__}: layers {sorted(self._ran)} ran, but in none of the {_MAX_RETRACES} batches "
                "traced since; they run too rarely to be traced and are not scored."
            )
            self._pending.difference_update(self._ran)
            self._ran = set()
        if not self._ran:
            self._traces = 0
        self._watch_unrun()
        known = {n: layer for n, layer in self._traced.items() if layer.called and n in self._candidates}
        self._apply_explicit_consumers(known)
        eligible = [
            n
            for n, layer in known.items()
            if (self.include_output_layers or not layer.is_output)
            and not (self.residual == "exclude" and layer.writes_residual)
        ]
        if self.reset_every_n_steps is not None and self.zero_outgoing:  # fail at the first batch, not the first reset
            _check_resettable({n: known[n] for n in eligible}, self._traced)
        if self.signal == "activation":
            _check_activations({n: known[n] for n in eligible})
        for layer in known.values():
            for consumer in layer.consumers:  # once, so that resets copy nothing to the device
                device = consumer.weight.device
                consumer.columns, consumer.neurons = consumer.columns.to(device), consumer.neurons.to(device)
        new = [n for n in eligible if n not in self.scored]
        self.layers = known
        self.scored = [n for n in self._candidates if n in eligible]
        self._gatherer.detach([n for n in done if n not in self.scored])
        self._refresh_names()
        if not self._pending and not self.scored:
            raise ValueError(
                f"{type(self).__name__} found no eligible layer: every selected layer is an output layer, unused "
                "or excluded. Pass include_output_layers=True, or loosen `include`/`exclude`."
            )
        self._report(new, known)

    def _report(self, new: list[str], known: dict[str, NeuronLayer]) -> None:
        residual = [n for n in new if known[n].writes_residual]
        foreign = {n: sorted({c.name for c in known[n].consumers if self._foreign(c.weight, n)}) for n in new}
        foreign = {n: readers for n, readers in foreign.items() if readers}
        rank_zero_info(
            f"{type(self).__name__}: scoring {len(new)} more layers ({sum(known[n].size for n in new)} neurons)"
            + (f"; residual-stream writers ({self.residual}): {residual}" if residual else "")
            + (f"; not run yet, traced when they first run: {sorted(self._pending)}" if self._pending else "")
        )
        if foreign and self.reset_every_n_steps is not None and self.zero_outgoing:
            rank_zero_warn(
                f"{type(self).__name__}: layers are read by weights of another optimizer or frozen weights, whose "
                f"columns their resets zero too: {foreign}. If those are another network's inputs (a TD3 critic's "
                "action input), leave the layers out with `exclude=[...]`."
            )

    def _foreign(self, weight: Tensor, name: str) -> bool:
        """Whether a reader's weight is frozen or stepped by another optimizer than layer ``name``'s."""
        if not weight.requires_grad:
            return True
        optimizers = [_unwrap(o) for o in self._trainer.optimizers] if self._trainer is not None else []
        own = optimizers[self._owner[name]] if optimizers else None
        return own is not None and not any(p is weight for g in own.param_groups for p in g["params"])

    def _watch_unrun(self, announce: bool = True) -> None:
        """Cheap forward pre-hooks on layers not traced yet: once one runs, batches are traced until it is seen."""
        for handle in self._watchers:
            handle.remove()
        self._watchers = []
        unrun = sorted(self._pending)
        hooks = output_hooks(self._trainer.lightning_module) if unrun else {}
        for name in unrun:
            module = hooks.get(name, (self._candidates[name], None))[0]
            self._watchers.append(module.register_forward_pre_hook(partial(self._layer_ran, name)))
        if unrun and announce and not self._warned_unrun:
            rank_zero_info(f"{type(self).__name__}: layers {unrun} did not run yet; they are traced when they do.")
            self._warned_unrun = True

    def _layer_ran(self, name: str, module: nn.Module, args: Any) -> None:
        self._ran.add(name)
        self._ran_now.add(name)

    def _apply_explicit_consumers(self, known: dict[str, NeuronLayer]) -> None:
        modules = {n: layer.module for n, layer in self._traced.items()}
        for name, readers in self.consumers.items():
            if name in known:
                layer = known[name]
                layer.consumers = explicit_consumers(layer, readers, modules)
                layer.unmapped_readers = set()

    @property
    def latest_scores(self) -> dict[str, Tensor]:
        """Normalised per-neuron scores of the scored layers at their latest measurement, by layer name.

        Measurements not yet flushed are read as this process saw them (not yet summed across ranks).
        """
        scores: dict[str, Tensor] = {}
        for group, (metric, buffer) in enumerate(zip(self._metrics, self._buffers, strict=True)):
            pending = len(buffer)
            state = metric.guard(buffer.rows[pending - 1]) if pending else self._states.get(group)
            if state is not None:
                scores.update(metric.scores(state))
        return {n: scores[n] for n in self.scored if n in scores}

    def _reset(self, trainer: pl.Trainer, groups: list[int]) -> Tensor:
        total = torch.zeros((), device=trainer.lightning_module.device)
        optimizers = [_unwrap(o) for o in trainer.optimizers] if self.reset_optimizer_state else []
        for group in groups:
            self._resets += 1
            if group not in self._states:
                continue
            scores = self._metrics[group].scores(self._states[group])
            if self.zero_outgoing:  # requested resets (request_reset) can come without a period: check here too
                _check_resettable({n: self.layers[n] for n in self._names[group] if n in self.scored}, self._traced)
            for index, name in enumerate(self._names[group]):
                layer = self.layers.get(name)
                if name not in self.scored or (layer.writes_residual and self.residual == "measure"):
                    continue
                mask = select_neurons(scores[name], self.tau, self.max_reset_fraction)
                seed = (self._seed * 1_000_003 + self._steps[group] * 1009 + index) % (2**63)
                keep = None if self.zero_outgoing else []  # [] = no reader's columns are touched
                total = total + reset_neurons(
                    layer, mask, seed=seed, optimizers=optimizers, init_fn=self.init_fn, consumers=keep
                )
        return total

    @property
    def resets(self) -> int:
        """Reset events so far (one per optimizer per reset step, whether or not a neuron was inactive)."""
        return self._resets

    @property
    def state_key(self) -> str:
        """Distinguishes several instances (e.g. a measuring ReGraMa next to a resetting ReDo) in checkpoints."""
        # Lightning reads this around every hook call: build it once.
        if self._state_key is None:
            self._state_key = self._generate_state_key(signal=self.signal, **self._settings())
        return self._state_key

    def _settings(self) -> dict[str, Any]:
        """Every constructor argument that changes what the callback does (``init_fn`` by its name)."""
        init = getattr(self.init_fn, "__qualname__", repr(self.init_fn)) if self.init_fn is not None else None
        return {
            "tau": self.tau,
            "reset_every_n_steps": self.reset_every_n_steps,
            "include": self.include,
            "exclude": self.exclude,
            "consumers": self.consumers or None,
            "include_output_layers": self.include_output_layers,
            "residual": self.residual,
            "max_reset_fraction": self.max_reset_fraction,
            "reset_optimizer_state": self.reset_optimizer_state,
            "zero_outgoing": self.zero_outgoing,
            "init_fn": init,
            "log_every_n_steps": self.log_every_n_steps,
            "log_per_layer": self.log_per_layer,
            "seed": self.seed,
            "eps": self.eps,
            "step_attribute": self.step_attribute,
        }

    # -- checkpoints -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Step counters and seed: all a resumed run needs to continue the same schedule and re-draws."""
        return {
            "steps": list(self._steps),
            "seed": getattr(self, "_seed", self.seed),
            "resets": self._resets,
            "requested": sorted(self._requested),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the step counters and seed."""
        self._steps = list(state_dict["steps"])
        if state_dict.get("seed") is not None:
            self._seed = int(state_dict["seed"])  # setup() ran before the restore: the checkpoint's seed wins
        self._resets = int(state_dict.get("resets", 0))
        self._requested = set(state_dict.get("requested", []))

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Remove hooks and leave the tracer or probe if training stopped inside a batch."""
        if self._tracer is not None:
            self._tracer.__exit__(None, None, None)
            self._tracer = None
        self._leave_probe()
        self._remove_hooks()
        if self._gatherer is not None:
            self._gatherer.detach()
            self._gatherer.clear()

    def _leave_probe(self) -> None:
        if self._probe is not None:
            self._probe.__exit__(None, None, None)
            self._probe = None
        self._paused_for = None

    def _remove_hooks(self) -> None:
        for handle in self._step_hooks + self._watchers:
            handle.remove()
        self._step_hooks, self._watchers = [], []


def _unwrap(optimizer: Any) -> Any:
    return optimizer.optimizer if isinstance(optimizer, LightningOptimizer) else optimizer


def _size(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


def _check_resettable(layers: Mapping[str, NeuronLayer], neuron_layers: Mapping[str, NeuronLayer]) -> None:
    """Refuse resets of layers whose outgoing weights are not all known, with the fix that fits each reader."""
    unmapped = {n: sorted(layer.unmapped_readers) for n, layer in layers.items() if layer.unmapped_readers}
    if not unmapped:
        return
    # Naming readers by hand only helps when the reader is a Linear/Conv layer fed through an unknown op; a
    # reader with weights of another kind (a GRU, attention's input projection) has no columns to give.
    by_hand = {n: sorted({r for r, _ in readers if r in neuron_layers}) for n, readers in unmapped.items()}
    fixes = ["leave them out with `exclude=[...]`"]
    if all(len(by_hand[n]) == len(unmapped[n]) for n in unmapped):
        example = next(iter(by_hand.items()))
        fixes.insert(0, f"give their Linear/Conv readers with `consumers={{{example[0]!r}: {example[1]!r}}}`")
        fixes.insert(1, "register the op with regrama_lightning.register_op")
    raise ValueError(
        f"Cannot tell which weights read layers {sorted(unmapped)} (reader, op: {unmapped}), so their outgoing "
        f"weights cannot be zeroed. Either {', or '.join(fixes)}."
    )


def _check_activations(layers: Mapping[str, NeuronLayer]) -> None:
    """ReDo refuses layers whose activation it cannot measure per neuron."""
    bad = {n: layer.activation.error for n, layer in layers.items() if layer.activation and layer.activation.error}
    if bad:
        raise ValueError(
            f"ReDo cannot measure the activations of layers {sorted(bad)} per neuron: {bad}. Leave them out with "
            "`exclude=[...]`, or register the ops in between with regrama_lightning.register_op."
        )


def _check_number(name: str, value: Any, low: float, fix: str, high: float | None = None) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= low
    if not ok or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"`{name}` must be a finite number {bound}, got {value!r}; {fix}.")


def _check_period(name: str, value: Any, fix: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer or None, got {value!r}; {fix}.")
