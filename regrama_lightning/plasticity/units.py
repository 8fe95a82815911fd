"""What a layer's units do on a batch: dead units, active units, feature norm.

On the (N samples x D units) matrix of :func:`~regrama_lightning.plasticity.rank.feature_matrix`:

* ``dead_unit_fraction``: the fraction of units whose activation is non-zero on fewer than ``min_active``
  (1%) of the samples. Dohare et al. count a unit dead when it is zero on every sample of their batch; the
  1% floor keeps a unit that fires on one sample in ten thousand from counting as alive.
* ``active_unit_fraction``: the fraction of (sample, unit) activations that are non-zero (how many units a
  sample uses on average, over D), as Plasticine's "active units" reads the activations.
* ``feature_norm``: the mean over samples of the L2 norm of a sample's feature vector.
"""

from __future__ import annotations

from torch import Tensor

from regrama_lightning.plasticity.rank import check_matrix


def _check_fraction(min_active: float) -> None:
    if not 0.0 < min_active <= 1.0:
        raise ValueError(f"`min_active` must be in (0, 1] (a share of the samples), got {min_active}.")


def dead_unit_fraction(features: Tensor, min_active: float = 0.01) -> Tensor:
    """Fraction of units whose activation is non-zero on fewer than ``min_active`` of the samples.

    Example:
        >>> import torch
        >>> dead_unit_fraction(torch.tensor([[1.0, 0.0], [2.0, 0.0]]))
        tensor(0.5000)
    """
    check_matrix(features)
    _check_fraction(min_active)
    firing = (features != 0).float().mean(0)
    return (firing < min_active).float().mean()


def active_unit_fraction(features: Tensor) -> Tensor:
    """Fraction of the (sample, unit) activations that are non-zero.

    Example:
        >>> import torch
        >>> active_unit_fraction(torch.tensor([[1.0, 0.0], [2.0, 3.0]]))
        tensor(0.7500)
    """
    check_matrix(features)
    return (features != 0).float().mean()


def feature_norm(features: Tensor) -> Tensor:
    """Mean over samples of the L2 norm of each sample's feature vector.

    Example:
        >>> import torch
        >>> feature_norm(torch.tensor([[3.0, 4.0], [0.0, 1.0]]))
        tensor(3.)
    """
    check_matrix(features)
    return features.detach().float().norm(dim=1).mean()
