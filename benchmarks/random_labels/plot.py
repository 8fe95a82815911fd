"""The random-label probe's figure: per phase, accuracy, both ratios and effective rank per method (seed mean)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .fit import PhaseRow

PANELS = (
    ("accuracy", "training accuracy at the phase's end"),
    ("grama", "GraMa ratio"),
    ("dormant", "ReDo ratio"),
    ("rank", "effective rank (hidden layers)"),
)


def plot_phases(rows: list[PhaseRow], out: Path) -> Path:
    """Write the figure to ``out`` (PNG): one curve per method, a band from the lowest to the highest seed.

    Phases in which the method reset neurons are marked on the accuracy curve.

    Args:
        rows: The per-phase rows of every method and seed.
        out: The PNG.

    Returns:
        ``out``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    methods = list(dict.fromkeys(r.method for r in rows))
    seeds = sorted({r.seed for r in rows})
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 3.6))
    for ax, (field, title) in zip(axes, PANELS, strict=True):
        for method in methods:
            mine = [r for r in rows if r.method == method]
            phases = sorted({r.phase for r in mine})
            values = np.array([[getattr(r, field) for r in mine if r.phase == p] for p in phases])
            (line,) = ax.plot(phases, values.mean(1), marker=".", label=method)
            if len(seeds) > 1:
                ax.fill_between(phases, values.min(1), values.max(1), color=line.get_color(), alpha=0.2)
            if field == "accuracy":
                reset = [p for p in phases if sum(r.reset for r in mine if r.phase == p) > 0]
                ax.plot(reset, [values.mean(1)[phases.index(p)] for p in reset], "v", color=line.get_color(),
                        markersize=5, linestyle="none")  # fmt: skip
        ax.set_title(title)
        ax.set_xlabel("phase (labels re-drawn)")
        ax.grid(alpha=0.3)
    axes[0].legend(title="v: neurons reset in the phase", fontsize=8, title_fontsize=8)
    spread = f"mean and min-max over {len(seeds)} seeds" if len(seeds) > 1 else "one seed"
    fig.suptitle(f"Random-label memorisation ({spread})")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
