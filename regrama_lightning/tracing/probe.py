"""Measuring ReDo's activations where the model computes them, on the steps that are measured.

The tracer records, per layer, the ops from the layer's output to its activation
(:class:`~regrama_lightning.tracing.layers.ActivationSite`): through norms, pooling, transposes, adds of embeddings,
products such as a hand-written swish ``h * sigmoid(h)``. The probe follows those same ops on a later forward
pass and reports the value the model really computed, so nothing is replayed with stale operands.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from regrama_lightning.tracing.layers import NeuronLayer
from regrama_lightning.tracing.ops import emitted_layer, flat_tensors, op_label, op_name, run_eagerly


class _Live:
    """One call of a watched layer on this pass: the values reached so far along its site's ops."""

    __slots__ = ("layer", "measured", "output", "values")

    def __init__(self, layer: NeuronLayer, output: Tensor) -> None:
        self.layer = layer
        self.output = output
        self.values: list[Tensor] = [output]  # kept alive: ids of freed tensors are reused
        self.measured: dict[int, Tensor] = {}  # node -> value, for a site measured on several values


class ActivationProbe(TorchFunctionMode):
    """Reports ReDo's per-neuron activation magnitudes of watched layers during the forward passes it wraps.

    Args:
        layers: Traced layers to watch (from :func:`~regrama_lightning.tracing.tracer.trace_topology`); layers whose
            activation cannot be measured (``layer.activation.error``) are skipped.
        on_activation: Called as ``on_activation(name, output, sums, count)`` per layer call: the layer's raw
            output, per-neuron sums of ``|activation|`` and the number of terms in each.

    Example:
        >>> from regrama_lightning import trace_topology
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> layers = trace_topology(net, lambda: net(torch.randn(3, 4)))
        >>> seen = {}
        >>> with ActivationProbe({"0": layers["0"]}, lambda n, out, sums, count: seen.update({n: count})):
        ...     _ = net(torch.randn(5, 4))
        >>> seen
        {'0': 5}
    """

    def __init__(
        self, layers: Mapping[str, NeuronLayer], on_activation: Callable[[str, Tensor, Tensor, int], None]
    ) -> None:
        super().__init__()
        watched = {n: layer for n, layer in layers.items() if layer.activation and layer.activation.error is None}
        self._by_weight = {id(layer.module.weight): layer for layer in watched.values()}
        # Per layer: (op, parent nodes) -> node index; the last node is the measured value, unless the site
        # measures several (a split output): those are in `_parts`.
        self._index = {
            n: {spec: i + 1 for i, spec in enumerate(layer.activation.nodes)} for n, layer in watched.items()
        }
        self._parts = {n: layer.activation.measured for n, layer in watched.items() if layer.activation.parts}
        self._live: dict[int, tuple[_Live, int]] = {}
        self._on_activation = on_activation
        self._paused = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if torch.compiler.is_compiling():  # Dynamo is inlining this mode: keep it out of the graph
            return run_eagerly(self, func, types, args, kwargs)
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = op_name(func)
        hit = emitted_layer(name, args, kwargs, out, self._by_weight)
        if hit is not None:
            layer, output, _ = hit
            call = _Live(layer, output)
            if 0 in self._parts.get(layer.name, ()):  # some neurons measured on the raw output itself
                call.measured[0] = output
            if layer.activation.nodes:
                self._live[id(output)] = (call, 0)
            else:
                self._report(call, output)
            return out
        if not self._live or not isinstance(out, Tensor | tuple | list):
            return out
        hits = [self._live[id(t)] for t in flat_tensors(args, kwargs) if id(t) in self._live]
        label = op_label(name, args, kwargs) if hits else name
        for call in {id(c): c for c, _ in hits}.values():
            parents = tuple(i for c, i in hits if c is call)
            if isinstance(out, Tensor):
                self._advance(call, (label, parents), out)
                continue
            for i, t in enumerate(out):  # a tuple output (chunk, split): element i is node "op[i]"
                if isinstance(t, Tensor):
                    self._advance(call, (f"{label}[{i}]", parents), t)
        return out

    def _advance(self, call: _Live, spec: tuple[str, tuple[int, ...]], value: Tensor) -> None:
        index = self._index[call.layer.name].get(spec)
        if index is None:
            return
        call.values.append(value)
        parts = self._parts.get(call.layer.name)
        if parts is None:
            if index == len(call.layer.activation.nodes):
                self._report(call, value)
                return
        elif index in parts:
            call.measured[index] = value
            if len(call.measured) == len(parts):
                self._report(call, *(call.measured[i] for i in parts))
                return
        self._live[id(value)] = (call, index)

    def _report(self, call: _Live, *values: Tensor) -> None:
        for t in call.values:
            entry = self._live.get(id(t))
            if entry is not None and entry[0] is call:
                del self._live[id(t)]
        self._on_activation(call.layer.name, call.output, *call.layer.activation.reduce(*values))

    def pause(self) -> bool:
        """Stop intercepting ops (an optimizer's update has no activations to see); ``False`` if not on top.

        An interception costs a Python call per op: on a CPU, Adam's per-parameter update alone is ~150 ops.
        """
        depth = torch._C._len_torch_function_stack()
        if self._paused or not depth or torch._C._get_function_stack_at(depth - 1) is not self:
            return False
        super().__exit__(None, None, None)
        self._paused = True
        return True

    def resume(self) -> None:
        """Intercept ops again after :meth:`pause`."""
        if self._paused:
            self._paused = False
            super().__enter__()

    def __exit__(self, *exc) -> None:
        self._live.clear()
        if self._paused:  # already off the mode stack
            self._paused = False
            return None
        return super().__exit__(*exc)
