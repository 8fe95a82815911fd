"""The random-label probe's figure: per phase, accuracy, both ratios and effective rank per method (seed mean)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..harness import style

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .fit import PhaseRow

PANELS = (
    ("accuracy", "training accuracy at the phase's end"),
    ("grama", "GraMa ratio"),
    ("dormant", "ReDo ratio"),
    ("rank", "effective rank (hidden layers)"),
)


def plot_phases(rows: list[PhaseRow], out: Path) -> Path:
    """Write the figure of :func:`draw_phases` to ``out`` (PNG) and return ``out``."""
    fig = draw_phases(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out


def draw_phases(rows: list[PhaseRow]) -> Figure:
    """One curve per method, a band from the lowest to the highest seed, per panel of :data:`PANELS`.

    Each method has its colour of every plot of the benchmarks; phases in which the method reset neurons are
    marked on the accuracy curve.

    Args:
        rows: The per-phase rows of every method and seed.

    Returns:
        The figure (drawn without pyplot: nothing global is touched).
    """
    import numpy as np
    from matplotlib.figure import Figure

    methods = list(dict.fromkeys(r.method for r in rows))
    seeds = sorted({r.seed for r in rows})
    fig = Figure(figsize=(5 * len(PANELS), 3.6))
    axes = fig.subplots(1, len(PANELS))
    for ax, (field, title) in zip(axes, PANELS, strict=True):
        for method in methods:
            mine = [r for r in rows if r.method == method]
            phases = sorted({r.phase for r in mine})
            values = np.array([[getattr(r, field) for r in mine if r.phase == p] for p in phases])
            color = style.color(method)
            ax.plot(phases, values.mean(1), marker=".", label=style.label(method), color=color)
            if len(seeds) > 1:
                ax.fill_between(phases, values.min(1), values.max(1), color=color, alpha=0.2)
            if field == "accuracy":
                reset = [p for p in phases if sum(r.reset for r in mine if r.phase == p) > 0]
                ax.plot(reset, [values.mean(1)[phases.index(p)] for p in reset], "v", color=color,
                        markersize=5, linestyle="none")  # fmt: skip
        ax.set_title(title)
        ax.set_xlabel("phase (labels re-drawn)")
        ax.grid(alpha=0.3)
    axes[0].legend(title="v: neurons reset in the phase", fontsize=8, title_fontsize=8)
    spread = f"mean and min-max over {len(seeds)} seeds" if len(seeds) > 1 else "one seed"
    fig.suptitle(f"Random-label memorisation ({spread})")
    fig.tight_layout()
    return fig
