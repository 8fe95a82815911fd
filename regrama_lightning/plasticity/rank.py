"""How many directions a layer's features span: effective rank, srank and approximate rank.

All three read the singular values ``s_1 >= s_2 >= ...`` of the feature matrix (N samples x D units; a conv
layer's positions are flattened into the samples, see :func:`feature_matrix`):

* ``effective_rank``: ``exp(-sum_i p_i log p_i)`` with ``p = s / sum(s)`` and ``0 log 0 = 0`` (Roy & Vetterli
  2007, as Dohare et al. 2024 use it).
* ``srank(delta)``: the smallest ``k`` whose ``k`` largest singular values hold ``1 - delta`` of their sum
  (Kumar et al. 2020).
* ``approximate_rank(delta)``: the same on the squared singular values (Dohare et al.'s "approximate rank",
  their ``prop = 1 - delta = 0.99``).

A matrix of zeros spans nothing: all three are 0 for it.
"""

from __future__ import annotations

import torch
from torch import Tensor


def feature_matrix(features: Tensor, channel_dim: int = -1) -> Tensor:
    """The (N x D) matrix of a layer's features: units along ``channel_dim``, every other dimension a sample.

    Args:
        features: A layer's output, e.g. ``(batch, units)``, ``(batch, tokens, units)`` or a conv's
            ``(batch, channels, height, width)`` with ``channel_dim=1``.
        channel_dim: The dimension that holds the units.

    Example:
        >>> feature_matrix(torch.zeros(2, 3, 4, 5), channel_dim=1).shape
        torch.Size([40, 3])
    """
    if features.dim() < 1:
        raise ValueError(f"`features` must have at least one dimension (the units), got shape {tuple(features.shape)}.")
    if features.dim() == 1:
        return features.reshape(-1, 1)
    return features.detach().movedim(channel_dim, -1).reshape(-1, features.shape[channel_dim])


def check_matrix(features: Tensor) -> None:
    """Refuse anything but an (N samples x D units) matrix, naming the fix."""
    if features.dim() != 2:
        raise ValueError(
            f"`features` must be an (N samples x D units) matrix, got shape {tuple(features.shape)}; "
            "use feature_matrix() to flatten a layer's output."
        )


def singular_values(features: Tensor) -> Tensor:
    """Singular values of an (N x D) matrix, largest first, in float32 or wider."""
    check_matrix(features)
    dtype = features.dtype if features.dtype in (torch.float32, torch.float64) else torch.float32
    return torch.linalg.svdvals(features.detach().to(dtype))


def check_delta(delta: float) -> None:
    """Refuse a ``delta`` outside ``[0, 1)``."""
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"`delta` must be in [0, 1) (the share of the spectrum left out), got {delta}.")


def effective_rank(features: Tensor) -> Tensor:
    """``exp`` of the entropy of the singular values normalised to sum 1 (``0 log 0 = 0``).

    Example:
        >>> effective_rank(torch.eye(3))
        tensor(3.)
    """
    s = singular_values(features)
    total = s.sum()
    p = s / total.clamp_min(torch.finfo(s.dtype).tiny)
    entropy = -torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum()
    return torch.where(total > 0, entropy.exp(), torch.zeros_like(entropy))


def _cumulative_rank(values: Tensor, delta: float) -> Tensor:
    """Smallest ``k`` with ``sum(values[:k]) >= (1 - delta) * sum(values)`` (``values`` sorted, largest first)."""
    total = values.sum()
    share = values.cumsum(0) / total.clamp_min(torch.finfo(values.dtype).tiny)
    # Rounding can leave the full cumulative share a hair under 1: never count past the last non-zero value.
    k = (share < 1.0 - delta).sum() + 1
    k = torch.minimum(k, (values > 0).sum())
    return torch.where(total > 0, k, torch.zeros_like(k))


def srank(features: Tensor, delta: float = 0.01) -> Tensor:
    """Smallest ``k`` whose ``k`` largest singular values hold ``1 - delta`` of their sum (Kumar et al. 2020).

    Example:
        >>> srank(torch.diag(torch.tensor([10.0, 10.0, 0.001])))
        tensor(2)
    """
    check_delta(delta)
    return _cumulative_rank(singular_values(features), delta)


def approximate_rank(features: Tensor, delta: float = 0.01) -> Tensor:
    """:func:`srank` on the squared singular values (Dohare et al.'s approximate rank, ``prop = 1 - delta``).

    Example:
        >>> approximate_rank(torch.diag(torch.tensor([10.0, 1.0, 0.1])))
        tensor(1)
    """
    check_delta(delta)
    return _cumulative_rank(singular_values(features).square(), delta)
