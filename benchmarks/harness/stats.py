"""Aggregation over seeds: mean with a 95% bootstrap interval, interquartile mean, normalised scores.

Every figure and table of the benchmarks reports a method's mean over seeds with a percentile bootstrap
interval (resampling seeds with replacement, a fixed-seed generator so that a report is reproducible) and the
number of seeds behind it. RL returns are also summarised by the interquartile mean (the mean of the middle
50%, Agarwal et al. 2021), which a single diverging seed cannot drag.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_SEED = 0
"""Seed of the resampling generator: the same runs always give the same interval."""


@dataclass(frozen=True)
class Summary:
    """One method's aggregate over seeds.

    Attributes:
        mean: mean over seeds.
        low: lower end of the confidence interval.
        high: upper end of the confidence interval.
        iqm: interquartile mean over seeds.
        n: number of seeds behind the figures.
    """

    mean: float
    low: float
    high: float
    iqm: float
    n: int


def _values(values: Sequence[float] | np.ndarray, name: str = "values") -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one value per seed (a 1-D sequence); got shape {array.shape}.")
    if array.size == 0:
        raise ValueError(f"{name} is empty: aggregate at least one finished seed.")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values: {array.tolist()}; drop unfinished seeds first.")
    return array


def iqm(values: Sequence[float] | np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% of the values.

    The values are sorted and a quarter is trimmed from each end; where a quarter is not a whole number of
    values the boundary values count with fractional weight (the definition of Agarwal et al., 2021, as in
    ``scipy.stats.trim_mean`` for sizes divisible by four).

    Args:
        values: one value per seed (or per run).

    Returns:
        The interquartile mean.

    Raises:
        ValueError: if ``values`` is empty, not 1-D or not finite.

    Example:
        >>> iqm([0.0, 1.0, 2.0, 100.0])
        1.5
    """
    array = np.sort(_values(values))
    n = array.size
    # Weight of each sorted value in the middle half [n/4, 3n/4) of the empirical distribution.
    lo, hi = n / 4.0, 3.0 * n / 4.0
    starts = np.arange(n, dtype=float)
    weights = np.clip(np.minimum(starts + 1.0, hi) - np.maximum(starts, lo), 0.0, 1.0)
    return float(np.dot(weights, array) / weights.sum())


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    resamples: int = 10_000,
    statistic: str = "mean",
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean (or IQM) over seeds.

    Args:
        values: one value per seed.
        confidence: coverage of the interval, in (0, 1).
        resamples: number of bootstrap resamples.
        statistic: ``"mean"`` or ``"iqm"``.
        seed: seed of the resampling generator.

    Returns:
        ``(low, high)``; a single seed gives the degenerate interval ``(value, value)``.

    Raises:
        ValueError: on empty or non-finite values, ``confidence`` outside (0, 1), ``resamples < 1`` or an
            unknown ``statistic``.

    Example:
        >>> low, high = bootstrap_ci([1.0, 2.0, 3.0, 4.0])
        >>> 1.0 <= low <= 2.5 <= high <= 4.0
        True
    """
    array = _values(values)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}.")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1; got {resamples}.")
    if statistic not in ("mean", "iqm"):
        raise ValueError(f"statistic must be 'mean' or 'iqm'; got {statistic!r}.")
    rng = np.random.default_rng(seed)
    samples = array[rng.integers(0, array.size, size=(resamples, array.size))]
    stats = samples.mean(axis=1) if statistic == "mean" else np.array([iqm(row) for row in samples])
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(low), float(high)


def summarize(values: Sequence[float] | np.ndarray, confidence: float = 0.95, resamples: int = 10_000) -> Summary:
    """Mean, bootstrap interval of the mean, IQM and seed count of one method.

    Args:
        values: one value per seed.
        confidence: coverage of the interval.
        resamples: number of bootstrap resamples.

    Returns:
        The :class:`Summary`.

    Raises:
        ValueError: as :func:`bootstrap_ci`.

    Example:
        >>> summarize([2.0, 2.0, 2.0]).mean
        2.0
    """
    array = _values(values)
    low, high = bootstrap_ci(array, confidence=confidence, resamples=resamples)
    return Summary(mean=float(array.mean()), low=low, high=high, iqm=iqm(array), n=int(array.size))


def summarize_methods(per_method: Mapping[str, Sequence[float]], **kwargs: float) -> dict[str, Summary]:
    """:func:`summarize` for every method of a mapping ``method -> values per seed``.

    Args:
        per_method: values per seed of each method.
        **kwargs: passed to :func:`summarize` (``confidence``, ``resamples``).

    Returns:
        ``method -> Summary``, in the mapping's order.

    Raises:
        ValueError: naming the method whose values are invalid.
    """
    out = {}
    for method, values in per_method.items():
        try:
            out[method] = summarize(values, **kwargs)
        except ValueError as error:
            raise ValueError(f"method {method!r}: {error}") from error
    return out


def normalized(values: Sequence[float] | np.ndarray, reference: float, baseline: float = 0.0) -> np.ndarray:
    """Scores normalised so that ``baseline`` maps to 0 and ``reference`` to 1.

    ``(x - baseline) / (reference - baseline)``: with ``baseline=0`` this is the paper's "normalised to
    vanilla" (Table 8, Fig. 10) when ``reference`` is vanilla's mean score.

    Args:
        values: scores to normalise.
        reference: score that maps to 1.
        baseline: score that maps to 0.

    Returns:
        The normalised scores.

    Raises:
        ValueError: if ``reference == baseline`` (the scale would be undefined) or either is not finite.

    Example:
        >>> normalized([50.0, 100.0], reference=100.0).tolist()
        [0.5, 1.0]
    """
    if not (np.isfinite(reference) and np.isfinite(baseline)):
        raise ValueError(f"reference and baseline must be finite; got {reference} and {baseline}.")
    if reference == baseline:
        raise ValueError(
            f"reference equals baseline ({reference}): normalised scores are undefined; pick another reference."
        )
    return (np.asarray(values, dtype=float) - baseline) / (reference - baseline)


def on_common_grid(
    series: Sequence[tuple[np.ndarray, np.ndarray]], points: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Seeds' ``(steps, values)`` series interpolated on ``points`` steps that every series covers.

    Returns:
        ``(grid, curves)`` with ``curves`` of shape ``(series, len(grid))``; ``None`` if no series has a value.

    Example:
        >>> grid, curves = on_common_grid([(np.array([0, 10]), np.array([0.0, 1.0])),
        ...                                (np.array([5, 20]), np.array([2.0, 2.0]))], points=2)
        >>> grid.tolist(), curves.tolist()
        ([5.0, 10.0], [[0.5, 1.0], [2.0, 2.0]])
    """
    series = [(np.asarray(s, float), np.asarray(v, float)) for s, v in series if len(s)]
    if not series:
        return None
    first, last = max(s[0] for s, _ in series), min(s[-1] for s, _ in series)
    grid = np.linspace(first, last, points) if last > first else np.array([first])
    return grid, np.stack([np.interp(grid, s, v) for s, v in series])
