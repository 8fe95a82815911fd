"""Plot a random-label run's CSV: accuracy and effective rank at each phase end, one line per method.

Run:
    python -m benchmarks.random_labels.plot benchmarks/results/random_labels_toolkit.csv \
        benchmarks/results/random_labels_toolkit.png
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..harness.cli import command, make_parser


def plot(csv_path: Path, out: Path) -> Path:
    """Two panels (train accuracy, effective rank of the hidden features) against the phase; returns ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        phases = [int(r["phase"]) for r in mine]
        axes[0].plot(phases, [float(r["accuracy"]) for r in mine], label=method)
        axes[1].plot(phases, [float(r.get("rank", "nan")) for r in mine], label=method)
    axes[0].set(xlabel="phase (labels re-drawn)", ylabel="train accuracy at phase end")
    axes[1].set(xlabel="phase (labels re-drawn)", ylabel="effective rank (mean over hidden layers)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Random-label memorisation ({csv_path.name}; one seed, CPU, reduced synthetic scale)", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> Path:
    """Parse ``CSV OUT`` and plot."""
    p = make_parser(command(__package__, "plot"), __doc__)
    p.add_argument("csv", type=Path, help="a CSV written by `python -m benchmarks.random_labels --out`")
    p.add_argument("out", type=Path, help="the PNG to write")
    args = p.parse_args(argv)
    return plot(args.csv, args.out)


if __name__ == "__main__":
    print(main())
