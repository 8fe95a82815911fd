"""Curves over training, one per method, with a shaded 95% bootstrap interval over seeds (the paper's form).

Each seed's series is interpolated on a grid of steps that every seed covers; at each grid point the band is
the percentile bootstrap interval of the mean over seeds (:func:`benchmarks.harness.stats.bootstrap_ci`), so
one seed draws a line without a band.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..harness import stats, style

Series = tuple[np.ndarray, np.ndarray]  # (steps, values) of one seed
CURVE_RESAMPLES = 2000  # per grid point: enough for a drawn band, cheap for 100 points


def band(series: Sequence[Series], points: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Grid, mean, low and high over seeds of ``series`` (empty arrays where no seed has a value).

    Args:
        series: one ``(steps, values)`` per seed; steps increasing.
        points: grid size.

    Returns:
        ``(grid, mean, low, high)``.

    Example:
        >>> grid, mean, low, high = band([(np.array([0, 10]), np.array([0.0, 1.0]))], points=3)
        >>> grid.tolist(), mean.tolist(), (low == high).all()
        ([0.0, 5.0, 10.0], [0.0, 0.5, 1.0], np.True_)
    """
    gridded = stats.on_common_grid(series, points)
    if gridded is None:
        empty = np.array([])
        return empty, empty, empty, empty
    grid, curves = gridded
    bounds = np.array([stats.bootstrap_ci(column, resamples=CURVE_RESAMPLES) for column in curves.T])
    return grid, curves.mean(0), bounds[:, 0], bounds[:, 1]


def draw(ax: Any, per_method: Mapping[str, Sequence[Series]], ylabel: str, title: str = "") -> None:
    """One curve per method on ``ax`` with its shaded interval; the legend counts each method's seeds."""
    for method, series in per_method.items():
        grid, mean, low, high = band(series)
        if not len(grid):
            continue
        n = sum(1 for s, _ in series if len(s))
        marker = "o" if len(grid) < 3 else None  # a single evaluation is a point, not a line
        ax.plot(grid, mean, color=style.color(method), label=f"{style.label(method)} (n={n})", lw=1.2, marker=marker)
        if n > 1:
            ax.fill_between(grid, low, high, color=style.color(method), alpha=0.2, lw=0)
    ax.set_xlabel("environment steps", fontsize=7)
    ax.set_ylabel(ylabel, fontsize=7)
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=6)
    ax.grid(alpha=0.3)
