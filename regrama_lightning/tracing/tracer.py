"""The tracer: which neurons feed which weights, and where each layer's activation is, from real forward passes.

Every output unit of a ``Linear``/``Conv{1,2,3}d`` is a neuron. A reset must know which columns of which later
weights read it, which per-feature norm is its own and (for ReDo) which value of the graph is its activation.
Real forward passes run under a ``TorchFunctionMode`` that carries, next to every tensor derived from a layer's
output, an integer tensor of the same shape naming each element's neuron; the op table of
:mod:`regrama_lightning.tracing.ops` says how each op moves those ids. An unknown op taints its output, and a
weight that reads a tainted value is reported, never guessed. Readers: ``Linear``/``Conv``, ``ConvTranspose``
(input rows), bare parameters used as weights (``F.linear(h, W)``, ``h @ W``); ``nn.MultiheadAttention`` maps
its ``out_proj`` neurons, its input projections are an unmapped reader.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

from regrama_lightning.tracing.layers import ID_DTYPE, MIXED, NO_NEURON, NeuronLayer
from regrama_lightning.tracing.ops import (
    ATTENTION,
    MATMULS,
    RECURRENT,
    WEIGHT_OPS,
    OpCall,
    TracingError,
    emitted_layer,
    flat_tensors,
    is_inplace,
    layout_ids,
    op_name,
    op_rule,
    pool_ids,
    reduce_ids,
    run_eagerly,
)
from regrama_lightning.tracing.readers import WeightReads, columns_read
from regrama_lightning.tracing.selection import NORM_LAYERS, clean_name, layer_size, neuron_layers
from regrama_lightning.tracing.sites import ActivationFollower


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
        self._layers = {n: NeuronLayer(n, m, layer_size(m)) for n, m in neuron_layers(model).items()}
        self._by_weight = {id(layer.module.weight): layer for layer in self._layers.values()}
        self._offsets: dict[str, int] = {}
        start = 0
        for name, layer in self._layers.items():
            self._offsets[name] = start
            start += layer.size
        self._bounds = torch.tensor([self._offsets[n] for n in self._layers] + [start], dtype=ID_DTYPE)
        self._names = list(self._layers)
        self._norms: dict[int, tuple[str, nn.Module]] = {}
        # A parameter used as a weight is named after its module when it is that module's `weight`.
        self._params: dict[int, tuple[str, nn.Module | None]] = {}
        for module_name, module in model.named_modules():
            if isinstance(module, NORM_LAYERS):
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
        self._derived: dict[int, Tensor] = {}  # views and functions of the model's own tensors alone (kept alive)
        self._ids: dict[int, tuple[Tensor, Tensor]] = {}  # id(tensor) -> (tensor kept alive, neuron ids)
        self._reads: dict[int, WeightReads] = {}  # id(weight) -> what it read, over all its calls
        self._follower = ActivationFollower(self._layers, self._offsets, self._ids, self._is_constant, on_activation)
        self._taint: dict[int, tuple[Tensor, frozenset[str], str]] = {}
        self._mixed: dict[int, frozenset[str]] = {}  # id(tensor) -> layers summed into its MIXED elements
        self._new_mixed: set[str] = set()
        self._on_output = on_output

    # -- the mode ---------------------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if torch.compiler.is_compiling():  # Dynamo is inlining this mode: keep it out of the graph
            return run_eagerly(self, func, types, args, kwargs)
        kwargs = kwargs or {}
        name = op_name(func)
        if is_inplace(name, kwargs) and args and isinstance(args[0], Tensor) and self._follower.follows(args[0]):
            self._follower.keep_before_write(args[0])
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
        if name in WEIGHT_OPS and self._weight_op(name, args, kwargs, out, mapped, tainted):
            return
        if name == ATTENTION:
            self._attention(args, kwargs, out, mapped, tainted)
            return
        if not mapped and not tainted:
            if flat and all(self._is_constant(t) for t in flat):  # e.g. `self.pos[: x.shape[1]]`
                self._derived.update((id(t), t) for t in tree_flatten(out)[0] if isinstance(t, Tensor))
            return
        if name in MATMULS and self._matmul(args, mapped, tainted):
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
            self._follower.finish_inputs(mapped)
            self._mark_tainted(out, mapped + tainted, name)
            return
        # Sums of several neurons (residual streams, gates) only matter once a weight reads them.
        mixed = set(self._new_mixed).union(*(self._mixed.get(id(t), ()) for t in mapped))
        self._new_mixed.clear()
        self._store(out, ids)
        if mixed:
            for t in tree_flatten(out)[0]:
                if isinstance(t, Tensor) and id(t) in self._ids and bool((self._ids[id(t)][1] == MIXED).any()):
                    self._mixed[id(t)] = frozenset(mixed)
        if tainted:  # a mapped path meeting an unmapped one: the unmapped readers stay unmapped downstream
            self._mark_tainted(out, tainted, name)
        self._follower.extend(name, args, kwargs, flat, mapped, out)

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
            return layout_ids(name, func, self._swap(args), self._swap(kwargs))
        if rule == "pool" and len(mapped) == 1:
            return pool_ids(self._ids[id(mapped[0])][1], out)
        if rule == "reduction" and len(mapped) == 1:
            return reduce_ids(self._ids[id(mapped[0])][1], args, kwargs, out)
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
                self._ids[id(t)] = (t, i.to(ID_DTYPE))

    def _swap(self, obj: Any) -> Any:
        def swap(x: Any) -> Any:
            if not isinstance(x, Tensor):
                return x
            hit = self._ids.get(id(x))
            if hit is not None and (x.is_floating_point() or x.is_complex()):
                return hit[1]
            if x.is_floating_point() or x.is_complex():
                return torch.full(x.shape, NO_NEURON, dtype=ID_DTYPE)  # untraced data joined in (e.g. a cat operand)
            return x.cpu()  # an index or mask (traced or not): keep its values

        return tree_map(swap, obj)

    def _emit(self, layer: NeuronLayer, out: Tensor, channel_dim: int) -> None:
        layer.called = True
        shape = [1] * out.dim()
        shape[channel_dim] = layer.size
        ids = (torch.arange(layer.size, dtype=ID_DTYPE) + self._offsets[layer.name]).view(shape).expand(out.shape)
        self._ids[id(out)] = (out, ids)
        self._follower.start(layer, out)
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
        result = torch.full(out.shape, NO_NEURON, dtype=ID_DTYPE)
        for t in mapped:
            ids = torch.broadcast_to(self._ids[id(t)][1], out.shape)
            both = (result != NO_NEURON) & (ids != NO_NEURON) & (result != ids)
            if both.any():
                self._new_mixed.update(self._owners(result[both]) + self._owners(ids[both]))
            result = torch.where(both, torch.full_like(result, MIXED), torch.where(ids != NO_NEURON, ids, result))
        return result

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
        axis, _ = WEIGHT_OPS[name]
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
        reader = self._params[id(params[0])][0] if params else ATTENTION
        self._mark_unmapped(mapped + tainted, reader, ATTENTION)  # the input projections: not mapped
        self._follower.finish_inputs(mapped)
        hit = emitted_layer(ATTENTION, args, kwargs, out, self._by_weight)
        if hit is not None:
            self._emit(*hit)

    def _unknown(self, name: str, flat: list, mapped: list, tainted: list, out: Any) -> None:
        params = [t for t in flat if id(t) in self._params and id(t) not in self._ids]
        if params:  # an op with weights of its own (a GRU, a bilinear form): its reading weights are unknown
            self._mark_unmapped(mapped + tainted, self._params[id(params[0])][0], name)
            self._follower.finish_inputs(mapped)
            if name in RECURRENT:  # its inputs reach its outputs only through its weights, as a Linear's do
                return
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
        self._follower.finish_inputs([inp])
        ids = hit[1]
        for name in self._mixed.get(id(inp), ()):
            self._layers[name].residual_readers.add(reader)
        cols, neurons, inconsistent = columns_read(ids, channel_dim)
        for name in self._owners(inconsistent):
            self._layers[name].unmapped_readers.add((reader, "inconsistent input layout"))
        reads = self._reads.setdefault(id(weight), WeightReads(reader, module, weight, axis, groups))
        reads.columns.append(cols)
        reads.ids.append(neurons)

    def _is_constant(self, t: Tensor) -> bool:
        return id(t) in self._constants or id(t) in self._derived

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
        expected = torch.arange(layer.size, dtype=ID_DTYPE) + self._offsets[layer.name]
        is_own = rows.shape[1] == layer.size and torch.equal(rows[0], expected)
        if is_own and all(n != hit[0] for n, _ in layer.norms):
            layer.norms.append(hit)

    def topology(self) -> dict[str, NeuronLayer]:
        """The traced layers by name. Call after the forward passes of interest have run."""
        self._follower.finish_all()
        for reads in self._reads.values():
            reads.add_to(self._layers, self._offsets, self._owners)
        self._reads.clear()
        self._ids.clear()
        self._taint.clear()
        self._mixed.clear()
        self._derived.clear()
        return self._layers


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
