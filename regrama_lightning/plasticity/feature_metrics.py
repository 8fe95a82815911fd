"""The feature metrics as torchmetrics ``Metric`` s: accumulate batches (and DDP ranks), compute once.

Each ``update(features, channel_dim=-1)`` takes a layer's output and flattens it to (N samples x D units) with
:func:`~regrama_lightning.plasticity.rank.feature_matrix`. The rank metrics keep the samples (an SVD needs the
whole matrix; across ranks the rows are gathered); the unit and norm metrics keep running sums.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from regrama_lightning.plasticity.rank import approximate_rank, check_delta, effective_rank, feature_matrix, srank


class _RankMetric(Metric):
    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("features", default=[], dist_reduce_fx="cat")

    def update(self, features: Tensor, channel_dim: int = -1) -> None:
        """Add a batch of a layer's features (units along ``channel_dim``)."""
        self.features.append(feature_matrix(features, channel_dim).float())

    def _matrix(self) -> Tensor:
        if not self.features:
            raise RuntimeError(f"{type(self).__name__}.compute() before any update(): feed it features first.")
        return dim_zero_cat(self.features)


class EffectiveRank(_RankMetric):
    """:func:`~regrama_lightning.plasticity.rank.effective_rank` of all features seen.

    Example:
        >>> metric = EffectiveRank()
        >>> metric.update(torch.eye(4)[:2])
        >>> metric.update(torch.eye(4)[2:])
        >>> metric.compute()
        tensor(4.)
    """

    def compute(self) -> Tensor:
        """The metric over everything seen (synced across ranks)."""
        return effective_rank(self._matrix())


class SRank(_RankMetric):
    """:func:`~regrama_lightning.plasticity.rank.srank` of all features seen.

    Args:
        delta: Share of the singular values' sum left out (Kumar et al.: 0.01).

    Example:
        >>> metric = SRank(delta=0.01)
        >>> metric.update(torch.diag(torch.tensor([5.0, 5.0, 0.0])))
        >>> metric.compute()
        tensor(2)
    """

    def __init__(self, delta: float = 0.01, **kwargs) -> None:
        check_delta(delta)
        super().__init__(**kwargs)
        self.delta = delta

    def compute(self) -> Tensor:
        """The metric over everything seen (synced across ranks)."""
        return srank(self._matrix(), self.delta)


class ApproximateRank(SRank):
    """:func:`~regrama_lightning.plasticity.rank.approximate_rank` (squared singular values) of all features seen.

    Example:
        >>> metric = ApproximateRank(delta=0.01)
        >>> metric.update(torch.diag(torch.tensor([10.0, 1.0, 0.1])))
        >>> metric.compute()
        tensor(1)
    """

    def compute(self) -> Tensor:
        """The metric over everything seen (synced across ranks)."""
        return approximate_rank(self._matrix(), self.delta)


class DeadUnitFraction(Metric):
    """Fraction of units whose activation is non-zero on fewer than ``min_active`` of all samples seen.

    Args:
        num_units: Units of the layer (the size of the running count).
        min_active: Share of samples a unit must fire on to be alive (default 1%).

    Example:
        >>> metric = DeadUnitFraction(num_units=2)
        >>> metric.update(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
        >>> metric.compute()
        tensor(0.5000)
    """

    full_state_update = False
    higher_is_better = False
    is_differentiable = False

    def __init__(self, num_units: int, min_active: float = 0.01, **kwargs) -> None:
        if not isinstance(num_units, int) or num_units < 1:
            raise ValueError(f"`num_units` must be a positive int (the layer's units), got {num_units!r}.")
        if not 0.0 < min_active <= 1.0:
            raise ValueError(f"`min_active` must be in (0, 1] (a share of the samples), got {min_active}.")
        super().__init__(**kwargs)
        self.num_units, self.min_active = num_units, min_active
        self.add_state("firing", default=torch.zeros(num_units), dist_reduce_fx="sum")
        self.add_state("samples", default=torch.zeros(()), dist_reduce_fx="sum")

    def update(self, features: Tensor, channel_dim: int = -1) -> None:
        """Count, per unit, the samples it fired on."""
        matrix = feature_matrix(features, channel_dim)
        if matrix.shape[1] != self.num_units:
            raise ValueError(f"Features have {matrix.shape[1]} units; this metric was built for {self.num_units}.")
        self.firing += (matrix != 0).sum(0).to(self.firing.dtype)
        self.samples += matrix.shape[0]

    def compute(self) -> Tensor:
        """The metric over everything seen (synced across ranks)."""
        return (self.firing / self.samples < self.min_active).float().mean()


class _SumRatio(Metric):
    """A ratio of two running sums, each batch adding ``_terms(matrix)``."""

    full_state_update = False
    is_differentiable = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("numerator", default=torch.zeros(()), dist_reduce_fx="sum")
        self.add_state("denominator", default=torch.zeros(()), dist_reduce_fx="sum")

    def _terms(self, matrix: Tensor) -> tuple[Tensor, int]:
        raise NotImplementedError

    def update(self, features: Tensor, channel_dim: int = -1) -> None:
        """Add a batch of a layer's features (units along ``channel_dim``)."""
        numerator, denominator = self._terms(feature_matrix(features, channel_dim).float())
        self.numerator += numerator
        self.denominator += denominator

    def compute(self) -> Tensor:
        """The metric over everything seen (synced across ranks)."""
        return self.numerator / self.denominator


class ActiveUnitFraction(_SumRatio):
    """Fraction of the (sample, unit) activations seen that are non-zero.

    Example:
        >>> metric = ActiveUnitFraction()
        >>> metric.update(torch.tensor([[1.0, 0.0], [2.0, 3.0]]))
        >>> metric.compute()
        tensor(0.7500)
    """

    higher_is_better = True

    def _terms(self, matrix: Tensor) -> tuple[Tensor, int]:
        return (matrix != 0).sum(), matrix.numel()


class FeatureNorm(_SumRatio):
    """Mean over all samples seen of each sample's feature-vector L2 norm.

    Example:
        >>> metric = FeatureNorm()
        >>> metric.update(torch.tensor([[3.0, 4.0], [0.0, 1.0]]))
        >>> metric.compute()
        tensor(3.)
    """

    def _terms(self, matrix: Tensor) -> tuple[Tensor, int]:
        return matrix.norm(dim=1).sum(), matrix.shape[0]
