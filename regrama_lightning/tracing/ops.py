"""The tracer's op table: how each torch op carries neuron ids from its inputs to its output.

Every op the tracer sees is looked up here by name (``func.__name__``, e.g. ``"relu"``, ``"__add__"``,
``"max_pool2d"``). A *kind* says how the neuron ids flow and whether the op changes values (ReDo measures the
value after the last value-changing op that still belongs to one layer call):

================  ============================================================  ==============
kind              ids of the output                                             changes values
================  ============================================================  ==============
``activation``    same as the input (a per-element nonlinearity)                yes
``elementwise``   same as the input (``abs``, ``exp``, comparisons, ...)        yes
``norm``          same as the input; claims a per-feature norm module           yes
``binary``        broadcast merge of the inputs; different neurons -> mixed     yes
``identity``      same as the input (copies, casts, ``detach``)                 no
``dropout``       same as the input                                             no
``layout``        the op applied to the ids (reshape, permute, index, pad)      no
``pool``          per channel, over spatial dims                                no
``reduction``     reduced along the given dims, where the ids agree             no
``ignore``        nothing flows on (shape queries, ``backward``)                no
================  ============================================================  ==============

Ops not in the table are *unmapped*: their outputs carry a taint, and a layer that reads a tainted value
cannot have its reading columns zeroed, so a reset refuses. :func:`register_op` adds an op, with one of the
kinds above or with a rule of your own.

Ops with weights (``linear``, ``conv*``, attention) are not kinds of the table: the tracer and the probe find
the layers they compute and the weights they read with the dispatch helpers at the end of this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from regrama_lightning.tracing.layers import NO_NEURON

OpKind = Literal[
    "activation", "elementwise", "norm", "binary", "identity", "dropout", "layout", "pool", "reduction", "ignore"
]
VALUE_KINDS = frozenset({"activation", "elementwise", "norm", "binary", "custom"})
_KINDS = frozenset(OpKind.__args__)  # type: ignore[attr-defined]


@dataclass
class OpCall:
    """One call of an op, as a custom rule sees it.

    Attributes:
        name: The op's name.
        func: The callable that ran.
        args: Its positional arguments.
        kwargs: Its keyword arguments.
        out: What it returned.
        ids: ``ids(t)`` gives the neuron-id tensor of a traced tensor ``t`` (int32, ``t``'s shape, ``-1`` for
            elements of no neuron, ``-2`` for sums of several), or ``None`` if ``t`` is not traced.
        swap: ``swap(obj)`` replaces every tensor in ``obj`` by its ids (untraced float tensors by ``-1``s of
            their shape, integer/bool tensors kept): call ``func(*call.swap(args), **call.swap(kwargs))`` to
            move the ids exactly as the op moves the data.
    """

    name: str
    func: Any
    args: tuple
    kwargs: dict
    out: Any
    ids: Callable[[Tensor], Tensor | None]
    swap: Callable[[Any], Any]


OpRule = Callable[[OpCall], Any]
"""A custom rule: returns the ids of ``call.out`` (a tensor, or a pytree shaped like ``out``), or ``None`` when
this call cannot be mapped (the output is then tainted, as for an unknown op)."""


_BUILTIN: dict[str, OpKind] = {}


def _add(kind: OpKind, names: str) -> None:
    for name in names.split():
        _BUILTIN[name] = kind


_add(
    "activation",
    "relu relu_ relu6 leaky_relu leaky_relu_ gelu silu mish tanh tanh_ sigmoid sigmoid_ elu elu_ selu selu_ celu "
    "celu_ softplus hardtanh hardtanh_ hardswish hardsigmoid logsigmoid softsign tanhshrink rrelu prelu threshold "
    "swish",
)
_add(
    "elementwise",
    "abs neg __neg__ __pos__ exp sqrt rsqrt square pow __pow__ clamp clip clamp_min clamp_max nan_to_num log "
    "log1p expm1 sin cos sign reciprocal normalize gt lt ge le eq ne __gt__ __lt__ __ge__ __le__ __eq__ __ne__ "
    "logical_not __invert__",
)
_add("norm", "layer_norm batch_norm group_norm instance_norm rms_norm")
_add(
    "binary",
    "add add_ __add__ __radd__ __iadd__ sub sub_ __sub__ __rsub__ __isub__ mul mul_ __mul__ __rmul__ __imul__ "
    "div div_ __truediv__ __rtruediv__ __itruediv__ maximum minimum where addcmul lerp __and__ __or__ "
    "logical_and logical_or",
)
_add(
    "identity",
    "clone contiguous float half bfloat16 double to type type_as detach detach_ requires_grad_ data retain_grad",
)
_add("dropout", "dropout dropout_ alpha_dropout feature_alpha_dropout dropout1d dropout2d dropout3d")
_add(
    "layout",
    "view reshape flatten unflatten permute transpose t squeeze unsqueeze expand expand_as repeat cat concat "
    "concatenate stack hstack vstack split chunk unbind __getitem__ narrow select movedim moveaxis view_as "
    "reshape_as swapaxes tensor_split T mT flip roll pad",
)
_add(
    "pool",
    "max_pool1d max_pool2d max_pool3d avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d "
    "adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d max_pool1d_with_indices "
    "max_pool2d_with_indices max_pool3d_with_indices lp_pool1d lp_pool2d interpolate upsample",
)
_add("reduction", "mean sum amax amin")
# Shape queries and tensors made fresh from another's shape carry no neuron's values.
_add(
    "ignore",
    "dim size numel backward __len__ __format__ __repr__ item tolist __bool__ register_hook zeros_like ones_like "
    "empty_like full_like rand_like randn_like randint_like new_zeros new_ones new_empty new_full new_tensor",
)

_registered: dict[str, OpKind | OpRule] = {}
_value_flags: dict[str, bool] = {}


def register_op(op: str | Callable[..., Any], rule: OpKind | OpRule, *, changes_values: bool = True) -> None:
    """Teach the tracer how an op maps neurons (overrides a built-in entry of the same name).

    Args:
        op: The op's name as ``__torch_function__`` sees it (``func.__name__``: ``"relu"``, ``"__add__"``), or
            the function itself.
        rule: One of the kinds of the table in :mod:`regrama_lightning.tracing.ops`, or a function
            ``rule(call: OpCall) -> ids | None`` (see :class:`OpCall`). A rule that raises stops the trace with
            a :class:`TracingError` naming the op.
        changes_values: For a custom rule only: whether the op changes values (ReDo measures after it) or only
            moves them (a layout op).

    Raises:
        ValueError: If ``op`` has no name or ``rule`` is neither a known kind nor callable.

    Example:
        >>> register_op("my_gelu", "activation")
        >>> op_kind("my_gelu")
        'activation'
        >>> unregister_op("my_gelu")
    """
    name = op if isinstance(op, str) else getattr(op, "__name__", None)
    if not name:
        raise ValueError(f"`op` must be an op name or a named function, got {op!r}.")
    if isinstance(rule, str):
        if rule not in _KINDS:
            raise ValueError(f"`rule` must be one of {sorted(_KINDS)} or a callable rule(call), got {rule!r}.")
    elif not callable(rule):
        raise ValueError(f"`rule` must be one of {sorted(_KINDS)} or a callable rule(call), got {rule!r}.")
    if not isinstance(changes_values, bool):
        raise ValueError(f"`changes_values` must be True or False, got {changes_values!r}.")
    _registered[name] = rule
    _value_flags[name] = changes_values


def unregister_op(op: str | Callable[..., Any]) -> None:
    """Remove an op registered with :func:`register_op` (a built-in entry it overrode comes back)."""
    name = op if isinstance(op, str) else op.__name__
    _registered.pop(name, None)
    _value_flags.pop(name, None)


def op_rule(name: str) -> OpKind | OpRule | None:
    """The kind (or custom rule) of an op, ``None`` if the tracer does not know it."""
    return _registered.get(name, _BUILTIN.get(name))


def op_kind(name: str) -> str | None:
    """The kind of an op: a table kind, ``"custom"`` for a registered rule, or ``None`` if unknown."""
    rule = op_rule(name)
    return rule if isinstance(rule, str) or rule is None else "custom"


def changes_values(name: str) -> bool:
    """Whether ReDo's measured value includes this op (see the table)."""
    kind = op_kind(name)
    if kind == "custom":
        return _value_flags.get(name, True)
    return kind in VALUE_KINDS


class TracingError(RuntimeError):
    """A rule of the op table failed on a call: the op's arguments are not what the rule expects."""


def layout_ids(name: str, func: Any, args: tuple, kwargs: Mapping[str, Any]) -> Any:
    """The ``layout`` kind: the op applied to the ids (``args`` and ``kwargs`` hold ids in place of tensors).

    Padding adds elements of no neuron (``F.pad``'s fill value is data); its other modes (circular, reflect,
    replicate) copy neighbours, ids included.
    """
    if name != "pad":
        return func(*args, **kwargs)
    params = dict(zip(("input", "pad", "mode", "value"), args, strict=False)) | dict(kwargs)
    ids, mode = params["input"], params.get("mode") or "constant"
    if mode == "constant":
        return func(ids, params["pad"], mode="constant", value=NO_NEURON)
    return func(ids.double(), params["pad"], mode=mode).to(ids.dtype)  # exact: ids are small integers


def pool_ids(ids: Tensor, out: Any) -> Tensor | None:
    """The ``pool`` kind: each channel's id over the output's positions (``None`` if a channel mixes neurons)."""
    if not isinstance(out, Tensor) or ids.dim() < 3 or out.dim() != ids.dim():
        return None
    per_channel = ids.flatten(2)
    if not bool((per_channel == per_channel[..., :1]).all()):
        return None
    return per_channel[..., 0].reshape(*ids.shape[:2], *([1] * (ids.dim() - 2))).expand(out.shape)


def reduce_ids(ids: Tensor, args: tuple, kwargs: Mapping[str, Any], out: Any) -> Tensor | None:
    """The ``reduction`` kind: ids along the reduced dims, where they agree (``None`` where they do not)."""
    dims = args[1] if len(args) > 1 else kwargs.get("dim")
    if dims is None or not isinstance(out, Tensor):
        return None
    dims = [d % ids.dim() for d in ((dims,) if isinstance(dims, int) else dims)]
    for d in dims:
        if not bool((ids == ids.narrow(d, 0, 1)).all()):
            return None
        ids = ids.narrow(d, 0, 1)
    return ids.reshape(out.shape) if ids.numel() == out.numel() else None


# -- dispatch: which calls compute or read a layer -----------------------------------------------------------
# Ops whose weight argument reads their input: (input-axis of the weight, whether the op emits a layer's neurons).
WEIGHT_OPS = {
    "linear": (1, True),
    "conv1d": (1, True),
    "conv2d": (1, True),
    "conv3d": (1, True),
    "conv_transpose1d": (0, False),
    "conv_transpose2d": (0, False),
    "conv_transpose3d": (0, False),
}
MATMULS = frozenset({"matmul", "__matmul__", "mm"})
# nn.GRU / nn.LSTM / nn.RNN: their weights read the input (a reader the tracer cannot map to columns), and their
# outputs are computed from those products alone, so no input value flows on to the output's readers.
RECURRENT = frozenset({"gru", "lstm", "rnn_tanh", "rnn_relu"})
ATTENTION = "multi_head_attention_forward"
# Layout ops whose arguments say which part of the input they keep: two of them on one value are two nodes.
_SELECTING = frozenset({"__getitem__", "narrow", "select", "index_select"})
_INPLACE_DUNDERS = frozenset({"__iadd__", "__isub__", "__imul__", "__itruediv__", "__iand__", "__ior__"})


def is_inplace(name: str, kwargs: Mapping[str, Any]) -> bool:
    """Whether the op writes into its first argument."""
    return kwargs.get("inplace") is True or name in _INPLACE_DUNDERS or (name.endswith("_") and name[:2] != "__")


def op_label(name: str, args: tuple, kwargs: Mapping[str, Any]) -> str:
    """How a node of ReDo's path names an op: a selecting op with its arguments (``h[:, :2]`` and ``h[:, 2:]``)."""
    if name not in _SELECTING:
        return name
    return f"{name}({_signature(args[1:])[1:-1]}{', ' if kwargs and len(args) > 1 else ''}{_signature(kwargs)})"


def _signature(value: Any) -> str:
    """Non-tensor arguments spelled out; tensors (operands, index tensors) as ``T``."""
    if isinstance(value, Tensor):
        return "T"
    if isinstance(value, tuple | list):
        return "(" + ", ".join(_signature(v) for v in value) + ")"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_signature(v)}" for k, v in value.items())
    if isinstance(value, slice):
        bounds = [value.start, value.stop] + ([value.step] if value.step is not None else [])
        return ":".join("" if v is None else _signature(v) for v in bounds)
    return repr(value)


@torch.compiler.disable
def run_eagerly(mode: Any, func: Any, types: Any, args: tuple, kwargs: dict | None) -> Any:
    """Run ``mode``'s ``__torch_function__`` outside any graph Dynamo captures (a graph break, once per frame).

    The tracer and the probe call it when Dynamo inlines them, so that their bookkeeping (host reads, Python
    dicts keyed by tensor identity) never enters a compiled graph; in eager mode it costs one flag read.
    """
    return type(mode).__torch_function__(mode, func, types, args, kwargs)


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
    if name == ATTENTION:
        layer = next((by_weight[id(t)] for t in flat_tensors(args, kwargs) if id(t) in by_weight), None)
        return (layer, out[0], -1) if layer is not None and isinstance(out, tuple) else None
    if name not in WEIGHT_OPS or not WEIGHT_OPS[name][1]:
        return None
    weight = args[1] if len(args) > 1 else kwargs.get("weight")
    layer = by_weight.get(id(weight))
    if layer is None:
        return None
    return layer, out, -1 if name == "linear" else -(weight.dim() - 2) - 1
