"""Plot return and inactive-neuron ratios against environment steps: one curve per method, mean and spread over seeds.

Run:
    python -m benchmarks.rl.plot runs/rl/HalfCheetah-v5 --out halfcheetah.png

The folder holds ``<method>/seed<k>/metrics.csv`` as written by ``python -m benchmarks.rl``.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np

PANELS = (
    ("eval/return", "evaluation return"),
    ("grama/ratio", "GraMa-inactive ratio"),
    ("dormant/ratio", "ReDo-dormant ratio"),
)


def read_series(path: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Steps and values of one logged key from a Lightning ``metrics.csv`` (rows without it are skipped)."""
    steps, values = [], []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            value = row.get(key, "")
            if value not in ("", None) and math.isfinite(float(value)):
                steps.append(int(row["step"]))
                values.append(float(value))
    return np.asarray(steps), np.asarray(values)


def aggregate(runs: list[tuple[np.ndarray, np.ndarray]], points: int = 200) -> tuple[np.ndarray, ...]:
    """Mean, min and max over runs, interpolated on a common grid of steps covered by every run."""
    runs = [(s, v) for s, v in runs if len(s)]
    if not runs:
        return (np.array([]),) * 4
    low, high = max(s[0] for s, _ in runs), min(s[-1] for s, _ in runs)
    grid = np.linspace(low, high, points) if high > low else np.array([low])
    curves = np.stack([np.interp(grid, s, v) for s, v in runs])
    return grid, curves.mean(0), curves.min(0), curves.max(0)


def plot(folder: Path, out: Path) -> Path:
    """Draw every method found in ``folder`` and write the figure to ``out`` (PNG).

    Raises:
        FileNotFoundError: If no ``<method>/seed<k>/metrics.csv`` is under ``folder``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = sorted({p.parent.parent.name for p in folder.glob("*/seed*/metrics.csv")})
    if not methods:
        raise FileNotFoundError(
            f"No <method>/seed<k>/metrics.csv under {folder}; run `python -m benchmarks.rl --out ...` first."
        )
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 3.6))
    for ax, (key, title) in zip(axes, PANELS, strict=True):
        for method in methods:
            files = sorted(folder.glob(f"{method}/seed*/metrics.csv"))
            grid, mean, low, high = aggregate([read_series(f, key) for f in files])
            if len(grid):
                (line,) = ax.plot(grid, mean, label=f"{method} ({len(files)} seeds)")
                ax.fill_between(grid, low, high, color=line.get_color(), alpha=0.2)
        ax.set_title(title)
        ax.set_xlabel("environment steps")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"{folder.name}: mean, min-max over seeds")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="<out>/<env> of a run of python -m benchmarks.rl")
    parser.add_argument("--out", type=Path, default=None, help="PNG to write (default: <folder>/curves.png)")
    args = parser.parse_args(argv)
    path = plot(args.folder, args.out or args.folder / "curves.png")
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
