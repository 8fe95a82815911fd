"""torchmetrics Metrics for the fraction of inactive neurons: ``GraMaRatio`` and ``DormantRatio``.

States are per-neuron sums of raw magnitudes and their counts, both reduced by ``sum`` across DDP ranks, so the
synced score is the score of the union of all ranks' samples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor
from torchmetrics import Metric

from regrama_lightning.scores import EPS, inactive_mask, normalize


class NeuronActivityRatio(Metric):
    """Fraction of neurons whose layer-normalised magnitude is ``<= tau``.

    Feed it raw per-neuron magnitude sums (see :mod:`regrama_lightning.scores`); it divides by the counts,
    normalises each layer by its mean and thresholds.

    Args:
        layer_sizes: Number of neurons of each layer, by name.
        tau: Threshold on the normalised score; ``0`` counts only neurons with exactly zero magnitude.
        eps: Added to each layer's mean before dividing.

    Raises:
        ValueError: If ``layer_sizes`` is empty or ``tau`` is negative.
    """

    full_state_update = False
    higher_is_better = False
    is_differentiable = False

    def __init__(self, layer_sizes: Mapping[str, int], tau: float = 0.0, eps: float = EPS, **kwargs) -> None:
        super().__init__(**kwargs)
        if not layer_sizes:
            raise ValueError("`layer_sizes` is empty: pass {layer_name: number_of_neurons} for at least one layer.")
        if not (tau >= 0 and math.isfinite(tau)):
            raise ValueError(f"`tau` must be a finite number >= 0 (got {tau}); use 0 for exactly-zero scores.")
        self.tau = float(tau)
        self.eps = float(eps)
        self.layer_sizes = dict(layer_sizes)
        self.layer_names = list(layer_sizes)
        for i, size in enumerate(layer_sizes.values()):
            self.add_state(f"sum_{i}", default=torch.zeros(size), dist_reduce_fx="sum")
            self.add_state(f"count_{i}", default=torch.zeros(()), dist_reduce_fx="sum")
        self.add_state("skipped", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.last_skipped = 0

    def update(self, sums: Mapping[str, Tensor], counts: Mapping[str, int | Tensor] | int | Tensor = 1) -> None:
        """Add one measurement; skipped as a whole (and counted in ``skipped``) if any value is not finite.

        Args:
            sums: Per-neuron magnitude sums by layer name (a subset of the layers is fine).
            counts: Number of terms in each sum (one number for all layers, or by name). Magnitudes that are
                already means (GraMa "weight") use the default 1.
        """
        if not sums:
            return
        unknown = set(sums) - set(self.layer_sizes)
        if unknown:
            raise KeyError(f"Unknown layers {sorted(unknown)}; this metric tracks {self.layer_names}.")
        values = list(sums.values())
        finite = torch.stack([torch.isfinite(v).all() for v in values]).all()
        for name, value in sums.items():
            i = self.layer_names.index(name)
            count = counts[name] if isinstance(counts, Mapping) else counts
            acc = getattr(self, f"sum_{i}")
            acc.add_(torch.where(finite, value.to(acc.dtype), 0.0))
            getattr(self, f"count_{i}").add_(finite.to(acc.dtype) * count)
        self.skipped.add_((~finite).long())

    def _scores(self) -> dict[str, Tensor]:
        out = {}
        for i, name in enumerate(self.layer_names):
            count = getattr(self, f"count_{i}")
            mean = getattr(self, f"sum_{i}") / count
            # A layer never measured has NaN scores: NaN <= tau is False, so it is never reset.
            out[name] = torch.where(count > 0, normalize(mean, self.eps), torch.nan)
        return out

    def compute_scores(self) -> dict[str, Tensor]:
        """Normalised per-neuron scores by layer, synced across processes; NaN for layers with no data."""
        with self.sync_context(should_sync=self._to_sync, should_unsync=self._should_unsync):
            self.last_skipped = int(self.skipped)  # read once per measurement, where the values are logged anyway
            return self._scores()

    def compute_layer_ratios(self) -> dict[str, Tensor]:
        """Fraction of inactive neurons in each layer, synced across processes."""
        return layer_ratios(self.compute_scores(), self.tau)

    def compute(self) -> Tensor:
        """Fraction of inactive neurons over all measured layers (weighted by layer size)."""
        return global_ratio(self._scores(), self.tau)


def layer_ratios(scores: Mapping[str, Tensor], tau: float) -> dict[str, Tensor]:
    """Fraction of neurons with score ``<= tau`` per layer (NaN where the layer has no data)."""
    return {
        name: torch.where(s.isnan().all(), torch.nan, inactive_mask(s, tau).float().mean())
        for name, s in scores.items()
    }


def global_ratio(scores: Mapping[str, Tensor], tau: float) -> Tensor:
    """Fraction of inactive neurons over all layers that have data, weighted by layer size."""
    flat = torch.cat([s.flatten() for s in scores.values()])
    measured = ~flat.isnan()
    return inactive_mask(flat, tau)[measured].float().sum() / measured.sum().clamp_min(1)


class GraMaRatio(NeuronActivityRatio):
    """Fraction of neurons GraMa calls inactive (gradient magnitude ``<=`` tau times the layer mean).

    Update it with :func:`~regrama_lightning.scores.weight_grad_magnitude` (counts 1) or with
    :func:`~regrama_lightning.scores.output_grad_magnitude_sum` and its counts.

    Example:
        >>> from torch import nn
        >>> from regrama_lightning.scores import weight_grad_magnitude
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
        >>> net(torch.randn(16, 4)).pow(2).mean().backward()
        >>> metric = GraMaRatio({"0": 8}, tau=0.01)
        >>> metric.update({"0": weight_grad_magnitude(net[0])})
        >>> float(metric.compute()) <= 1.0
        True
    """


class DormantRatio(NeuronActivityRatio):
    """Fraction of tau-dormant neurons (ReDo, Eq. 1): mean ``|post-activation|`` ``<=`` tau times the layer mean.

    Update it with :func:`~regrama_lightning.scores.activation_magnitude_sum` and its counts.
    """
