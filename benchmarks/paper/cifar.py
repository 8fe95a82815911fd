"""``fig5-cifar``: the class-incremental CIFAR-100 benchmark (paper Fig. 5 right) through the paper's interface.

``run`` is one invocation of ``python -m benchmarks.cifar100_continual run`` (vanilla / ReDo / ReGraMa; its run
folders skip finished runs); ``report`` reads each finished run's ``metrics.csv`` (one row per epoch) and
``summary.json``: per method the final and the mean test accuracy over seeds (mean, 95% bootstrap interval) and
the final GraMa and ReDo ratios, and the figure of Fig. 5 right (test accuracy and GraMa ratio per epoch, shaded
95% bootstrap intervals over seeds).

Scales: ``paper`` is the benchmark's ``paper`` preset (Sec. 4.2: ReLU MLP, a class added every 15 epochs up to
100, tau 0.01 / 0.02, resets at each class addition) with appendix A's seeds 0-4; ``cpu`` keeps the preset but
stops at 20 classes with a class every 5 epochs (80 epochs, 3 seeds): it shows the first stretch of the
accuracy decline and of the ratio's periodic rise, not the plateau the paper reaches at epoch ~150; ``smoke``
is 4 classes on whatever small data the tests write (their files are not the official archive, so the md5
check is skipped at that scale only). CIFAR-100 is not downloaded: put ``cifar-100-python/`` under
``--data-dir``; without it the benchmark's own error names the folder and the fix.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..harness import stats
from ..harness.runs import is_complete
from . import curves
from .report import write_tables

METHODS = ("vanilla", "redo", "regrama")
SCALES: dict[str, tuple[str, ...]] = {
    "smoke": ("--max-classes", "4", "--initial-classes", "2", "--epochs-per-increment", "2", "--val-per-class", "4",
              "--batch-size", "8", "--widths", "32", "32", "--log-every", "1", "--no-verify-integrity"),
    "cpu": ("--max-classes", "20", "--epochs-per-increment", "5"),
    "paper": (),
}  # fmt: skip
SEEDS = {"smoke": (0,), "cpu": (0, 1, 2), "paper": (0, 1, 2, 3, 4)}
COST_HOURS = {"smoke": 0.003, "cpu": 0.4, "paper": 34.0}  # rough, 2 CPU cores: ~2.25 h per paper run (README)
COLUMNS = ("method", "seeds", "final_acc_mean", "final_acc_low", "final_acc_high", "mean_acc_mean", "mean_acc_low",
           "mean_acc_high", "final_grama_ratio", "final_dormant_ratio")  # fmt: skip


def folder(out: Path, scale: str) -> Path:
    """The benchmark's results folder at ``scale``."""
    return out / "fig5-cifar" / scale


def argv(scale: str, out: Path, seeds: tuple[int, ...], accelerator: str, data_dir: Path) -> list[str]:
    """The benchmark's command line at ``scale``."""
    return ["run", "--preset", "paper", "--methods", *METHODS, "--seeds", *map(str, seeds), "--data-dir",
            str(data_dir), "--out", str(folder(out, scale)), "--accelerator", accelerator, "--no-progress",
            "--resume", *SCALES[scale]]  # fmt: skip


def run(scale: str, out: Path, seeds: tuple[int, ...] | None = None, accelerator: str = "auto",
        data_dir: Path | str = "data") -> None:  # fmt: skip
    """Run the benchmark at ``scale`` (finished runs are skipped by the benchmark)."""
    from ..cifar100_continual.cli import main

    main(argv(scale, out, SEEDS[scale] if seeds is None else seeds, accelerator, data_dir))


def _runs(root: Path) -> dict[str, list[tuple[dict[str, Any], list[dict[str, str]]]]]:
    """Finished runs by method, in seed order: (summary, metrics rows)."""
    found: dict[str, list] = {}
    for method in METHODS:
        for path in sorted((root / method).glob("seed*/summary.json"), key=lambda p: int(p.parent.name[4:])):
            if is_complete(path.parent):
                with (path.parent / "metrics.csv").open(newline="") as f:
                    found.setdefault(method, []).append((json.loads(path.read_text()), list(csv.DictReader(f))))
    return found


def report(scale: str, out: Path) -> Path:
    """Write ``table.csv``, ``table.md`` and ``figure.png`` under ``<out>/fig5-cifar``.

    Raises:
        ValueError: if no run has finished at ``scale``.
    """
    runs = _runs(folder(out, scale))
    if not runs:
        raise ValueError(f"no finished run of fig5-cifar at {scale} scale under {out}; run it first.")
    rows = []
    for method, done in runs.items():
        final = stats.summarize([s["final_test_acc"] for s, _ in done])
        mean = stats.summarize([s["mean_test_acc"] for s, _ in done])
        rows.append({
            "method": method, "seeds": final.n, "final_acc_mean": final.mean, "final_acc_low": final.low,
            "final_acc_high": final.high, "mean_acc_mean": mean.mean, "mean_acc_low": mean.low,
            "mean_acc_high": mean.high,
            "final_grama_ratio": float(np.mean([s["final_grama_ratio"] for s, _ in done])),
            "final_dormant_ratio": float(np.mean([s["final_dormant_ratio"] for s, _ in done])),
        })  # fmt: skip
    seeds = sorted({s["seed"] for done in runs.values() for s, _ in done})
    devices = sorted({s.get("device", "?") for done in runs.values() for s, _ in done})
    missing = [
        f"{m}/seed{s}" for m in METHODS for s in SEEDS[scale] if s not in {d["seed"] for d, _ in runs.get(m, [])}
    ]
    target = out / "fig5-cifar"
    write_tables(target, rows, COLUMNS, f"fig5-cifar (Fig. 5 right), {scale} scale, seeds {seeds}, device "
                 f"{', '.join(devices)}: class-incremental CIFAR-100, ReLU MLP; accuracy on the test images of the "
                 "classes seen so far (mean [95% bootstrap interval] over seeds)",
                 f"Missing runs ({len(missing)}): {', '.join(missing) or 'none'}")  # fmt: skip
    _figure(runs, target / "figure.png", scale)
    return target


def _series(rows: list[dict[str, str]], key: str) -> curves.Series:
    points = [(float(r["epoch"]), float(r[key])) for r in rows if r.get(key) not in ("", None, "nan")]
    return np.array([p[0] for p in points]), np.array([p[1] for p in points])


def _figure(runs: dict[str, list], path: Path, scale: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, (key, label) in zip(axes, (("test_acc", "test accuracy"), ("grama_ratio", "GraMa ratio")), strict=True):
        curves.draw(ax, {m: [_series(rows, key) for _, rows in done] for m, done in runs.items()}, label)
        ax.set_xlabel("epoch", fontsize=7)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"fig5-cifar ({scale} scale): mean and 95% bootstrap interval over seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
