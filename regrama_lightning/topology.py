"""Which neurons a model has, and who reads them, from one traced forward pass.

Every output unit of a ``Linear`` or ``Conv{1,2,3}d`` is a neuron. To reset a neuron we must know which input
columns of which later layers read it (to zero its outgoing weights), which per-feature norm belongs to it,
and (for ReDo) which activation follows it. We learn all of that by running one real forward pass under a
``TorchFunctionMode`` that carries, next to every tensor derived from a layer's output, an integer tensor of
the same shape naming the neuron each element comes from. Because it watches the real calls, Python control
flow, sampling and several losses are all fine; only ops it does not understand are reported.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

NEURON_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORM_LAYERS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
_ID = torch.int32  # neuron ids; half the memory of int64 for the one traced batch
_NONE = -1  # element derived from no traced neuron
_MIXED = -2  # element that sums the outputs of several neurons (a residual stream, a gate)

_ACTIVATIONS = {
    "relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "gelu", "silu", "mish", "tanh", "tanh_", "sigmoid",
    "sigmoid_", "elu", "elu_", "selu", "selu_", "celu", "celu_", "softplus", "hardtanh", "hardtanh_", "hardswish",
    "hardsigmoid", "logsigmoid", "softsign", "tanhshrink", "rrelu", "prelu", "threshold", "swish",
}  # fmt: skip
_NORMS = {"layer_norm", "batch_norm", "group_norm", "instance_norm", "rms_norm"}
_DROPOUTS = {"dropout", "dropout_", "alpha_dropout", "feature_alpha_dropout", "dropout1d", "dropout2d", "dropout3d"}
_SAME_SHAPE = {
    "clone", "contiguous", "float", "half", "bfloat16", "double", "to", "type", "type_as", "detach", "abs", "neg",
    "__neg__", "__pos__", "exp", "sqrt", "square", "pow", "__pow__", "clamp", "clip", "nan_to_num", "requires_grad_",
    "normalize", "data",
}  # fmt: skip
_BINARY = {
    "add", "add_", "__add__", "__radd__", "__iadd__", "sub", "sub_", "__sub__", "__rsub__", "__isub__", "mul",
    "mul_", "__mul__", "__rmul__", "__imul__", "div", "div_", "__truediv__", "__rtruediv__", "__itruediv__",
    "maximum", "minimum", "where",
}  # fmt: skip
_SHAPE = {
    "view", "reshape", "flatten", "unflatten", "permute", "transpose", "t", "squeeze", "unsqueeze", "expand",
    "expand_as", "repeat", "cat", "concat", "concatenate", "stack", "hstack", "vstack", "split", "chunk", "unbind",
    "__getitem__", "narrow", "select", "movedim", "moveaxis", "view_as", "reshape_as", "swapaxes", "tensor_split",
    "T", "mT",
}  # fmt: skip
_POOLS = {
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
    "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d",
    "adaptive_max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices",
    "lp_pool1d", "lp_pool2d", "interpolate", "upsample",
}  # fmt: skip
_REDUCTIONS = {"mean", "sum", "amax", "amin"}
_CONVS = {"conv1d": 1, "conv2d": 2, "conv3d": 3}
# Calls that never read a traced value in a way that matters (shape queries, the backward call itself).
_IGNORED = {"dim", "size", "numel", "backward", "__len__", "__format__", "__repr__", "item", "tolist", "__bool__"}


@dataclass
class Consumer:
    """A layer that reads a neuron layer's output.

    Attributes:
        name: Qualified module name of the reading layer.
        module: The reading ``Linear``/``Conv`` module.
        columns: Input positions of ``module`` (Linear input features, Conv input channels) that read the layer.
        neurons: For each entry of ``columns``, the index of the neuron it reads.
    """

    name: str
    module: nn.Module
    columns: Tensor
    neurons: Tensor


@dataclass
class NeuronLayer:
    """One ``Linear``/``Conv`` layer, its neurons and everything a reset must touch.

    Attributes:
        name: Qualified module name.
        module: The layer.
        size: Number of neurons (``out_features`` or ``out_channels``).
        consumers: Layers that read this layer's output, with the column mapping.
        norms: Per-feature norm modules whose feature ``j`` is this layer's neuron ``j``.
        residual_readers: Layers that read this layer's output summed (or multiplied) with another traced
            value, as from a residual stream: those outgoing columns are shared with other neurons.
        unmapped_readers: ``(reader layer, op)`` pairs where the output reaches a layer through an op the tracer
            cannot map to columns.
        activation: Maps this layer's raw output to its post-activation value (ReDo's ``h``); found in the graph.
        activation_name: Name of that activation, ``"identity"`` if none follows the layer.
        called: Whether the traced pass ran the layer at all.
    """

    name: str
    module: nn.Module
    size: int
    consumers: list[Consumer] = field(default_factory=list)
    norms: list[tuple[str, nn.Module]] = field(default_factory=list)
    residual_readers: set[str] = field(default_factory=set)
    unmapped_readers: set[tuple[str, str]] = field(default_factory=set)
    activation: Callable[[Tensor], Tensor] | None = None
    activation_name: str = "identity"
    called: bool = False

    @property
    def writes_residual(self) -> bool:
        """The output reaches a layer only mixed with other neurons' outputs (a residual stream, a gate)."""
        return bool(self.residual_readers)

    @property
    def is_output(self) -> bool:
        """No traced layer reads this layer: it is a network output (head)."""
        return not self.consumers and not self.residual_readers and not self.unmapped_readers

    def restricted(self, keep: Callable[[str], bool]) -> NeuronLayer:
        """A copy that only counts the readers for which ``keep(reader_name)`` holds.

        A SAC actor's head feeds the critic, but the critic's input columns are not the actor's outgoing weights:
        restricting readers to the layer's own network makes the head an output layer again.
        """
        return replace(
            self,
            consumers=[c for c in self.consumers if keep(c.name)],
            residual_readers={r for r in self.residual_readers if keep(r)},
            unmapped_readers={(r, op) for r, op in self.unmapped_readers if keep(r)},
        )


def neuron_layers(model: nn.Module) -> dict[str, nn.Module]:
    """All ``Linear``/``Conv{1,2,3}d`` modules of ``model`` by qualified name (``torch.compile`` prefixes removed)."""
    return {clean_name(n): m for n, m in model.named_modules() if isinstance(m, NEURON_LAYERS)}


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


@dataclass
class _Call:
    """One call of a layer: its ReDo value is reported once, whichever derived tensor completes it first."""

    layer: str
    output: Tensor
    done: bool = False


@dataclass
class _Chain:
    """A value that is still a pure per-element function of one layer call's output (norm, dropout, activation)."""

    call: _Call
    ops: tuple[Callable[[Tensor], Tensor], ...]


class TopologyTracer(TorchFunctionMode):
    """Watches one real forward pass and records which neurons feed which layers.

    Use it as a context manager around the forward (and loss) computation, then call :meth:`topology`. The
    callbacks enter it for the first training batch; :func:`trace_topology` wraps it for plain PyTorch.

    Args:
        model: The model whose ``Linear``/``Conv`` layers are traced.
        on_output: Called as ``on_output(name, output)`` for every traced layer call (lets a gatherer measure
            the traced batch too).
        on_activation: Called as ``on_activation(name, output, post_activation)`` once the value that ReDo
            measures for that call is known.
    """

    def __init__(
        self,
        model: nn.Module,
        on_output: Callable[[str, Tensor], None] | None = None,
        on_activation: Callable[[str, Tensor, Tensor], None] | None = None,
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
        for name, module in model.named_modules():
            if isinstance(module, _NORM_LAYERS):
                for tensor in (getattr(module, "weight", None), getattr(module, "running_mean", None)):
                    if tensor is not None:
                        self._norms[id(tensor)] = (clean_name(name), module)
        self._ids: dict[int, tuple[Tensor, Tensor]] = {}  # id(tensor) -> (tensor kept alive, neuron ids)
        self._chains: dict[int, _Chain] = {}
        self._taint: dict[int, tuple[Tensor, frozenset[str], str]] = {}
        self._mixed: dict[int, frozenset[str]] = {}  # id(tensor) -> layers summed into its _MIXED elements
        self._new_mixed: set[str] = set()
        self._on_output = on_output
        self._on_activation = on_activation

    # -- the mode ---------------------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name == "__get__":  # a property: `x.T`, `x.data`, `x.requires_grad`
            name = getattr(getattr(func, "__self__", None), "__name__", name)
        if name in _IGNORED or not any(isinstance(t, Tensor) for t in tree_flatten(out)[0]):
            return out  # shape queries, hooks, flags: nothing flows on to a layer
        with torch.no_grad():
            self._propagate(name, func, args, kwargs, out)
        return out

    def _propagate(self, name: str, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        flat, _ = tree_flatten((args, kwargs))
        mapped = [t for t in flat if isinstance(t, Tensor) and id(t) in self._ids]
        tainted = [t for t in flat if isinstance(t, Tensor) and id(t) in self._taint]
        layer = None
        if name == "linear" or name in _CONVS:
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            layer = self._by_weight.get(id(weight))
        if layer is not None:
            inp = args[0] if args else kwargs["input"]
            self._read(layer, inp, tainted)
            self._emit(layer, out, channel_dim=-1 if name == "linear" else -(_CONVS[name] + 1))
            return
        if not mapped and not tainted:
            return
        for t in mapped:
            self._end_chain(t, name)
        if tainted and not mapped:
            self._mark_tainted(out, tainted, name)
            return
        try:
            ids = self._rule(name, func, args, kwargs, out, mapped)
        except Exception:  # an op whose arguments the rules do not cover: unmapped, not fatal
            ids = None
        if ids is None:
            self._mark_tainted(out, mapped + tainted, name)
            return
        # Sums of several neurons (residual streams, gates) only matter once a layer reads them.
        mixed = set(self._new_mixed).union(*(self._mixed.get(id(t), ()) for t in mapped))
        self._new_mixed.clear()
        self._store(out, ids)
        if mixed:
            for t in tree_flatten(out)[0]:
                if isinstance(t, Tensor) and id(t) in self._ids and bool((self._ids[id(t)][1] == _MIXED).any()):
                    self._mixed[id(t)] = frozenset(mixed)
        if len(mapped) == 1 and isinstance(out, Tensor):
            self._extend_chain(mapped[0], name, func, args, kwargs, out)

    def _rule(self, name: str, func: Any, args: tuple, kwargs: dict, out: Any, mapped: list[Tensor]) -> Any:
        if name in _ACTIVATIONS or name in _NORMS or name in _DROPOUTS or name in _SAME_SHAPE:
            src = mapped[0]
            if len(mapped) > 1 or not isinstance(out, Tensor) or out.shape != src.shape:
                return None
            self._claim_norm(name, args, kwargs, self._ids[id(src)][1])
            return self._ids[id(src)][1]
        if name in _BINARY:
            return self._merge(out, mapped)
        if name in _SHAPE:
            return func(*self._swap(args), **self._swap(kwargs))
        if name in _POOLS and len(mapped) == 1:
            return self._pool(mapped[0], out)
        if name in _REDUCTIONS and len(mapped) == 1:
            return self._reduce(mapped[0], args, kwargs, out)
        return None

    # -- ids --------------------------------------------------------------------------------------------
    def _store(self, out: Any, ids: Any) -> None:
        outs, _ = tree_flatten(out)
        idss, _ = tree_flatten(ids)
        for t, i in zip(outs, idss, strict=False):
            if isinstance(t, Tensor) and isinstance(i, Tensor) and t.shape == i.shape:
                self._ids[id(t)] = (t, i)
                self._taint.pop(id(t), None)

    def _swap(self, obj: Any) -> Any:
        def swap(x: Any) -> Any:
            if not isinstance(x, Tensor):
                return x
            hit = self._ids.get(id(x))
            if hit is not None:
                return hit[1]
            if x.is_floating_point() or x.is_complex():
                return torch.full(x.shape, _NONE, dtype=_ID)  # untraced data joined in (e.g. a cat operand)
            return x.cpu()  # an index or mask: keep its values

        return tree_map(swap, obj)

    def _emit(self, layer: NeuronLayer, out: Tensor, channel_dim: int) -> None:
        layer.called = True
        shape = [1] * out.dim()
        shape[channel_dim] = layer.size
        ids = (torch.arange(layer.size, dtype=_ID) + self._offsets[layer.name]).view(shape).expand(out.shape)
        self._ids[id(out)] = (out, ids)
        self._chains[id(out)] = _Chain(_Call(layer.name, out), ())
        if self._on_output is not None:
            self._on_output(layer.name, out)

    def _owners(self, ids: Tensor) -> list[str]:
        valid = ids[ids >= 0].unique()
        if valid.numel() == 0:
            return []
        idx = torch.bucketize(valid, self._bounds, right=True) - 1
        return [self._names[i] for i in idx.unique().tolist()]

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
        owners: set[str] = set()
        for t in sources:
            if id(t) in self._ids:
                owners.update(self._owners(self._ids[id(t)][1]))
                owners.update(self._mixed.get(id(t), ()))
            if id(t) in self._taint:
                owners.update(self._taint[id(t)][1])
                op = self._taint[id(t)][2]
        if not owners:
            return
        for t in tree_flatten(out)[0]:
            if isinstance(t, Tensor):
                self._taint[id(t)] = (t, frozenset(owners), op)

    # -- consumers, norms and activations ----------------------------------------------------------------
    def _read(self, consumer: NeuronLayer, inp: Tensor, tainted: list[Tensor]) -> None:
        for t in tainted:
            if t is inp:
                _, owners, op = self._taint[id(t)]
                for owner in owners:
                    self._layers[owner].unmapped_readers.add((consumer.name, op))
        hit = self._ids.get(id(inp))
        if hit is None:
            return
        self._end_chain(inp, "linear")
        ids = hit[1]
        for name in self._mixed.get(id(inp), ()):
            self._layers[name].residual_readers.add(consumer.name)
        if isinstance(consumer.module, nn.Linear):
            rows = ids.reshape(-1, ids.shape[-1])
        else:
            channel_dim = ids.dim() - (consumer.module.weight.dim() - 2) - 1
            rows = ids.movedim(channel_dim, -1).reshape(-1, ids.shape[channel_dim])
        owner = rows[0]
        consistent = (rows == owner).all(dim=0)
        for name in self._owners(rows[:, ~consistent]):
            self._layers[name].unmapped_readers.add((consumer.name, "inconsistent input layout"))
        for name in self._owners(owner[consistent]):
            start = self._offsets[name]
            cols = torch.nonzero(consistent & (owner >= start) & (owner < start + self._layers[name].size))
            cols = cols.flatten()
            producer = self._layers[name]
            if any(c.name == consumer.name for c in producer.consumers):
                continue  # a layer called twice (shared weights) reads the same columns each time
            neurons = (owner[cols] - start).long()
            producer.consumers.append(Consumer(consumer.name, consumer.module, cols, neurons))

    def _claim_norm(self, name: str, args: tuple, kwargs: dict, ids: Tensor) -> None:
        if name not in _NORMS:
            return
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

    def _extend_chain(self, src: Tensor, name: str, func: Any, args: tuple, kwargs: dict, out: Tensor) -> None:
        chain = self._chains.get(id(src))
        if chain is None or chain.call.done:
            return
        # ReDo measures the activation, not its dropped-out copy.
        op = None if name in _DROPOUTS else _replayable(name, func, args, kwargs, src)
        ops = chain.ops if op is None else (*chain.ops, op)
        if name in _ACTIVATIONS:
            self._finish_chain(chain.call, ops, name, out)
        else:
            self._chains[id(out)] = _Chain(chain.call, ops)

    def _end_chain(self, t: Tensor, op: str) -> None:
        chain = self._chains.get(id(t))
        if chain is None or chain.call.done:
            return
        if op in _ACTIVATIONS or op in _NORMS or op in _DROPOUTS or op in _SAME_SHAPE:
            return  # the chain goes on through this op
        self._finish_chain(chain.call, chain.ops, _chain_name(chain.ops), t)

    def _finish_chain(self, call: _Call, ops: tuple, act_name: str, post: Tensor) -> None:
        call.done = True
        target = self._layers[call.layer]
        if target.activation is None:  # the first call of a layer defines its activation
            target.activation = _compose(ops)
            target.activation_name = act_name if ops else "identity"
        if self._on_activation is not None:
            self._on_activation(call.layer, call.output, post)

    def topology(self) -> dict[str, NeuronLayer]:
        """The traced layers by name. Call after the forward passes of interest have run."""
        for layer in self._layers.values():
            if layer.activation is None:
                layer.activation = _compose(())
        self._ids.clear()
        self._taint.clear()
        self._chains.clear()
        self._mixed.clear()
        return self._layers


def _size(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


def _chain_name(ops: tuple) -> str:
    return "+".join(getattr(op, "op_name", "op") for op in ops) or "identity"


def _replayable(name: str, func: Any, args: tuple, kwargs: dict, src: Tensor) -> Callable[[Tensor], Tensor]:
    """Re-apply ``func`` to a new tensor in ``src``'s place, without in-place writes or running-stat updates."""
    pos = next(i for i, a in enumerate(args) if a is src) if any(a is src for a in args) else None
    kw = {k: v for k, v in kwargs.items() if k != "inplace"}
    if name == "batch_norm":
        # batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps): batch statistics
        # in training mode, and never an update of the running ones.
        training = kw.get("training", args[5] if len(args) > 5 else False)
        if training:
            args = tuple(None if i in (1, 2) else a for i, a in enumerate(args))
            kw.update({k: None for k in ("running_mean", "running_var") if k in kw})
    base = name.rstrip("_") if name.endswith("_") and not name.startswith("__") else name
    if base != name and hasattr(torch, base):
        func = getattr(torch, base)

    def op(t: Tensor) -> Tensor:
        if pos is None:
            return func(t, **kw)
        call = list(args)
        call[pos] = t
        return func(*call, **kw)

    op.op_name = base  # type: ignore[attr-defined]
    return op


def _compose(ops: Iterable[Callable[[Tensor], Tensor]]) -> Callable[[Tensor], Tensor]:
    ops = tuple(ops)

    def activation(t: Tensor) -> Tensor:
        for op in ops:
            t = op(t)
        return t

    return activation


def trace_topology(model: nn.Module, run: Callable[[], Any]) -> dict[str, NeuronLayer]:
    """Trace ``model``'s neuron layers by running ``run()`` (a forward pass, optionally with its loss).

    Args:
        model: The model to trace.
        run: A zero-argument callable that runs the forward computation, e.g. ``lambda: model(x)``.

    Returns:
        The model's ``Linear``/``Conv`` layers by qualified name, with their consumers, norms and activations.

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
