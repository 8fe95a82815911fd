"""Per-neuron activity scores as plain functions: GraMa (both definitions) and ReDo's dormancy score.

All functions are batched tensor code with no host syncs. "Magnitudes" are raw, per-neuron, non-negative
statistics; "scores" are magnitudes divided by their layer mean (Eq. 1 of ReDo, Eq. 2 of the GraMa paper).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

EPS = 1e-9


def weight_grad_magnitude(module: nn.Module) -> Tensor:
    """GraMa as in the authors' released code: mean ``|W.grad|`` over each neuron's incoming weights.

    Args:
        module: A ``Linear`` or ``Conv`` module after ``backward``.

    Returns:
        One value per output unit (row of ``W``; for convs the mean runs over ``in_channels x kernel``).

    Raises:
        ValueError: If the weight has no gradient.
    """
    total, count = weight_grad_magnitude_sum(module)
    return total / count


def weight_grad_magnitude_sum(module: nn.Module) -> tuple[Tensor, int]:
    """Sum of ``|W.grad|`` over each neuron's incoming weights, and their number (the fan-in).

    The sum/count form of :func:`weight_grad_magnitude`, in the shape the metrics take.

    Raises:
        ValueError: If the weight has no gradient.
    """
    grad = module.weight.grad
    if grad is None:
        raise ValueError(
            f"{type(module).__name__}.weight has no gradient: call backward() before scoring, and score only "
            "layers that the loss reaches."
        )
    return weight_grad_magnitude_sums([grad])[0], grad[0].numel()


def weight_grad_magnitude_sums(grads: Sequence[Tensor]) -> list[Tensor]:
    """Per-neuron sums of ``|grad|`` of several weight gradients (over the rows of each)."""
    with torch.no_grad():
        return [g.abs().sum(dim=tuple(range(1, g.dim())), dtype=torch.float32) for g in grads]


def output_grad_magnitude_sum(grad_output: Tensor, channel_dim: int = -1) -> tuple[Tensor, int]:
    """Sum over samples (and positions) of ``|dL/dh_i|``: Eq. 2's numerator before dividing by the count.

    Args:
        grad_output: Gradient of the loss w.r.t. a layer's output, one row per sample (``(N, H)`` for Linear,
            ``(N, C, ...)`` for Conv).
        channel_dim: The neuron dimension (``-1`` for Linear outputs, ``1`` for Conv outputs).

    Returns:
        ``(sum, count)``: per-neuron sums and the number of (sample, position) terms in each.
    """
    return _abs_sum(grad_output, channel_dim)


def activation_magnitude_sum(activation: Tensor, channel_dim: int = -1) -> tuple[Tensor, int]:
    """Sum of ``|h_i(x)|`` over samples (and positions) of post-activation outputs: ReDo's Eq. 1 numerator."""
    return _abs_sum(activation, channel_dim)


def _abs_sum(t: Tensor, channel_dim: int) -> tuple[Tensor, int]:
    t = t.detach()
    channel_dim %= t.dim()
    # Reduce in place of the layout: moving the channel last would copy the whole tensor first (25x slower
    # for a conv output).
    dims = [d for d in range(t.dim()) if d != channel_dim]
    magnitude = t.abs()
    total = magnitude.sum(dim=dims, dtype=torch.float32) if dims else magnitude.float()
    return total, t.numel() // t.shape[channel_dim]


def normalize(magnitude: Tensor, eps: float = EPS) -> Tensor:
    """Divide per-neuron magnitudes by their layer mean (``+eps``), so that a score of 1 is an average neuron."""
    return magnitude / (magnitude.mean() + eps)


def inactive_mask(scores: Tensor, tau: float) -> Tensor:
    """Neurons with score ``<= tau``. With ``tau=0`` exactly the neurons whose magnitude is exactly zero."""
    return scores <= tau


def grama_scores(
    model: nn.Module, layers: Mapping[str, nn.Module] | None = None, eps: float = EPS
) -> dict[str, Tensor]:
    """Normalised GraMa scores ("weight" definition) of every Linear/Conv layer of ``model`` after ``backward``.

    Args:
        model: The model whose parameters hold gradients.
        layers: Layers to score by name; defaults to all ``Linear``/``Conv`` layers with a gradient.
        eps: Added to the layer mean.

    Returns:
        Scores by layer name.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
        >>> net(torch.randn(16, 4)).pow(2).mean().backward()
        >>> sorted(grama_scores(net))
        ['0', '2']
    """
    from regrama_lightning.tracing.selection import neuron_layers

    layers = neuron_layers(model) if layers is None else layers
    return {name: normalize(weight_grad_magnitude(m), eps) for name, m in layers.items() if m.weight.grad is not None}
