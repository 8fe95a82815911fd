"""Resetting neurons: re-draw incoming weights, zero outgoing weights, restore norms, clear optimizer state.

Everything is masked tensor arithmetic on the parameters' device (no host syncs, no parameter replaced), under
``torch.no_grad``, with the re-draw seeded and drawn from a forked RNG so training's own random stream (and
every DDP rank's copy of the model) is unaffected by when resets happen.
"""

from __future__ import annotations

import copy
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


def _fresh_copy(module: nn.Module, seed: int, init_fn: InitFn | None) -> nn.Module:
    """A re-initialised copy of ``module``, drawn from a seeded RNG forked off the global one."""
    device = next(module.parameters()).device
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    with torch.random.fork_rng(devices=devices, device_type=device.type if device.type != "cpu" else "cuda"):
        torch.manual_seed(seed)
        grads = {n: p.grad for n, p in module.named_parameters(recurse=False)}
        for p in module.parameters(recurse=False):
            p.grad = None  # do not deep-copy gradients
        fresh = copy.deepcopy(module)
        for n, p in module.named_parameters(recurse=False):
            p.grad = grads[n]
        if init_fn is not None:
            init_fn(fresh)
        else:
            fresh.reset_parameters()
    return fresh


def _rows(mask: Tensor, like: Tensor) -> Tensor:
    return mask.view(-1, *([1] * (like.dim() - 1)))


def _consumer_mask(consumer: Consumer, mask: Tensor) -> Tensor:
    """Entries of the consumer's weight that read the masked neurons."""
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
    or ``init_fn`` applied to a copy), the neuron's own per-feature norm parameters and running statistics are
    restored, the columns that read it in every consumer are zeroed, and every optimizer state tensor shaped
    like a touched parameter (Adam/AdamW ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``; SGD
    ``momentum_buffer``; ...) is zeroed at exactly the touched entries. Step counts are kept.

    Args:
        layer: The traced layer (see :func:`~regrama_lightning.topology.trace_topology`).
        mask: Boolean mask over the layer's neurons.
        seed: Seed of the re-draw; the same seed gives the same weights on every process.
        optimizers: Optimizers whose state to clear; parameters are matched by identity.
        init_fn: Re-initialises a module in place (e.g. orthogonal weights); defaults to ``reset_parameters``.
        consumers: Layers whose reading columns to zero; defaults to ``layer.consumers``. Pass ``[]`` to keep
            outgoing weights (as for neurons that write to a shared residual stream).

    Returns:
        The number of neurons reset, as a 0-d tensor on the layer's device.
    """
    module = layer.module
    mask = mask.to(module.weight.device)
    touched: list[tuple[Tensor, Tensor]] = []
    fresh = _fresh_copy(module, seed, init_fn)
    for name in ("weight", "bias"):
        param, new = getattr(module, name, None), getattr(fresh, name, None)
        if param is not None and new is not None:
            rows = _rows(mask, param).expand_as(param)
            param.copy_(torch.where(rows, new, param))
            touched.append((param, rows))
    for i, (_, norm) in enumerate(layer.norms):
        fresh_norm = _fresh_copy(norm, seed + i + 1, None)
        for name in ("weight", "bias", "running_mean", "running_var"):
            t, new = getattr(norm, name, None), getattr(fresh_norm, name, None)
            if t is not None and new is not None and t.shape == mask.shape:
                t.copy_(torch.where(mask, new, t))
                if isinstance(t, nn.Parameter):
                    touched.append((t, mask))
    for consumer in layer.consumers if consumers is None else consumers:
        weight = consumer.weight
        cols = _consumer_mask(consumer, mask)
        weight.masked_fill_(cols, 0.0)
        touched.append((weight, cols))
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
