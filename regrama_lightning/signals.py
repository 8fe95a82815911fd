"""The per-neuron signals a callback can score, one class each.

Each class says how it attaches, when its window opens and closes, and what it writes into an optimizer's
measurement buffer.

=======================  ==========================================================  =======================
class                    magnitude of neuron ``i``                                   gathered
=======================  ==========================================================  =======================
:class:`WeightGradient`  mean ``|W.grad|`` over its incoming weights (authors' code)  read before the step
:class:`OutputGradient`  batch mean of ``|dL/dh_i|`` (GraMa, Eq. 2)                  hooks on measured steps
:class:`Activation`      batch mean of ``|activation_i|`` (ReDo, Eq. 1)              probe on measured steps
=======================  ==========================================================  =======================

A new signal subclasses :class:`ActivitySignal` (or :class:`WindowedSignal` when it gathers over the backward
passes of a step) and writes one packed row per measured step with ``track.buffer.write(sums, counts)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.parameter import is_lazy
from torch.utils.hooks import RemovableHandle
from typing_extensions import override

from regrama_lightning.gather import GradientWindow, channel_dim
from regrama_lightning.scores import weight_grad_magnitude_sums
from regrama_lightning.tracing.layers import NeuronLayer
from regrama_lightning.tracing.probe import ActivationProbe
from regrama_lightning.tracing.selection import output_hooks
from regrama_lightning.track import OptimizerTrack


class ActivitySignal:
    """Base of the signals: one per-neuron magnitude per layer, gathered over an optimizer step.

    The callback calls, per batch: :meth:`open` (measured steps only, for signals with
    ``windowed``), :meth:`start_window`/:meth:`end_backward` around each backward, :meth:`before_update` and
    :meth:`write` before the optimizer's step, :meth:`after_update` after it, :meth:`close` at the batch end.

    Attributes:
        name: What the checkpoint key and messages call the signal.
        windowed: Gathers during the forward/backward of measured steps (needs :meth:`open`); ``False``: all it
            needs is there when the optimizer steps.
    """

    name: ClassVar[str] = ""
    windowed: ClassVar[bool] = False

    def __eq__(self, other: object) -> bool:
        """A signal equals its name (``callback.signal == "output"``), and itself."""
        return other == self.name if isinstance(other, str) else other is self

    __hash__ = object.__hash__

    def bind(self, model: nn.Module, layers: Mapping[str, nn.Module]) -> None:
        """At fit start: the model and the selected layers (by name) the signal may be asked about."""
        self.model, self.modules = model, dict(layers)

    def refresh(self, track: OptimizerTrack) -> None:
        """The track's measured layers changed (a trace learned more)."""

    def open(self, measuring: Sequence[OptimizerTrack], layers: Mapping[str, NeuronLayer], tracing: bool) -> None:
        """Batch start: attach what gathers for the tracks whose next step is measured.

        Args:
            measuring: Those tracks.
            layers: The traced layers known so far.
            tracing: The tracer runs on this batch (it reports activations through :meth:`traced_activation`).
        """

    def traced_activation(self, name: str, output: Tensor, sums: Tensor, count: int) -> None:
        """The tracer's report of one layer call's activation magnitudes (the batch it traces)."""

    def start_window(self, track: OptimizerTrack) -> None:
        """Before each backward of a measured batch."""

    def end_backward(self, track: OptimizerTrack) -> None:
        """After each backward of a measured batch."""

    def before_update(self, track: OptimizerTrack) -> None:
        """Before every step of the optimizer (measured or not), after its gradients are final."""

    def after_update(self, track: OptimizerTrack) -> None:
        """After every step of the optimizer."""

    def write(self, track: OptimizerTrack) -> None:
        """Write the step's measurement into ``track.buffer``'s next row (a later write replaces it)."""
        raise NotImplementedError

    def close(self, track: OptimizerTrack) -> None:
        """Batch end, after a measured step of ``track``."""

    def end_batch(self) -> None:
        """Batch end, every batch that opened something."""

    def forget(self, names: Sequence[str]) -> None:
        """These layers are no longer measured."""

    def check(self, layers: Mapping[str, NeuronLayer]) -> None:
        """Refuse layers the signal cannot measure (raise ``ValueError`` naming them and the fix)."""

    def teardown(self) -> None:
        """Remove everything attached."""


class WeightGradient(ActivitySignal):
    """GraMa as in the authors' code: mean ``|W.grad|`` over each neuron's incoming weights, read before the step.

    Free: the gradient is already there, so nothing is hooked and a step that is not measured costs nothing.
    """

    name = "weight"

    def __init__(self) -> None:
        self._plans: dict[int, tuple[list[nn.Parameter], list[int], dict[str, int], Tensor]] = {}

    @override
    def refresh(self, track: OptimizerTrack) -> None:
        # A lazy layer joins once its first forward has materialised its weight.
        names = [n for n in track.layers if not is_lazy(self.modules[n].weight)]
        fan_in = {n: self.modules[n].weight[0].numel() for n in names}
        positions = [track.metric.layer_names.index(n) for n in names]
        weights = [self.modules[n].weight for n in names]
        self._plans[track.index] = (weights, positions, fan_in, track.metric.count_part(fan_in))

    @override
    def write(self, track: OptimizerTrack) -> None:
        if track.index not in self._plans or any(is_lazy(w) for w in self._plans[track.index][0]):
            self.refresh(track)
        weights, positions, fan_in, all_counts = self._plans[track.index]
        grads = [p.grad for p in weights]
        present = [i for i, g in enumerate(grads) if g is not None]
        counts = all_counts
        if len(present) < len(grads):  # a layer without a gradient counts as unmeasured
            names = list(fan_in)
            counts = track.metric.count_part({names[i]: fan_in[names[i]] for i in present})
        parts = list(track.metric.zero_parts())
        for i, total in zip(present, weight_grad_magnitude_sums([grads[i] for i in present]), strict=True):
            parts[positions[i]] = total
        torch.cat([*parts, counts], out=track.buffer.next_row())


class WindowedSignal(ActivitySignal):
    """A signal gathered during the forward and backward passes of a step's window (see :mod:`~.gather`)."""

    windowed = True

    @override
    def bind(self, model: nn.Module, layers: Mapping[str, nn.Module]) -> None:
        super().bind(model, layers)
        self.window = GradientWindow(layers)

    @override
    def start_window(self, track: OptimizerTrack) -> None:
        self.window.start(track.layers)

    @override
    def end_backward(self, track: OptimizerTrack) -> None:
        self.window.end_backward(track.layers)

    @override
    def write(self, track: OptimizerTrack) -> None:
        track.buffer.write(*self.window.collect(track.layers))

    @override
    def teardown(self) -> None:
        if hasattr(self, "window"):
            self.window.clear()


class OutputGradient(WindowedSignal):
    """GraMa's Eq. 2: the batch mean of per-sample ``|dL/dh_i|``, hooked on each layer's output on measured steps."""

    name = "output"

    @override
    def bind(self, model: nn.Module, layers: Mapping[str, nn.Module]) -> None:
        super().bind(model, layers)
        hooks = output_hooks(model)
        self._outputs = {n: hooks.get(n, (m, None)) for n, m in layers.items()}
        self._handles: dict[str, RemovableHandle] = {}

    @override
    def open(self, measuring: Sequence[OptimizerTrack], layers: Mapping[str, NeuronLayer], tracing: bool) -> None:
        for track in measuring:
            for name in track.layers:
                if name not in self._handles:
                    module, index = self._outputs[name]
                    self._handles[name] = module.register_forward_hook(partial(self._forward_hook, name, index))

    @torch.compiler.disable
    def _forward_hook(self, name: str, index: int | None, module: nn.Module, args: Any, output: Any) -> None:
        output = output if index is None else output[index]
        self.window.add_output_gradients(name, output, channel_dim(self.modules[name], output))

    @override
    def close(self, track: OptimizerTrack) -> None:
        self.forget(track.layers)

    @override
    def forget(self, names: Sequence[str]) -> None:
        for name in names:
            handle = self._handles.pop(name, None)
            if handle is not None:
                handle.remove()

    @override
    def teardown(self) -> None:
        super().teardown()
        self.forget(list(getattr(self, "_handles", ())))


class Activation(WindowedSignal):
    """ReDo's Eq. 1: the batch mean of ``|activation_i|``, the value the traced graph applies after the layer.

    Measured by the tracer on the batch it traces and by an :class:`~regrama_lightning.tracing.probe.ActivationProbe`
    on other measured batches; a call counts once a backward reaches its output (the step's window). The probe
    is paused during an optimizer's update (no activations there), except for optimizers that evaluate their
    closure inside the step (LBFGS).
    """

    name = "activation"

    @override
    def bind(self, model: nn.Module, layers: Mapping[str, nn.Module]) -> None:
        super().bind(model, layers)
        self._watched: set[str] = set()
        self._probe: ActivationProbe | None = None
        self._paused_for: int | None = None

    @override
    def open(self, measuring: Sequence[OptimizerTrack], layers: Mapping[str, NeuronLayer], tracing: bool) -> None:
        self._watched = {n for track in measuring for n in track.layers}
        if measuring and not tracing:
            scored = {n: layers[n] for track in measuring for n in track.scored}
            self._probe = ActivationProbe(scored, self._observe)
            self._probe.__enter__()

    @override
    def traced_activation(self, name: str, output: Tensor, sums: Tensor, count: int) -> None:
        self._observe(name, output, sums, count)

    def _observe(self, name: str, output: Tensor, sums: Tensor, count: int) -> None:
        if name in self._watched:
            self.window.add_on_backward(name, output, sums, count)

    @override
    def before_update(self, track: OptimizerTrack) -> None:
        if self._probe is not None and not track.reevaluates and self._probe.pause():
            self._paused_for = track.index

    @override
    def after_update(self, track: OptimizerTrack) -> None:
        if self._paused_for == track.index:
            self._probe.resume()
            self._paused_for = None

    @override
    def end_batch(self) -> None:
        if self._probe is not None:
            self._probe.__exit__(None, None, None)
            self._probe = None
        self._paused_for = None
        self._watched = set()

    @override
    def check(self, layers: Mapping[str, NeuronLayer]) -> None:
        bad = {n: layer.activation.error for n, layer in layers.items() if layer.activation and layer.activation.error}
        if bad:
            raise ValueError(
                f"ReDo cannot measure the activations of layers {sorted(bad)} per neuron: {bad}. Leave them out "
                "with `exclude=[...]`, or register the ops in between with regrama_lightning.register_op."
            )

    @override
    def teardown(self) -> None:
        if hasattr(self, "_probe"):
            self.end_batch()
        super().teardown()
