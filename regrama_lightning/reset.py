"""Resetting neurons: re-draw incoming weights, zero outgoing weights, restore norms, clear optimizer state.

Each step is a function of its own, so that an action (see :mod:`regrama_lightning.actions`) can combine them.

Everything is masked tensor arithmetic on the parameters' device (no host syncs, no parameter replaced), under
``torch.no_grad``, with the re-draw seeded and drawn from a forked RNG so training's own random stream (and
every DDP rank's copy of the model) is unaffected by when resets happen.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from regrama_lightning.scores import inactive_mask
from regrama_lightning.tracing.layers import Consumer, NeuronLayer

InitFn = Callable[[nn.Module], None]


def orthogonal_init(module: nn.Module, gain: float = 2**0.5) -> None:
    """Orthogonal weights (scaled by ``gain``, sqrt(2) for ReLU) and zero bias: an ``init_fn`` for RL networks.

    Example:
        >>> from regrama_lightning import ReGraMa
        >>> callback = ReGraMa(init_fn=orthogonal_init)
    """
    nn.init.orthogonal_(module.weight, gain=gain)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)


def select_neurons(scores: Tensor, tau: float, max_fraction: float | None = None) -> Tensor:
    """Neurons to reset: score ``<= tau``, keeping at most ``floor(max_fraction * size)`` of the lowest.

    Example:
        >>> select_neurons(torch.tensor([0.0, 2.0, 0.005, 1.0]), tau=0.01).tolist()
        [True, False, True, False]
        >>> select_neurons(torch.tensor([0.0, 2.0, 0.005, 1.0]), tau=0.01, max_fraction=0.25).tolist()
        [True, False, False, False]
    """
    mask = inactive_mask(scores, tau)
    if max_fraction is None:
        return mask
    k = math.floor(max_fraction * scores.numel())
    if k >= scores.numel():
        return mask
    key = torch.where(mask, scores, torch.inf)
    keep = torch.zeros_like(mask)
    keep[key.topk(k, largest=False).indices] = True
    return mask & keep


def fresh_values(module: nn.Module, seed: int, init_fn: InitFn | None = None) -> dict[str, Tensor]:
    """The values ``module``'s initialisation draws for its own parameters and buffers, ``module`` left as it was.

    The draw runs on the module itself, from a seeded RNG forked off the global one, and its own values are then
    put back: no copy of the module is made, so a module holding anything that cannot be copied (a generator, a
    process handle) is reset like any other.

    Args:
        module: The layer or norm module.
        seed: Seed of the draw.
        init_fn: Re-initialises a module in place; defaults to its ``reset_parameters``.

    Returns:
        The drawn value of each parameter and buffer (``recurse=False``), by attribute name.
    """
    own = dict(module.named_parameters(recurse=False)) | dict(module.named_buffers(recurse=False))
    saved = {n: t.detach().clone() for n, t in own.items()}
    device = next(iter(own.values())).device if own else torch.device("cpu")
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    with torch.random.fork_rng(devices=devices, device_type=device.type if device.type != "cpu" else "cuda"):
        torch.manual_seed(seed)
        if init_fn is not None:
            init_fn(module)
        else:
            module.reset_parameters()
    fresh: dict[str, Tensor] = {}
    for name, tensor in own.items():
        now = getattr(module, name)
        fresh[name] = now.detach().clone()
        if now is not tensor:  # init_fn replaced the tensor: the optimizer still holds the original
            setattr(module, name, tensor)
        tensor.detach().copy_(saved[name])
    return fresh


def _rows(mask: Tensor, like: Tensor) -> Tensor:
    return mask.view(-1, *([1] * (like.dim() - 1)))


def outgoing_mask(consumer: Consumer, mask: Tensor) -> Tensor:
    """Entries of a reader's weight that read the masked neurons (a boolean tensor shaped like the weight)."""
    weight = consumer.weight
    cols = torch.zeros(consumer.width, dtype=torch.bool, device=weight.device)
    cols[consumer.columns.to(weight.device)] = mask[consumer.neurons.to(mask.device)]
    if consumer.axis == 0:  # ConvTranspose (in, out / groups, k...) and h @ W (in, out): row c reads input c
        return cols.view(-1, *([1] * (weight.dim() - 1))).expand_as(weight)
    groups = consumer.groups
    per_group = consumer.width // groups
    # Output channel o of a grouped conv reads input channels of its own group only.
    full = cols.view(groups, 1, per_group).expand(groups, weight.shape[0] // groups, per_group)
    return full.reshape(weight.shape[0], per_group, *([1] * (weight.dim() - 2))).expand_as(weight)


Touched = list[tuple[Tensor, Tensor]]  # (parameter, boolean mask of the entries changed)


@torch.no_grad()
def redraw_incoming(layer: NeuronLayer, mask: Tensor, seed: int, init_fn: InitFn | None = None) -> Touched:
    """Re-draw the masked neurons' incoming weights and bias from the layer's own initialisation."""
    module = layer.module
    fresh = fresh_values(module, seed, init_fn)
    touched: Touched = []
    for name in ("weight", "bias"):
        param = getattr(module, name, None)
        if param is not None and name in fresh:
            rows = _rows(mask, param).expand_as(param)
            param.copy_(torch.where(rows, fresh[name], param))
            touched.append((param, rows))
    return touched


@torch.no_grad()
def restore_norms(layer: NeuronLayer, mask: Tensor, seed: int) -> Touched:
    """Put the masked neurons' entries of their own per-feature norms back to initial values (running stats too)."""
    touched: Touched = []
    for i, (_, norm) in enumerate(layer.norms):
        fresh = fresh_values(norm, seed + i + 1)
        for name in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(norm, name, None)
            if t is not None and name in fresh and t.shape == mask.shape:
                t.copy_(torch.where(mask, fresh[name], t))
                if isinstance(t, nn.Parameter):
                    touched.append((t, mask))
    return touched


@torch.no_grad()
def zero_outgoing(consumers: Iterable[Consumer], mask: Tensor) -> Touched:
    """Zero the columns of every reader's weight that read the masked neurons."""
    touched: Touched = []
    for consumer in consumers:
        cols = outgoing_mask(consumer, mask)
        consumer.weight.masked_fill_(cols, 0.0)
        touched.append((consumer.weight, cols))
    return touched


@torch.no_grad()
def reset_neurons(
    layer: NeuronLayer,
    mask: Tensor,
    *,
    seed: int,
    optimizers: Iterable[Optimizer] = (),
    init_fn: InitFn | None = None,
    consumers: Sequence[Consumer] | None = None,
) -> Tensor:
    """Reset the masked neurons of ``layer`` in place.

    Incoming weights and bias are re-drawn from the layer's own initial distribution (its ``reset_parameters``,
    or ``init_fn``, run on the layer under a seeded RNG with its other values put back), the neuron's own
    per-feature norm parameters and running statistics are restored, the columns that read it in every consumer
    are zeroed, and every optimizer state tensor shaped like a touched parameter (Adam/AdamW ``exp_avg``,
    ``exp_avg_sq``, ``max_exp_avg_sq``; SGD ``momentum_buffer``; ...) is zeroed at exactly the touched entries.
    Step counts are kept.

    Args:
        layer: The traced layer (see :func:`~regrama_lightning.trace_topology`).
        mask: Boolean mask over the layer's neurons.
        seed: Seed of the re-draw; the same seed gives the same weights on every process.
        optimizers: Optimizers whose state to clear; parameters are matched by identity.
        init_fn: Re-initialises a module in place (e.g. orthogonal weights); defaults to ``reset_parameters``.
        consumers: Layers whose reading columns to zero; defaults to ``layer.consumers``. Pass ``[]`` to keep
            outgoing weights (as for neurons that write to a shared residual stream).

    Returns:
        The number of neurons reset, as a 0-d tensor on the layer's device.
    """
    mask = mask.to(layer.module.weight.device)
    touched = redraw_incoming(layer, mask, seed, init_fn) + restore_norms(layer, mask, seed)
    touched += zero_outgoing(layer.consumers if consumers is None else consumers, mask)
    clear_optimizer_state(optimizers, touched)
    return mask.sum()


def clear_optimizer_state(optimizers: Iterable[Optimizer], touched: Sequence[tuple[Tensor, Tensor]]) -> None:
    """Zero the optimizer state entries of touched parameter entries (state tensors shaped like the parameter).

    Args:
        optimizers: Optimizers to clear; a parameter absent from one (or with no state yet) is skipped.
        touched: ``(parameter, boolean mask of its touched entries)`` pairs.
    """
    for optimizer in optimizers:
        for param, entries in touched:
            state = optimizer.state.get(param)
            if not state:
                continue
            for value in state.values():
                if isinstance(value, Tensor) and value.shape == param.shape and value.is_floating_point():
                    value.masked_fill_(entries, 0.0)
