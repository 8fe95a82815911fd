"""What the parameters themselves show: weight magnitude, distance from initialisation, gradient norm.

Each takes an iterable of tensors (``model.parameters()``, or one layer's), so that a model-wide value and a
per-layer value are the same call.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


def _listed(params: Iterable[Tensor], name: str) -> list[Tensor]:
    params = list(params)
    if not params:
        raise ValueError(f"`{name}` is empty: pass the parameters to measure, e.g. model.parameters().")
    return params


def weight_magnitude(params: Iterable[Tensor]) -> Tensor:
    """Mean ``|w|`` over every entry of the given tensors.

    Example:
        >>> weight_magnitude([torch.tensor([1.0, -3.0]), torch.tensor([[2.0]])])
        tensor(2.)
    """
    params = _listed(params, "params")
    total = sum(p.detach().abs().sum(dtype=torch.float32) for p in params)
    return total / sum(p.numel() for p in params)


def distance_from_init(params: Iterable[Tensor], initial: Iterable[Tensor]) -> Tensor:
    """L2 norm of ``theta - theta_0`` over every entry (the parameters flattened into one vector).

    Raises:
        ValueError: If the two lists differ in length or a pair differs in shape.

    Example:
        >>> distance_from_init([torch.tensor([3.0, 0.0])], [torch.tensor([0.0, 4.0])])
        tensor(5.)
    """
    params, initial = _listed(params, "params"), _listed(initial, "initial")
    if len(params) != len(initial) or any(p.shape != q.shape for p, q in zip(params, initial, strict=False)):
        raise ValueError(
            "`params` and `initial` must hold the same tensors in the same order and shapes; got shapes "
            f"{[tuple(p.shape) for p in params]} and {[tuple(q.shape) for q in initial]}."
        )
    pairs = zip(params, initial, strict=True)
    squares = sum((p.detach().float() - q.detach().to(p.device).float()).square().sum() for p, q in pairs)
    return squares.sqrt()


def gradient_norm(params: Iterable[Tensor]) -> Tensor:
    """L2 norm of all gradients together (parameters without a gradient count as zero).

    Example:
        >>> w = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> (w * torch.tensor([3.0, 4.0])).sum().backward()
        >>> gradient_norm([w])
        tensor(5.)
    """
    params = _listed(params, "params")
    grads = [p.grad.detach().float().square().sum() for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=params[0].device)
    return torch.stack(grads).sum().sqrt()
