"""torchmetrics Metrics for the fraction of inactive neurons: ``GraMaRatio`` and ``DormantRatio``.

The state is one flat vector, ``[per-neuron magnitude sums of every layer | term count of each layer | skipped]``,
reduced by ``sum`` across DDP ranks (one all-reduce), so the synced score is the score of the union of all ranks'
samples. Everything is computed with a fixed number of batched tensor ops, whatever the number of layers, and
for one state or a batch of them (the rows the callbacks buffer, see :mod:`regrama_lightning.buffer`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from regrama_lightning.scores import EPS


class ActivitySummary(NamedTuple):
    """Inactive-neuron counts of one measurement.

    Attributes:
        inactive: Per layer, the number of neurons whose score is ``<= tau`` (0 for layers with no data).
        neurons: Per layer, its number of neurons, or 0 if it has no data.
        skipped: Number of updates skipped for non-finite values.
    """

    inactive: Tensor
    neurons: Tensor
    skipped: Tensor

    @property
    def layer_ratios(self) -> Tensor:
        """Fraction of inactive neurons per layer; NaN for layers with no data."""
        return self.inactive / self.neurons

    @property
    def ratio(self) -> Tensor:
        """Fraction of inactive neurons over all layers with data, weighted by layer size."""
        return self.inactive.sum(-1) / self.neurons.sum(-1)


class NeuronActivityRatio(Metric):
    """Fraction of neurons whose layer-normalised magnitude is ``<= tau``.

    Feed it raw per-neuron magnitude sums and the number of terms in them (see :mod:`regrama_lightning.scores`);
    a neuron's score is its mean magnitude divided by its layer's mean (``+eps``).

    Args:
        layer_sizes: Number of neurons of each layer, by name.
        tau: Threshold on the normalised score; ``0`` counts only neurons with exactly zero magnitude.
        eps: Added to each layer's mean before dividing.

    Raises:
        ValueError: If ``layer_sizes`` is empty or holds a non-positive size, or ``tau`` is negative.
    """

    full_state_update = False
    higher_is_better = False
    is_differentiable = False

    def __init__(self, layer_sizes: Mapping[str, int], tau: float = 0.0, eps: float = EPS, **kwargs) -> None:
        super().__init__(**kwargs)
        if not layer_sizes:
            raise ValueError("`layer_sizes` is empty: pass {layer_name: number_of_neurons} for at least one layer.")
        if any(not isinstance(n, int) or n < 1 for n in layer_sizes.values()):
            raise ValueError(f"`layer_sizes` must map names to positive integers, got {dict(layer_sizes)}.")
        if not (tau >= 0 and math.isfinite(tau)):
            raise ValueError(f"`tau` must be a finite number >= 0 (got {tau}); use 0 for exactly-zero scores.")
        self.tau = float(tau)
        self.eps = float(eps)
        self.layer_sizes = dict(layer_sizes)
        self.layer_names = list(layer_sizes)
        self._index = {name: i for i, name in enumerate(self.layer_names)}
        self._lengths = list(layer_sizes.values())
        self._neurons = sum(self._lengths)
        self.add_state("total", default=torch.zeros(self.width), dist_reduce_fx="sum")
        sizes = torch.tensor(self._lengths)
        segment = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
        self.register_buffer("_sizes", sizes.float(), persistent=False)
        self.register_buffer("_segment", segment, persistent=False)
        # Neuron -> layer membership as a matrix: one matmul sums every layer of a batch of measurements.
        self.register_buffer("_membership", nn.functional.one_hot(segment).float(), persistent=False)
        self.register_buffer("_tau_per_size", self.tau / sizes.float(), persistent=False)
        skip = torch.zeros(self.width)
        skip[-1] = 1.0
        self.register_buffer("_skip", skip, persistent=False)  # what a skipped measurement packs to
        self._count_cache: dict[tuple, Tensor] = {}
        self._zeros: list[Tensor] | None = None
        self.last_skipped = 0

    @property
    def width(self) -> int:
        """Length of a packed measurement: per-neuron sums, per-layer counts and the skip count."""
        return self._neurons + len(self._lengths) + 1

    def update(self, sums: Mapping[str, Tensor], counts: Mapping[str, int | float] | int | float = 1) -> None:
        """Add one measurement; skipped as a whole (and counted) if any value is not finite.

        Args:
            sums: Per-neuron magnitude sums by layer name (a subset of the layers is fine).
            counts: Number of terms in each sum (one number for all layers, or by name). Magnitudes that are
                already means use the default 1.

        Raises:
            KeyError: For a layer this metric does not track.
        """
        if sums:
            self.total.add_(self.guard(self.pack(sums, counts)))

    def pack(
        self,
        sums: Mapping[str, Tensor],
        counts: Mapping[str, int | float] | int | float = 1,
        out: Tensor | None = None,
    ) -> Tensor:
        """One measurement as a state vector (written into ``out`` if given), not yet checked for finiteness.

        Raises:
            KeyError: For a layer this metric does not track.
        """
        if any(n not in self._index for n in sums):
            unknown = sorted(n for n in sums if n not in self._index)
            raise KeyError(f"Unknown layers {unknown}; this metric tracks {self.layer_names}.")
        by_name = counts if isinstance(counts, Mapping) else dict.fromkeys(sums, counts)
        with torch.no_grad():
            parts = [sums.get(n, zeros) for n, zeros in zip(self.layer_names, self.zero_parts(), strict=True)]
            return torch.cat([*parts, self.count_part({n: by_name[n] for n in sums})], out=out)

    def zero_parts(self) -> list[Tensor]:
        """Per layer, zero sums: the packed stand-in for a layer missing from a measurement (made once)."""
        if self._zeros is None or self._zeros[0].device != self.total.device:
            self._zeros = [self.total.new_zeros(n) for n in self._lengths]
        return self._zeros

    def count_part(self, counts: Mapping[str, int | float]) -> Tensor:
        """The packed tail for these per-layer counts: counts (0 for layers not given), then a zero skip count.

        Counts repeat from step to step (fan-ins, batch sizes), so each tail is built once and reused.
        """
        key = tuple(float(counts.get(n, 0.0)) for n in self.layer_names)
        cached = self._count_cache.get(key)
        if cached is None or cached.device != self.total.device:
            cached = torch.tensor([*key, 0.0], device=self.total.device)
            if len(self._count_cache) >= 64:
                self._count_cache.clear()
            self._count_cache[key] = cached
        return cached

    def guard(self, state: Tensor) -> Tensor:
        """Measurements (rows) holding any non-finite value become "skipped": no data, and one skip."""
        total = state.sum(dim=-1, keepdim=True)
        return torch.where((total - total) == 0, state, self._skip)  # inf - inf and NaN are not 0; no host sync

    def synced_state(self) -> Tensor:
        """The accumulated state summed over all processes (a reference: do not modify it)."""
        with self.sync_context(should_sync=self._to_sync, should_unsync=self._should_unsync):
            return self.total

    def _split(self, state: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        state = self.synced_state() if state is None else state
        sums, counts, skipped = state.split([self._neurons, len(self._lengths), 1], dim=-1)
        return sums, counts, skipped.squeeze(-1)

    def summary(self, state: Tensor | None = None) -> ActivitySummary:
        """Inactive counts per layer of a state (default: the synced state), or of a batch of them (rows).

        A neuron is inactive when ``(sum / count) / (layer mean of sum / count + eps) <= tau``, evaluated
        without dividing per neuron as ``sum <= tau * (layer mean of sum + eps * count)``. No host sync.
        """
        sums, counts, skipped = self._split(state)
        threshold = torch.addcmul(counts * (self.tau * self.eps), sums @ self._membership, self._tau_per_size)
        inactive = (sums <= threshold.index_select(-1, self._segment)).float() @ self._membership
        measured = (counts > 0).float()
        return ActivitySummary(inactive * measured, self._sizes * measured, skipped.long())

    def scores(self, state: Tensor | None = None) -> dict[str, Tensor]:
        """Normalised per-neuron scores by layer from ``state`` (default: synced); NaN for layers with no data."""
        sums, counts, _ = self._split(state)
        # 0/0 = NaN where a layer has no data: never reset. Sums, not means, enter the matmul: a NaN would
        # spread to every layer's total.
        mean = sums / counts.index_select(0, self._segment)
        layer_mean = (sums @ self._membership) / (self._sizes * counts)
        scores = mean / (layer_mean + self.eps).index_select(0, self._segment)
        return dict(zip(self.layer_names, scores.split(self._lengths), strict=True))

    def means(self, state: Tensor | None = None) -> dict[str, Tensor]:
        """Raw per-neuron mean magnitudes (``sum / count``, not normalised) by layer; NaN for layers with no data.

        For methods that keep their own statistic of a measurement (e.g. a running utility), not the ratio.
        """
        sums, counts, _ = self._split(state)
        return dict(
            zip(self.layer_names, (sums / counts.index_select(-1, self._segment)).split(self._lengths, -1), strict=True)
        )

    def compute_scores(self) -> dict[str, Tensor]:
        """Normalised per-neuron scores by layer, synced across processes; NaN for layers with no data."""
        state = self.synced_state()
        self.last_skipped = int(state[-1])
        return self.scores(state)

    def compute_layer_ratios(self) -> dict[str, Tensor]:
        """Fraction of inactive neurons in each layer (NaN where no data), synced across processes."""
        return dict(zip(self.layer_names, self.summary().layer_ratios.unbind(), strict=True))

    def compute(self) -> Tensor:
        """Fraction of inactive neurons over all measured layers (weighted by layer size)."""
        return self.summary(self.total).ratio  # torchmetrics has synced the state around compute()


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
