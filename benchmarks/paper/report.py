"""``report <name>``: table and figure of an experiment from whatever runs have finished.

Reads each finished run's ``summary.json`` (the RL runner's), aggregates per cell and method over seeds (mean,
95% bootstrap interval, IQM of the final evaluation return; score normalised to vanilla's mean where vanilla
ran; mean GraMa and ReDo inactive ratios) and names the runs that are missing.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from ..harness import stats, style
from ..harness.runs import is_complete
from .experiments import Experiment

COLUMNS = ("variant", "env", "method", "seeds", "return_mean", "return_low", "return_high", "return_iqm",
           "normalized_to_vanilla", "grama_ratio", "dormant_ratio")  # fmt: skip


def finished(experiment: Experiment, scale: str, out: Path) -> dict[tuple[str, str, str, int], dict]:
    """Summaries of the finished runs, keyed ``(variant, env, method, seed)``."""
    found = {}
    for cell in experiment.cells_at(scale):
        root = out / experiment.name / scale / cell.variant
        for path in sorted(root.glob("*/*/*/seed*/summary.json")):
            if is_complete(path.parent):
                summary = json.loads(path.read_text())
                if summary["env"] == cell.env:
                    found[(cell.variant, cell.env, summary["method"], int(summary["seed"]))] = summary
    return found


def report(experiment: Experiment, scale: str, out: Path, seeds: tuple[int, ...] | None = None) -> Path:
    """Write ``table.csv``, ``table.md`` and ``figure.png`` under ``<out>/<name>``; return that folder.

    Raises:
        ValueError: if no run of the experiment has finished.
    """
    seeds = experiment.scale(scale).seeds if seeds is None else seeds
    runs = finished(experiment, scale, out)
    expected = [(c.variant, c.env, m, s) for c in experiment.cells_at(scale) for m in experiment.methods for s in seeds]
    missing = [key for key in expected if key not in runs]
    if not runs:
        raise ValueError(f"no finished run of {experiment.name} at {scale} scale under {out}; run it first.")
    rows = []
    for cell in experiment.cells_at(scale):
        per_method = {
            m: [runs[(cell.variant, cell.env, m, s)] for s in seeds if (cell.variant, cell.env, m, s) in runs]
            for m in experiment.methods
        }
        vanilla = [r["final_eval_return"] for r in per_method.get("vanilla", [])]
        for method, summaries in per_method.items():
            if not summaries:
                continue
            returns = [r["final_eval_return"] for r in summaries]
            agg = stats.summarize(returns)
            norm = float(np.mean(stats.normalized(returns, float(np.mean(vanilla))))) if vanilla else ""
            rows.append({
                "variant": cell.variant, "env": cell.env, "method": method, "seeds": agg.n,
                "return_mean": agg.mean, "return_low": agg.low, "return_high": agg.high, "return_iqm": agg.iqm,
                "normalized_to_vanilla": norm,
                "grama_ratio": float(np.mean([r["grama_ratio"] for r in summaries])),
                "dormant_ratio": float(np.mean([r["dormant_ratio"] for r in summaries])),
            })  # fmt: skip
    folder = out / experiment.name
    missing_text = ", ".join(f"{v}/{e}/{m}/seed{s}" for v, e, m, s in missing) or "none"
    write_tables(folder, rows, COLUMNS, f"{experiment.name} ({experiment.reference}), {scale} scale, seeds "
                 f"{list(seeds)}", f"Missing runs ({len(missing)}): {missing_text}")  # fmt: skip
    _figure(rows, experiment, scale, folder / "figure.png")
    return folder


def write_tables(folder: Path, rows: list[dict], columns: tuple[str, ...], title: str, footer: str) -> None:
    """``table.csv`` and ``table.md`` (title, the rows, then ``footer``) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "table.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    cells = (" | ".join(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in columns) for r in rows)
    lines = [f"# {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += [f"| {line} |" for line in cells] + ["", footer]
    (folder / "table.md").write_text("\n".join(lines) + "\n")


def _figure(rows: list[dict], experiment: Experiment, scale: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys((r["variant"], r["env"]) for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.5 * len(groups)), 3.5))
    for i, method in enumerate(methods):
        for j, group in enumerate(groups):
            row = next((r for r in rows if (r["variant"], r["env"]) == group and r["method"] == method), None)
            if row is None:
                continue
            err = [[row["return_mean"] - row["return_low"]], [row["return_high"] - row["return_mean"]]]
            ax.bar(j + i * width, row["return_mean"], width, yerr=err, color=style.color(method),
                   label=style.label(method) if j == 0 else None, capsize=2)  # fmt: skip
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))])
    ax.set_xticklabels([f"{v}\n{e}" for v, e in groups], fontsize=7)
    ax.set_ylabel("final evaluation return (mean, 95% CI)")
    ax.set_title(f"{experiment.name} ({scale} scale)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
