"""``NeuronReset``: the Lightning hooks of the neuron-level methods, in the order they run.

Each job lives elsewhere: layers and tracing in ``callbacks/discovery.py``, one optimizer's state in ``track.py``,
the signal in ``signals.py``, the action in ``actions.py``, reading and logging in ``callbacks/reporting.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor

from regrama_lightning.actions import ActionContext, NeuronAction, Reinitialize, derive_seed
from regrama_lightning.callbacks.arguments import check_arguments
from regrama_lightning.callbacks.discovery import LayerDiscovery, unwrap
from regrama_lightning.callbacks.eager import hold_eager, release_eager
from regrama_lightning.callbacks.exposed import Exposed
from regrama_lightning.callbacks.refusals import check_resettable, check_trainer
from regrama_lightning.callbacks.reporting import ActivityLog
from regrama_lightning.metrics import NeuronActivityRatio
from regrama_lightning.reset import InitFn, select_neurons
from regrama_lightning.signals import ActivitySignal, WeightGradient
from regrama_lightning.tracing.selection import layer_size
from regrama_lightning.track import OptimizerTrack, follow

ResidualPolicy = Literal["measure", "reset", "exclude"]


class NeuronReset(Exposed, pl.Callback):
    """Measures per-neuron activity of every Linear/Conv layer and resets inactive neurons on a schedule.

    A method is this class with another signal (:meth:`make_signal`, see :mod:`regrama_lightning.signals`),
    selection (:meth:`select`) or action (:meth:`make_action`, see :mod:`regrama_lightning.actions`). The first
    training batches are traced to learn the model's structure (see
    :mod:`~regrama_lightning.callbacks.discovery`); otherwise the callback costs nothing on steps it does not
    measure. Steps are counted once per ``optimizer.step()`` (an LBFGS step that evaluates its closure many
    times is one step, measured on its last evaluation).

    Args:
        tau: Inactive when the layer-normalised score is <= tau; 0 means exactly zero.
        reset_every_n_steps: Reset every N steps of the optimizer that owns a layer (each optimizer counts its
            own steps); None only measures and logs.
        include: fnmatch patterns of layer names to consider (default: all Linear/Conv layers).
        exclude: Patterns of layer names to leave alone.
        consumers: Readers of a layer given by hand, {layer: [reader, ...]}, for models the tracer cannot
            map; each reader must be a Linear/Conv layer that takes the layer's neurons in order (in contiguous
            blocks when flattened).
        include_output_layers: Also score and reset layers that no weight reads (network heads). A layer read
            by weights of another optimizer, or by frozen weights, is not an output layer: its reset zeroes those
            weights' columns too.
        residual: Neurons whose output is summed into a shared stream (residual connections): "measure"
            scores them but never resets them (their outgoing columns are shared with other neurons);
            "reset" re-draws their incoming weights and keeps the shared outgoing ones; "exclude" does
            not score them.
        max_reset_fraction: Reset at most this fraction of a layer's neurons (the lowest-scoring ones).
        reset_optimizer_state: Zero the optimizer state of the touched entries.
        zero_outgoing: Zero the reset neurons' outgoing weights (the paper, ReDo). False keeps them, as the
            authors' released SAC code does: a re-drawn neuron then feeds its readers at once, and its gradient
            score is not zero right after the reset.
        init_fn: Re-initialises a layer in place (run on the layer under the seeded generator, its other values
            put back); defaults to the layer's reset_parameters.
        log_every_n_steps: Measure and log every N optimizer steps; None follows the Trainer's
            log_every_n_steps. Reset steps are always measured.
        log_per_layer: Also log one ratio per layer.
        seed: Seed of the re-draws; None takes torch.initial_seed() of rank 0.
        eps: Added to each layer's mean when normalising.
        step_attribute: Name of an int attribute of the LightningModule to use as the x-axis of the logs
            (e.g. "env_steps" for an RL agent); None uses the Trainer's step, as self.log does.
        name: The callback's checkpoint key; None builds one from the arguments. Give one to tell apart
            callbacks whose arguments only differ in an init_fn of the same description.

    Raises:
        ValueError: On any invalid argument, naming it and the fix.

    Example:
        >>> callback = NeuronReset(tau=0.01, reset_every_n_steps=None)  # |W.grad| scores, measured and logged
        >>> callback.signal == "weight", type(callback.action).__name__
        (True, 'Reinitialize')
    """

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
        name: str | None = None,
    ) -> None:
        check_arguments(**{k: v for k, v in locals().items() if k not in ("self", "__class__")})
        self.tau, self.reset_every_n_steps, self.residual = float(tau), reset_every_n_steps, residual
        self.include, self.exclude = (list(include) if include else None), (list(exclude) if exclude else None)
        self.consumers = {k: list(v) for k, v in (consumers or {}).items()}
        self.include_output_layers, self.max_reset_fraction = include_output_layers, max_reset_fraction
        self.reset_optimizer_state, self.zero_outgoing, self.init_fn = reset_optimizer_state, zero_outgoing, init_fn
        self.log_every_n_steps, self.log_per_layer = log_every_n_steps, log_per_layer
        self.seed, self.eps, self.step_attribute, self.name = seed, eps, step_attribute, name
        self.signal: ActivitySignal = self.make_signal()
        self.action: NeuronAction = self.make_action()
        self._discovery = LayerDiscovery(type(self).__name__, self.consumers, include_output_layers, residual)
        self._log = ActivityLog(type(self).__name__, self.prefix, log_per_layer)
        self._tracks: list[OptimizerTrack] = []
        self._by_optimizer: dict[int, OptimizerTrack] = {}
        self._optimizers = 0
        self._step_hooks: list[Any] = []
        self._measuring: list[OptimizerTrack] = []
        self._restored: dict[str, Any] | None = None
        self._stepped = False
        self._resets = 0
        self._seed: int | None = None  # fixed at setup (the checkpoint's wins on resume)
        self._trainer: pl.Trainer | None = None
        self._state_key: str | None = None

    # -- what a method chooses ----------------------------------------------------------------------------
    def make_signal(self) -> ActivitySignal:
        """The signal scored (default: ``|W.grad|``); a subclass returns another."""
        return WeightGradient()

    def make_action(self) -> NeuronAction:
        """What a reset does to the selected neurons (default: :class:`~regrama_lightning.actions.Reinitialize`)."""
        return Reinitialize(self.init_fn, self.zero_outgoing, self.reset_optimizer_state)

    def select(self, name: str, scores: Tensor) -> Tensor:
        """The neurons of layer ``name`` to act on, from its normalised scores (NaN: no data, never selected)."""
        return select_neurons(scores, self.tau, self.max_reset_fraction)

    def observe(self, track: OptimizerTrack, rows: Tensor, steps: list[int]) -> None:
        """Sees every measurement read (rows synced across ranks), before logging; for methods with a running state."""

    # -- set-up -------------------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Validate the strategy, the Trainer's logging period and the layer selection; fix the seed on every rank."""
        if stage != "fit":
            return
        check_trainer(type(self).__name__, trainer, pl_module, self.log_every_n_steps, self.step_attribute)
        self._discovery.select(pl_module, self.include, self.exclude)
        seed = self.seed if self.seed is not None else torch.initial_seed() % (2**31)
        self._seed = int(trainer.strategy.broadcast(seed))

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Give each optimizer of a selected layer its track; steps start at 0, or where a checkpoint left them."""
        optimizers = [unwrap(o) for o in trainer.optimizers]
        owner = self._discovery.assign(optimizers)
        restored, self._restored = self._restored or {}, None
        steps, requested = restored.get("steps", []), set(restored.get("requested", []))
        self._resets = int(restored.get("resets", 0))
        self._optimizers = len(optimizers)
        self._remove_hooks()
        self._log_every = self.log_every_n_steps or trainer.log_every_n_steps
        # Read measurements about as often as the Trainer logs (at least every 64 measurements), not each one.
        capacity = max(1, min(64, trainer.log_every_n_steps // self._log_every))
        sizes = {n: layer_size(m) for n, m in self._discovery.candidates.items()}
        make = lambda names: self.metric_class({n: sizes[n] for n in names}, tau=self.tau, eps=self.eps)  # noqa: E731
        self._tracks = follow(optimizers, owner, make, pl_module.device, capacity, steps, requested)
        # One count per optimizer.step(): Lightning's hooks fire once per closure evaluation (LBFGS: many).
        self._step_hooks = [t.optimizer.register_step_post_hook(partial(self._after_step, t)) for t in self._tracks]
        self._by_optimizer = {id(t.optimizer): t for t in self._tracks}
        self._trainer = trainer
        self.signal.bind(pl_module, self._discovery.candidates)
        self._discovery.start_fit(pl_module)
        self._refresh()

    def request_reset(self, optimizer_index: int | None = None) -> None:
        """Make the next step of an optimizer (default: of every optimizer) a measured reset step.

        For schedules that are not a fixed number of steps, e.g. a reset at each task change of a continual
        benchmark: call it from ``on_train_epoch_start`` or any hook before the step.

        Args:
            optimizer_index: Index in trainer.optimizers; None for all of them.

        Raises:
            RuntimeError: If called before ``on_fit_start``, when the optimizers are not known yet.
            ValueError: If the index names no optimizer that steps a selected layer.
        """
        if not self._tracks:
            raise RuntimeError("request_reset() needs the optimizers: call it from a hook at or after on_fit_start.")
        owning = [t.index for t in self._tracks]
        if optimizer_index is not None and optimizer_index not in owning:
            raise ValueError(
                f"`optimizer_index` must be one of {owning} (optimizers of selected layers), got {optimizer_index}."
            )
        for track in self._tracks:
            track.requested = track.requested or optimizer_index in (None, track.index)

    # -- per batch, in the order the hooks run ------------------------------------------------------------
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Trace while layers are unknown; open the signal for optimizers whose next step is measured."""
        tracing = self._discovery.wants_trace
        if tracing:
            self._discovery.start_trace(self.signal.traced_activation)
        if self.signal.windowed:
            self._measuring = [t for t in self._tracks if self._due(t.steps + 1)[0] or t.requested]
            for track in self._tracks:
                track.measuring = track in self._measuring
            if self._measuring:
                self.signal.open(self._measuring, self.layers, tracing=tracing)
        if tracing or self._measuring:
            # Hooks and the tracer's or probe's op interception stay out of compiled graphs: a torch.compile'd
            # model runs eagerly on these batches only, with no graph break or recompile.
            hold_eager(self)

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        """Start a gathering window for layers whose gradients were cleared since the last backward."""
        for track in self._measuring:  # always empty for a signal read at the step
            self.signal.start_window(track)

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Remember the gradients this backward left, to see the next ``zero_grad``."""
        for track in self._measuring:
            self.signal.end_backward(track)

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """At measured steps, write the window's magnitudes into the optimizer's buffer, on the device.

        An optimizer that evaluates its closure several times (LBFGS) passes here each time: the row written
        last is the one its step keeps.
        """
        track = self._by_optimizer.get(id(unwrap(optimizer)))
        if track is None:
            return
        track.closures += 1
        track.reevaluates = track.reevaluates or track.closures > 1
        self.signal.before_update(track)
        measure = self._due(track.steps + 1)[0] or track.requested
        if not measure or (self.signal.windowed and not track.measuring):
            return
        if track.buffer.full:  # several steps of one optimizer in one batch
            self._read(trainer, resets=False)
        self.signal.write(track)
        track.written = True

    def _after_step(self, track: OptimizerTrack, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """Count one step of the optimizer; keep its measurement; note a due reset."""
        track.closures = 0
        self.signal.after_update(track)
        track.steps += 1
        self._stepped = True
        if self._due(track.steps)[1] or track.requested:
            track.reset_due = True
            track.requested = False
        if track.written:
            track.written = False
            track.buffer.commit()
            track.measured = True
        self.action.after_step(track.index)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Finish the trace; evaluate and log recorded measurements when due; apply due resets."""
        self.signal.end_batch()
        release_eager(self)
        if self._discovery.tracer is not None and self._stepped:
            # A trace covers whole optimizer-step windows (all micro-batches of an accumulation).
            self._finish_trace()
        self._stepped = False
        reset_due = False
        for track in self._tracks:
            track.written = False  # a measurement whose step never came (an AMP step skipped on overflow)
            reset_due = reset_due or track.reset_due
            if track.measured:
                track.measured = False
                track.buffer.stamp(self._now(trainer))
                self.signal.close(track)
        # Reading is batched: one host sync per read, at resets and when a buffer is full.
        if reset_due or any(t.buffer.full for t in self._tracks):
            self._read(trainer)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        """Log what is still buffered, so that a resumed run has no gap."""
        self._read(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log what is still buffered."""
        self._read(trainer)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Remove hooks and leave the tracer or probe if training stopped inside a batch."""
        self._discovery.close()
        self.signal.teardown()
        release_eager(self)
        self._remove_hooks()

    # -- the pieces the hooks call ------------------------------------------------------------------------
    def _due(self, step: int) -> tuple[bool, bool]:
        """Whether optimizer step ``step`` is measured, and whether it resets."""
        reset = self.reset_every_n_steps is not None and step % self.reset_every_n_steps == 0
        return step % self._log_every == 0 or reset, reset

    def _now(self, trainer: pl.Trainer) -> int:
        """The x-axis value of logs made now."""
        if self.step_attribute is not None:
            return getattr(trainer.lightning_module, self.step_attribute)
        return trainer.fit_loop.epoch_loop._batches_that_stepped

    def _finish_trace(self) -> None:
        new, unscored = self._discovery.finish_trace()
        layers = self.layers
        if self.reset_every_n_steps is not None:  # fail at the first batch, not the first reset
            self._check_resettable(self.scored)
        self.signal.check({n: layers[n] for n in self.scored})
        self.signal.forget(unscored)
        self._refresh()
        optimizers = [unwrap(o) for o in self._trainer.optimizers]
        self._discovery.report(new, optimizers, self.reset_every_n_steps is not None and self.action.touches_outgoing)

    def _check_resettable(self, names: Sequence[str]) -> None:
        """Refuse a reset of layers whose outgoing weights the action zeroes but whose readers are not mapped."""
        if self.action.touches_outgoing:
            acted = self._discovery.resettable(names)
            layers = self.layers
            check_resettable(type(self).__name__, {n: layers[n] for n in acted}, self._discovery.traced, self.residual)

    def _refresh(self) -> None:
        for track in self._tracks:
            track.refresh(self._discovery.measured(track.index), self.scored)
            self.signal.refresh(track)

    def _read(self, trainer: pl.Trainer, resets: bool = True) -> None:
        self._log.read(trainer, self._tracks, self._now(trainer), self._act if resets else None, self.observe)

    def _act(self, tracks: Sequence[OptimizerTrack]) -> Tensor:
        """Apply the action to the selected neurons of every layer of these optimizers; neurons acted on."""
        total = torch.zeros((), device=self._trainer.lightning_module.device)
        optimizers = [unwrap(o) for o in self._trainer.optimizers]
        for track in tracks:
            self._resets += 1
            if track.state is None:
                continue
            scores = track.metric.scores(track.state)
            self._check_resettable(track.scored)  # requested resets can come without a period: check here too
            for name in self._discovery.resettable(track.scored):
                seed = derive_seed(self._seed, track.index, name, track.steps)
                context = ActionContext(self.layers[name], scores[name], seed, optimizers, track.index, track.steps)
                total = total + self.action.apply(self.select(name, scores[name]), context)
        return total

    def _remove_hooks(self) -> None:
        for handle in self._step_hooks:
            handle.remove()
        self._step_hooks = []
