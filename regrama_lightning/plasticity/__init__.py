"""Plasticity metrics: feature rank, dead and active units, feature norm, how far the parameters moved.

Plain functions on tensors, and torchmetrics ``Metric`` s that accumulate batches.
"""

from regrama_lightning.plasticity.callback import ALL_METRICS, PlasticityMetrics
from regrama_lightning.plasticity.feature_metrics import (
    ActiveUnitFraction,
    ApproximateRank,
    DeadUnitFraction,
    EffectiveRank,
    FeatureNorm,
    SRank,
)
from regrama_lightning.plasticity.parameters import distance_from_init, gradient_norm, weight_magnitude
from regrama_lightning.plasticity.rank import approximate_rank, effective_rank, feature_matrix, srank
from regrama_lightning.plasticity.units import active_unit_fraction, dead_unit_fraction, feature_norm

__all__ = [
    "ALL_METRICS",
    "ActiveUnitFraction",
    "ApproximateRank",
    "DeadUnitFraction",
    "EffectiveRank",
    "FeatureNorm",
    "PlasticityMetrics",
    "SRank",
    "active_unit_fraction",
    "approximate_rank",
    "dead_unit_fraction",
    "distance_from_init",
    "effective_rank",
    "feature_matrix",
    "feature_norm",
    "gradient_norm",
    "srank",
    "weight_magnitude",
]
