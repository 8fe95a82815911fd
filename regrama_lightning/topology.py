"""Which neurons a model has, and who reads them, from traced forward passes.

Every output unit of a ``Linear`` or ``Conv{1,2,3}d`` is a neuron. To reset a neuron we must know which input
columns of which later weights read it (to zero its outgoing weights), which per-feature norm belongs to it,
and (for ReDo) which value of the graph is its activation. We learn all of that by running real forward passes
under a ``TorchFunctionMode`` that carries, next to every tensor derived from a layer's output, an integer
tensor of the same shape naming the neuron each element comes from. How each op moves those ids is the op
table of :mod:`regrama_lightning.ops`; an op it does not know taints its output, and a weight that reads a
tainted value is reported, never guessed.

Readers are ``Linear``/``Conv`` layers, ``ConvTranspose`` layers (their input rows), and bare parameters used
as weights (``F.linear(h, W)``, ``h @ W``). ``nn.MultiheadAttention`` maps its ``out_proj`` neurons; its own
input projections are an unmapped reader.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

from regrama_lightning.ops import OpCall, TracingError, changes_values, op_rule

NEURON_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORM_LAYERS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
_ID = torch.int32  # neuron ids; half the memory of int64 for the one traced batch
_NONE = -1  # element derived from no traced neuron
_MIXED = -2  # element that sums the outputs of several neurons (a residual stream, a gate)
# Ops whose weight argument reads their input: (input-axis of the weight, whether the op emits a layer's neurons).
_WEIGHT_OPS = {
    "linear": (1, True),
    "conv1d": (1, True),
    "conv2d": (1, True),
    "conv3d": (1, True),
    "conv_transpose1d": (0, False),
    "conv_transpose2d": (0, False),
    "conv_transpose3d": (0, False),
}
_MATMULS = {"matmul", "__matmul__", "mm"}
_ATTENTION = "multi_head_attention_forward"
_INPLACE_DUNDERS = {"__iadd__", "__isub__", "__imul__", "__itruediv__", "__iand__", "__ior__"}


@dataclass
class Consumer:
    """A weight that reads a neuron layer's output.

    Attributes:
        name: Qualified name of the reading module (or of the bare parameter used as a weight).
        module: The reading module; ``None`` for a bare parameter.
        columns: Input positions of the weight (along ``axis``) that read the layer.
        neurons: For each entry of ``columns``, the index of the neuron it reads.
        weight: The reading weight (defaults to ``module.weight``).
        axis: The weight's input axis: 1 for ``Linear``/``Conv``, 0 for ``ConvTranspose`` and ``h @ W``.
        groups: Groups of a grouped ``Conv`` reader (its weight holds ``in_channels / groups`` columns).
    """

    name: str
    module: nn.Module | None
    columns: Tensor
    neurons: Tensor
    weight: Tensor | None = None
    axis: int = 1
    groups: int = 1

    def __post_init__(self) -> None:
        if self.weight is None:
            self.weight = self.module.weight
            self.groups = getattr(self.module, "groups", 1) if self.axis == 1 else 1

    @property
    def width(self) -> int:
        """Number of input positions the weight reads."""
        return self.weight.shape[self.axis] * (self.groups if self.axis == 1 else 1)


@dataclass
class ActivationSite:
    """Where ReDo's value of a layer is in the graph: the ops from the layer's output to it.

    Attributes:
        nodes: The ops after the layer's raw output (node 0), each ``(op name, parent nodes)``; the last one is
            the measured value. Empty: the raw output itself.
        dim: The dimension of the measured value that holds the neurons (negative, from the end); ``None`` for a
            one-neuron layer whose value holds only that neuron.
        order: Position along ``dim`` of each neuron, when not ``0..size-1``.
        name: The value-changing ops, e.g. ``"batch_norm+relu"``, ``"sigmoid+mul"``; ``"identity"`` if none.
        error: Why the value cannot be measured per neuron (ReDo then refuses the layer).
    """

    nodes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    dim: int | None = -1
    order: Tensor | None = None
    name: str = "identity"
    error: str | None = None

    def reduce(self, value: Tensor) -> tuple[Tensor, int]:
        """Per-neuron sums of ``|value|`` (float32) and the number of terms in each."""
        t = value.detach().abs()
        if self.dim is None:
            return t.sum(dtype=torch.float32).reshape(1), t.numel()
        dim = self.dim % t.dim()
        # Reduce in place of the layout: moving the neuron dim last would copy the whole tensor first.
        dims = [d for d in range(t.dim()) if d != dim]
        sums = t.sum(dim=dims, dtype=torch.float32) if dims else t.float()
        if self.order is not None:
            sums = sums.index_select(0, self.order.to(sums.device))
        return sums, t.numel() // t.shape[dim]

    def same_path(self, other: ActivationSite) -> bool:
        """Whether two calls of a layer measure the same value."""
        return self.nodes == other.nodes and self.dim == other.dim and self.error == other.error


@dataclass
class NeuronLayer:
    """One ``Linear``/``Conv`` layer, its neurons and everything a reset must touch.

    Attributes:
        name: Qualified module name.
        module: The layer.
        size: Number of neurons (``out_features`` or ``out_channels``).
        consumers: Weights that read this layer's output, with the column mapping.
        norms: Per-feature norm modules whose feature ``j`` is this layer's neuron ``j``.
        residual_readers: Readers of this layer's output summed (or multiplied) with another traced value, as
            from a residual stream: those outgoing columns are shared with other neurons.
        unmapped_readers: ``(reader, op)`` pairs where the output reaches a weight through an op the tracer
            cannot map to columns, or is read by an op whose weights it cannot map (attention, a GRU).
        activation: Where ReDo's value is (see :class:`ActivationSite`); ``None`` until the layer has run.
        called: Whether a traced pass ran the layer.
    """

    name: str
    module: nn.Module
    size: int
    consumers: list[Consumer] = field(default_factory=list)
    norms: list[tuple[str, nn.Module]] = field(default_factory=list)
    residual_readers: set[str] = field(default_factory=set)
    unmapped_readers: set[tuple[str, str]] = field(default_factory=set)
    activation: ActivationSite | None = None
    called: bool = False

    @property
    def activation_name(self) -> str:
        """The ops ReDo's value applies to the layer's output (``"identity"`` if none)."""
        return self.activation.name if self.activation is not None else "identity"

    @property
    def writes_residual(self) -> bool:
        """The output reaches a reader only mixed with other neurons' outputs (a residual stream, a gate)."""
        return bool(self.residual_readers)

    @property
    def is_output(self) -> bool:
        """No traced weight reads this layer: it is a network output (head)."""
        return not self.consumers and not self.residual_readers and not self.unmapped_readers

    def merge(self, other: NeuronLayer) -> None:
        """Add what another trace of the same layer saw (readers that only run in some batches)."""
        for consumer in other.consumers:
            mine = next((c for c in self.consumers if c.name == consumer.name), None)
            if mine is None:
                self.consumers.append(consumer)
            elif not (torch.equal(mine.columns.cpu(), consumer.columns.cpu())) or not torch.equal(
                mine.neurons.cpu(), consumer.neurons.cpu()
            ):
                self.unmapped_readers.add((consumer.name, "reads different columns in different batches"))
        self.norms += [n for n in other.norms if all(n[0] != m[0] for m in self.norms)]
        self.residual_readers |= other.residual_readers
        self.unmapped_readers |= other.unmapped_readers
        if self.activation is None:
            self.activation = other.activation
        elif other.activation is not None and not self.activation.same_path(other.activation):
            self.activation = _site_error(self.activation, "its activation differs between batches")
        self.called = self.called or other.called


def neuron_layers(model: nn.Module) -> dict[str, nn.Module]:
    """All ``Linear``/``Conv{1,2,3}d`` modules of ``model`` by qualified name (``torch.compile`` prefixes removed)."""
    return {clean_name(n): m for n, m in model.named_modules() if isinstance(m, NEURON_LAYERS)}


def output_hooks(model: nn.Module) -> dict[str, tuple[nn.Module, int | None]]:
    """Per neuron layer, the module whose forward returns its output, and the index into that return value.

    The layer itself, except ``nn.MultiheadAttention.out_proj``: attention applies its weight functionally, so
    its output is the attention module's first return value.
    """
    hooks: dict[str, tuple[nn.Module, int | None]] = {}
    for parent_name, parent in model.named_modules():
        for child_name, child in parent.named_children():
            if isinstance(child, NEURON_LAYERS):
                name = clean_name(f"{parent_name}.{child_name}" if parent_name else child_name)
                attention = isinstance(parent, nn.MultiheadAttention) and child_name == "out_proj"
                hooks[name] = (parent, 0) if attention else (child, None)
    return hooks


def clean_name(name: str) -> str:
    """Strip wrapper prefixes (``torch.compile``'s ``_orig_mod``, DDP's ``module``) from a module name."""
    parts = [p for p in name.split(".") if p != "_orig_mod"]
    return ".".join(parts)


def select_layers(
    layers: Mapping[str, nn.Module], include: Sequence[str] | None, exclude: Sequence[str] | None
) -> dict[str, nn.Module]:
    """Filter layers by ``fnmatch`` name patterns.

    Raises:
        ValueError: If a pattern matches no layer, naming the pattern and the available names.
    """
    for arg, patterns in (("include", include), ("exclude", exclude)):
        for pattern in patterns or ():
            if not any(fnmatch.fnmatchcase(name, pattern) for name in layers):
                raise ValueError(
                    f"`{arg}` pattern {pattern!r} matches no Linear/Conv layer. Layer names are: "
                    f"{sorted(layers)}. Fix the pattern (fnmatch syntax, e.g. 'encoder.*') or remove it."
                )
    return {
        name: module
        for name, module in layers.items()
        if (not include or any(fnmatch.fnmatchcase(name, p) for p in include))
        and not any(fnmatch.fnmatchcase(name, p) for p in exclude or ())
    }


def op_name(func: Any) -> str:
    """The name the op table knows ``func`` by (a property read, ``x.T``, by the property's name)."""
    name = getattr(func, "__name__", "")
    if name == "__get__":
        name = getattr(getattr(func, "__self__", None), "__name__", name)
    return name


def flat_tensors(args: tuple, kwargs: Mapping[str, Any]) -> list[Tensor]:
    """The tensors among an op's arguments, one list level deep (``torch.cat``'s operands), in order."""
    found: list[Tensor] = []
    for value in (*args, *kwargs.values()):
        if isinstance(value, Tensor):
            found.append(value)
        elif isinstance(value, list | tuple):
            found.extend(v for v in value if isinstance(v, Tensor))
    return found


def emitted_layer(
    name: str, args: tuple, kwargs: Mapping[str, Any], out: Any, by_weight: Mapping[int, Any]
) -> tuple[Any, Tensor, int] | None:
    """``(layer, its raw output, neuron dim)`` if this op call computes a watched layer's output, else ``None``."""
    if name == _ATTENTION:
        layer = next((by_weight[id(t)] for t in flat_tensors(args, kwargs) if id(t) in by_weight), None)
        return (layer, out[0], -1) if layer is not None and isinstance(out, tuple) else None
    if name not in _WEIGHT_OPS or not _WEIGHT_OPS[name][1]:
        return None
    weight = args[1] if len(args) > 1 else kwargs.get("weight")
    layer = by_weight.get(id(weight))
    if layer is None:
        return None
    return layer, out, -1 if name == "linear" else -(weight.dim() - 2) - 1


@dataclass
class _Call:
    """One call of a layer and the values still derived from it alone (ReDo's candidates)."""

    layer: str
    output: Tensor
    specs: list[tuple[str, tuple[int, ...]]]
    values: list[Tensor]
    value_op: list[bool]
    post_of: list[int]  # per node: its latest value-changing ancestor (itself if it changes values)
    done: bool = False

    def add(self, op: str, parents: tuple[int, ...], changes: bool, value: Tensor) -> int:
        index = len(self.specs)
        self.specs.append((op, parents))
        self.values.append(value)
        self.value_op.append(changes)
        single = len(set(parents)) == 1
        self.post_of.append(index if changes or not single else self.post_of[parents[0]])
        return index


class TopologyTracer(TorchFunctionMode):
    """Watches real forward passes and records which neurons feed which weights.

    Use it as a context manager around the forward (and loss) computation, then call :meth:`topology`. The
    callbacks enter it for the first training batch, and again when a layer first runs later on;
    :func:`trace_topology` wraps it for plain PyTorch.

    Args:
        model: The model whose ``Linear``/``Conv`` layers are traced.
        on_output: Called as ``on_output(name, output)`` for every traced layer call.
        on_activation: Called as ``on_activation(name, output, sums, count)`` once ReDo's value of a call is
            known: per-neuron sums of its magnitude and the number of terms in each.

    Raises:
        TracingError: From inside the forward, if an op table rule fails on a call.
    """

    def __init__(
        self,
        model: nn.Module,
        on_output: Callable[[str, Tensor], None] | None = None,
        on_activation: Callable[[str, Tensor, Tensor, int], None] | None = None,
    ) -> None:
        super().__init__()
        self._layers = {n: NeuronLayer(n, m, _size(m)) for n, m in neuron_layers(model).items()}
        self._by_weight = {id(layer.module.weight): layer for layer in self._layers.values()}
        self._offsets: dict[str, int] = {}
        start = 0
        for name, layer in self._layers.items():
            self._offsets[name] = start
            start += layer.size
        self._bounds = torch.tensor([self._offsets[n] for n in self._layers] + [start], dtype=_ID)
        self._names = list(self._layers)
        self._norms: dict[int, tuple[str, nn.Module]] = {}
        # A parameter used as a weight is named after its module when it is that module's `weight`.
        self._params: dict[int, tuple[str, nn.Module | None]] = {}
        for module_name, module in model.named_modules():
            if isinstance(module, _NORM_LAYERS):
                for tensor in (getattr(module, "weight", None), getattr(module, "running_mean", None)):
                    if tensor is not None:
                        self._norms[id(tensor)] = (clean_name(module_name), module)
            for param_name, param in module.named_parameters(recurse=False):
                qualified = clean_name(f"{module_name}.{param_name}" if module_name else param_name)
                is_weight = param_name == "weight" and module_name
                self._params.setdefault(
                    id(param), (clean_name(module_name), module) if is_weight else (qualified, None)
                )
        self._constants = {id(t) for t in (*model.parameters(), *model.buffers())}  # the model's own tensors
        self._ids: dict[int, tuple[Tensor, Tensor]] = {}  # id(tensor) -> (tensor kept alive, neuron ids)
        self._nodes: dict[int, tuple[_Call, int]] = {}  # id(tensor) -> (layer call, node index)
        self._calls: list[_Call] = []
        self._taint: dict[int, tuple[Tensor, frozenset[str], str]] = {}
        self._mixed: dict[int, frozenset[str]] = {}  # id(tensor) -> layers summed into its _MIXED elements
        self._new_mixed: set[str] = set()
        self._on_output = on_output
        self._on_activation = on_activation

    # -- the mode ---------------------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = op_name(func)
        if _inplace(name, kwargs) and args and isinstance(args[0], Tensor) and id(args[0]) in self._nodes:
            self._keep_before_write(args[0])
        out = func(*args, **kwargs)
        if op_rule(name) == "ignore" or not any(isinstance(t, Tensor) for t in tree_flatten(out)[0]):
            return out  # shape queries, hooks, flags, fresh tensors: nothing flows on to a layer
        with torch.no_grad():
            self._propagate(name, func, args, kwargs, out)
        return out

    def _propagate(self, name: str, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        flat = flat_tensors(args, kwargs)
        mapped = [t for t in flat if id(t) in self._ids]
        tainted = [t for t in flat if id(t) in self._taint]
        if name in _WEIGHT_OPS and self._weight_op(name, args, kwargs, out, mapped, tainted):
            return
        if name == _ATTENTION:
            self._attention(args, kwargs, out, mapped, tainted)
            return
        if not mapped and not tainted:
            return
        if name in _MATMULS and self._matmul(args, mapped, tainted):
            return
        rule = op_rule(name)
        if rule is None:
            self._unknown(name, flat, mapped, tainted, out)
            return
        if not mapped:
            self._mark_tainted(out, tainted, name)
            return
        try:
            ids = self._apply(name, rule, func, args, kwargs, out, mapped)
        except Exception as exc:
            raise TracingError(
                f"The tracer's rule for op {name!r} failed on this call ({type(exc).__name__}: {exc}). Register a "
                f"rule that fits it with regrama_lightning.register_op({name!r}, ...), or leave the layers before "
                "it out with `exclude=[...]`."
            ) from exc
        if ids is None:
            self._finish_inputs(mapped)
            self._mark_tainted(out, mapped + tainted, name)
            return
        # Sums of several neurons (residual streams, gates) only matter once a weight reads them.
        mixed = set(self._new_mixed).union(*(self._mixed.get(id(t), ()) for t in mapped))
        self._new_mixed.clear()
        self._store(out, ids)
        if mixed:
            for t in tree_flatten(out)[0]:
                if isinstance(t, Tensor) and id(t) in self._ids and bool((self._ids[id(t)][1] == _MIXED).any()):
                    self._mixed[id(t)] = frozenset(mixed)
        if tainted:  # a mapped path meeting an unmapped one: the unmapped readers stay unmapped downstream
            self._mark_tainted(out, tainted, name)
        self._extend(name, flat, mapped, out)

    def _apply(self, name: str, rule: Any, func: Any, args: tuple, kwargs: dict, out: Any, mapped: list) -> Any:
        if callable(rule):
            return rule(OpCall(name, func, args, kwargs, out, self.ids_of, self._swap))
        if rule in ("activation", "elementwise", "norm", "identity", "dropout"):
            src = mapped[0]
            if not isinstance(out, Tensor):
                return None
            if any(t is not src for t in mapped) or out.shape != src.shape:
                return self._merge(out, mapped) if rule in ("activation", "elementwise") else None
            if rule == "norm":
                self._claim_norm(name, args, kwargs, self._ids[id(src)][1])
            return self._ids[id(src)][1]
        if rule == "binary":
            return self._merge(out, mapped)
        if rule == "layout":
            return func(*self._swap(args), **self._swap(kwargs))
        if rule == "pool" and len(mapped) == 1:
            return self._pool(mapped[0], out)
        if rule == "reduction" and len(mapped) == 1:
            return self._reduce(mapped[0], args, kwargs, out)
        return None

    # -- ids --------------------------------------------------------------------------------------------
    def ids_of(self, t: Tensor) -> Tensor | None:
        """The neuron ids of a traced tensor, ``None`` if it is not traced."""
        hit = self._ids.get(id(t))
        return None if hit is None else hit[1]

    def _store(self, out: Any, ids: Any) -> None:
        outs, _ = tree_flatten(out)
        idss, _ = tree_flatten(ids)
        for t, i in zip(outs, idss, strict=False):
            if isinstance(t, Tensor) and isinstance(i, Tensor) and t.shape == i.shape:
                self._ids[id(t)] = (t, i.to(_ID))

    def _swap(self, obj: Any) -> Any:
        def swap(x: Any) -> Any:
            if not isinstance(x, Tensor):
                return x
            hit = self._ids.get(id(x))
            if hit is not None and (x.is_floating_point() or x.is_complex()):
                return hit[1]
            if x.is_floating_point() or x.is_complex():
                return torch.full(x.shape, _NONE, dtype=_ID)  # untraced data joined in (e.g. a cat operand)
            return x.cpu()  # an index or mask (traced or not): keep its values

        return tree_map(swap, obj)

    def _emit(self, layer: NeuronLayer, out: Tensor, channel_dim: int) -> None:
        layer.called = True
        shape = [1] * out.dim()
        shape[channel_dim] = layer.size
        ids = (torch.arange(layer.size, dtype=_ID) + self._offsets[layer.name]).view(shape).expand(out.shape)
        self._ids[id(out)] = (out, ids)
        call = _Call(layer.name, out, [("", ())], [out], [False], [0])
        self._calls.append(call)
        self._nodes[id(out)] = (call, 0)
        if self._on_output is not None:
            self._on_output(layer.name, out)

    def _owners(self, ids: Tensor) -> list[str]:
        valid = ids[ids >= 0].unique()
        if valid.numel() == 0:
            return []
        idx = torch.bucketize(valid, self._bounds, right=True) - 1
        return [self._names[i] for i in idx.unique().tolist()]

    def _sources(self, tensors: Sequence[Tensor]) -> tuple[set[str], str | None]:
        """Layers whose neurons reach these tensors (mapped, summed or tainted), and the taint's op if any."""
        owners: set[str] = set()
        op = None
        for t in tensors:
            if id(t) in self._ids:
                owners.update(self._owners(self._ids[id(t)][1]))
                owners.update(self._mixed.get(id(t), ()))
            if id(t) in self._taint:
                owners.update(self._taint[id(t)][1])
                op = self._taint[id(t)][2]
        return owners, op

    def _merge(self, out: Any, mapped: list[Tensor]) -> Tensor | None:
        if not isinstance(out, Tensor):
            return None
        result = torch.full(out.shape, _NONE, dtype=_ID)
        for t in mapped:
            ids = torch.broadcast_to(self._ids[id(t)][1], out.shape)
            both = (result != _NONE) & (ids != _NONE) & (result != ids)
            if both.any():
                self._new_mixed.update(self._owners(result[both]) + self._owners(ids[both]))
            result = torch.where(both, torch.full_like(result, _MIXED), torch.where(ids != _NONE, ids, result))
        return result

    def _pool(self, src: Tensor, out: Tensor) -> Tensor | None:
        ids = self._ids[id(src)][1]
        if ids.dim() < 3 or out.dim() != ids.dim():
            return None
        per_channel = ids.flatten(2)
        if not bool((per_channel == per_channel[..., :1]).all()):
            return None
        return per_channel[..., 0].reshape(*ids.shape[:2], *([1] * (ids.dim() - 2))).expand(out.shape)

    def _reduce(self, src: Tensor, args: tuple, kwargs: dict, out: Tensor) -> Tensor | None:
        dims = args[1] if len(args) > 1 else kwargs.get("dim")
        if dims is None or not isinstance(out, Tensor):
            return None
        ids = self._ids[id(src)][1]
        dims = [d % ids.dim() for d in ((dims,) if isinstance(dims, int) else dims)]
        for d in dims:
            if not bool((ids == ids.narrow(d, 0, 1)).all()):
                return None
            ids = ids.narrow(d, 0, 1)
        return ids.reshape(out.shape) if ids.numel() == out.numel() else None

    def _mark_tainted(self, out: Any, sources: list[Tensor], op: str) -> None:
        owners, origin = self._sources(sources)
        if not owners:
            return
        for t in tree_flatten(out)[0]:
            if isinstance(t, Tensor):
                before = self._taint.get(id(t))
                merged = owners | (before[1] if before else frozenset())
                self._taint[id(t)] = (t, frozenset(merged), origin or op)

    def _mark_unmapped(self, sources: list[Tensor], reader: str, op: str) -> None:
        owners, _ = self._sources(sources)
        for owner in owners:
            self._layers[owner].unmapped_readers.add((reader, op))

    # -- readers ----------------------------------------------------------------------------------------
    def _weight_op(self, name: str, args: tuple, kwargs: dict, out: Any, mapped: list, tainted: list) -> bool:
        inp = args[0] if args else kwargs.get("input")
        weight = args[1] if len(args) > 1 else kwargs.get("weight")
        label = self._params.get(id(weight))
        if label is None:
            return False  # a computed weight: whose weights read the input is unknown (handled as unmapped)
        reader, module = label
        axis, _ = _WEIGHT_OPS[name]
        groups = args[6] if len(args) > 6 else kwargs.get("groups", 1)
        others = [t for t in mapped + tainted if t is not inp]
        if others:  # the weight or bias itself is computed from neurons (a hypernetwork)
            self._mark_unmapped(others, reader, name)
        channel_dim = -1 if name == "linear" else -(weight.dim() - 2) - 1
        self._read(reader, module, weight, axis, int(groups) if axis == 1 else 1, inp, channel_dim, tainted)
        hit = emitted_layer(name, args, kwargs, out, self._by_weight)
        if hit is not None:
            self._emit(*hit)
        return True

    def _matmul(self, args: tuple, mapped: list, tainted: list) -> bool:
        if len(args) != 2 or not isinstance(args[1], nn.Parameter) or args[1].dim() != 2:
            return False
        inp, weight = args
        if id(weight) not in self._params or any(t is not inp for t in mapped + tainted):
            return False
        reader, _ = self._params[id(weight)]
        self._read(reader, None, weight, 0, 1, inp, -1, tainted)
        return True

    def _attention(self, args: tuple, kwargs: dict, out: Any, mapped: list, tainted: list) -> None:
        params = [t for t in flat_tensors(args, kwargs) if id(t) in self._params and id(t) not in self._by_weight]
        reader = self._params[id(params[0])][0] if params else _ATTENTION
        self._mark_unmapped(mapped + tainted, reader, _ATTENTION)  # the input projections: not mapped
        self._finish_inputs(mapped)
        hit = emitted_layer(_ATTENTION, args, kwargs, out, self._by_weight)
        if hit is not None:
            self._emit(*hit)

    def _unknown(self, name: str, flat: list, mapped: list, tainted: list, out: Any) -> None:
        params = [t for t in flat if id(t) in self._params and id(t) not in self._ids]
        if params:  # an op with weights of its own (a GRU, a bilinear form): its reading weights are unknown
            self._mark_unmapped(mapped + tainted, self._params[id(params[0])][0], name)
            self._finish_inputs(mapped)
        self._mark_tainted(out, mapped + tainted, name)

    def _read(
        self,
        reader: str,
        module: nn.Module | None,
        weight: Tensor,
        axis: int,
        groups: int,
        inp: Tensor,
        channel_dim: int,
        tainted: list[Tensor],
    ) -> None:
        if any(t is inp for t in tainted):
            owners, op = self._sources([inp])
            for owner in owners:
                self._layers[owner].unmapped_readers.add((reader, op or "unknown op"))
        hit = self._ids.get(id(inp))
        if hit is None:
            return
        self._finish_inputs([inp])
        ids = hit[1]
        for name in self._mixed.get(id(inp), ()):
            self._layers[name].residual_readers.add(reader)
        rows = ids.movedim(channel_dim, -1).reshape(-1, ids.shape[channel_dim])
        owner = rows[0]
        consistent = (rows == owner).all(dim=0)
        for name in self._owners(rows[:, ~consistent]):
            self._layers[name].unmapped_readers.add((reader, "inconsistent input layout"))
        for name in self._owners(owner[consistent]):
            start = self._offsets[name]
            cols = torch.nonzero(consistent & (owner >= start) & (owner < start + self._layers[name].size))
            cols = cols.flatten()
            producer = self._layers[name]
            if any(c.name == reader for c in producer.consumers):
                continue  # a weight used twice (shared weights) reads the same columns each time
            neurons = (owner[cols] - start).long()
            producer.consumers.append(Consumer(reader, module, cols, neurons, weight, axis, groups))

    def _claim_norm(self, name: str, args: tuple, kwargs: dict, ids: Tensor) -> None:
        params = [a for a in (*args[1:], *kwargs.values()) if isinstance(a, Tensor)]
        hit = next((self._norms[id(p)] for p in params if id(p) in self._norms), None)
        if hit is None:
            return
        feature_dim = -1 if name in ("layer_norm", "rms_norm") else 1
        rows = ids.movedim(feature_dim, -1).reshape(-1, ids.shape[feature_dim])
        owners = self._owners(rows)
        if len(owners) != 1 or not bool((rows == rows[0]).all()):
            return
        layer = self._layers[owners[0]]
        expected = torch.arange(layer.size, dtype=_ID) + self._offsets[layer.name]
        is_own = rows.shape[1] == layer.size and torch.equal(rows[0], expected)
        if is_own and all(n != hit[0] for n, _ in layer.norms):
            layer.norms.append(hit)

    # -- ReDo's value -----------------------------------------------------------------------------------
    def _extend(self, name: str, flat: list[Tensor], mapped: list[Tensor], out: Any) -> None:
        """Follow values that still derive from one layer call and the model's own parameters alone.

        A value combined with data (``x - c * eps`` in a diffusion chain, an input added back) is no longer the
        neuron's activation: the call's value ends before it.
        """
        hits = [self._nodes.get(id(t)) for t in mapped]
        calls = {id(h[0]): h[0] for h in hits if h is not None}
        call = next(iter(calls.values())) if len(calls) == 1 else None
        pure = call is not None and not call.done and all(h is not None for h in hits) and isinstance(out, Tensor)
        pure = pure and all(id(t) in self._nodes or id(t) in self._constants or t.dim() == 0 for t in flat)
        if pure:
            ids = self._ids[id(out)][1]
            start = self._offsets[call.layer]
            inside = (ids >= start) & (ids < start + self._layers[call.layer].size)
            pure = bool((inside | (ids == _NONE)).all())
        if not pure:
            self._finish_inputs(mapped)
            return
        index = call.add(name, tuple(h[1] for h in hits), changes_values(name), out)
        self._nodes[id(out)] = (call, index)

    def _keep_before_write(self, t: Tensor) -> None:
        """An in-place op is about to overwrite a followed value: keep its values and ids as they are now."""
        call, index = self._nodes[id(t)]
        if call.done:
            return
        copy = t.detach().clone()
        call.values[index] = copy
        self._ids[id(copy)] = (copy, self._ids[id(t)][1])

    def _finish_inputs(self, tensors: list[Tensor]) -> None:
        for t in tensors:
            hit = self._nodes.get(id(t))
            if hit is not None:
                self._finish(*hit)

    def _finish(self, call: _Call, index: int, read: bool = True) -> None:
        """End a call's value: ``read`` when a weight or a mixing op took it, else at the end of the trace."""
        if call.done:
            return
        call.done = True
        post = call.post_of[index]
        site = self._site(call, post)
        layer = self._layers[call.layer]
        if layer.activation is None:  # the first call of a layer defines its activation
            layer.activation = site
        elif read and not layer.activation.same_path(site):
            layer.activation = _site_error(layer.activation, "its calls are followed by different ops")
        if self._on_activation is not None and site.error is None:
            self._on_activation(call.layer, call.output, *site.reduce(call.values[post]))

    def _site(self, call: _Call, post: int) -> ActivationSite:
        needed, stack = set(), [post]
        while stack:
            node = stack.pop()
            if node not in needed:
                needed.add(node)
                stack.extend(call.specs[node][1])
        order = sorted(needed)
        remap = {old: new for new, old in enumerate(order)}
        nodes = tuple((call.specs[i][0], tuple(remap[p] for p in call.specs[i][1])) for i in order[1:])
        name = "+".join(call.specs[i][0] for i in order[1:] if call.value_op[i]) or "identity"
        value = call.values[post]
        ids = self._ids[id(value)][1]
        layer = self._layers[call.layer]
        dim, positions, error = _neuron_axis(ids, self._offsets[call.layer], layer.size)
        if error is not None:
            error = f"after {name} ({' -> '.join(op for op, _ in nodes) or 'its output'}), {error}"
        return ActivationSite(nodes, dim, positions, name, error)

    def topology(self) -> dict[str, NeuronLayer]:
        """The traced layers by name. Call after the forward passes of interest have run."""
        for call in self._calls:
            if not call.done:  # a value returned, fed to the loss or looked at: the last value it reached
                self._finish(call, len(call.specs) - 1, read=False)
        self._ids.clear()
        self._taint.clear()
        self._nodes.clear()
        self._calls.clear()
        self._mixed.clear()
        return self._layers


def _neuron_axis(ids: Tensor, start: int, size: int) -> tuple[int | None, Tensor | None, str | None]:
    """The dim of a value that holds each of a layer's neurons once (constant along the others), and their order."""
    rel = torch.where((ids >= start) & (ids < start + size), ids - start, torch.full_like(ids, _NONE))
    if bool(((ids != _NONE) & (rel == _NONE)).any()):
        return None, None, "the value mixes in other neurons"
    if size == 1 and bool((rel == 0).all()):
        return None, None, None
    for d in range(ids.dim()):
        index = [0] * ids.dim()
        index[d] = slice(None)
        line = rel[tuple(index)]
        shape = [1] * ids.dim()
        shape[d] = -1
        if not torch.equal(rel, line.view(shape).expand_as(rel)):
            continue
        present = line >= 0
        neurons = line[present]
        if neurons.numel() != size or not torch.equal(neurons.sort().values, torch.arange(size, dtype=_ID)):
            continue
        order = torch.empty(size, dtype=torch.long)
        order[neurons.long()] = torch.nonzero(present).flatten()
        in_order = line.numel() == size and torch.equal(order, torch.arange(size))
        return d - ids.dim(), None if in_order else order, None
    return None, None, "no dimension holds each neuron once (e.g. flattened with its positions)"


def _site_error(site: ActivationSite, why: str) -> ActivationSite:
    return ActivationSite(site.nodes, site.dim, site.order, site.name, site.error or why)


def _inplace(name: str, kwargs: Mapping[str, Any]) -> bool:
    return kwargs.get("inplace") is True or name in _INPLACE_DUNDERS or (name.endswith("_") and name[:2] != "__")


def _size(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


def trace_topology(model: nn.Module, run: Callable[[], Any]) -> dict[str, NeuronLayer]:
    """Trace ``model``'s neuron layers by running ``run()`` (a forward pass, optionally with its loss).

    Args:
        model: The model to trace.
        run: A zero-argument callable that runs the forward computation, e.g. ``lambda: model(x)``.

    Returns:
        The model's ``Linear``/``Conv`` layers by qualified name, with their readers, norms and activations.

    Raises:
        TracingError: If an op table rule fails on a call of the forward.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> layers = trace_topology(net, lambda: net(torch.randn(3, 4)))
        >>> [c.name for c in layers["0"].consumers], layers["0"].activation_name, layers["2"].is_output
        (['2'], 'relu', True)
    """
    tracer = TopologyTracer(model)
    with tracer:
        run()
    return tracer.topology()


def explicit_consumers(layer: NeuronLayer, names: Sequence[str], modules: Mapping[str, nn.Module]) -> list[Consumer]:
    """Consumers given by name: each reads the layer's neurons in order, in contiguous blocks if flattened.

    Raises:
        ValueError: If a name is unknown or its input width is not a multiple of the layer's size.
    """
    consumers = []
    for name in names:
        if name not in modules:
            raise ValueError(
                f"`consumers` names {name!r} for layer {layer.name!r}, but it is not a Linear/Conv layer of the "
                f"model. Choose among {sorted(modules)}."
            )
        module = modules[name]
        width = module.in_features if isinstance(module, nn.Linear) else module.in_channels
        if width % layer.size:
            raise ValueError(
                f"`consumers`: {name!r} reads {width} inputs, not a multiple of {layer.name!r}'s {layer.size} "
                f"neurons; list only layers that read this layer's output directly or flattened."
            )
        cols = torch.arange(width)
        consumers.append(Consumer(name, module, cols, cols // (width // layer.size)))
    return consumers
