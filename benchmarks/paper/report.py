"""``report <name>``: table and figure of an RL experiment from whatever runs have finished.

Reads each finished run's ``summary.json`` and ``metrics.csv`` (the RL runner's) and aggregates per cell and
method over seeds: the final evaluation return (mean, 95% bootstrap interval, interquartile mean), the score
normalised to vanilla's mean return on the same cell (where vanilla ran; mean and interval over seeds), the
final GraMa and ReDo inactive ratios, and the number of seeds; the runs that are missing are named.

The figure takes the paper's form of each experiment (:data:`FIGURES`): curves over environment steps with a
shaded 95% bootstrap interval over seeds (return, GraMa and ReDo ratios; Figs. 7, 8, 12), the proportion of
neurons each method flags for reset above the return (Fig. 4), normalised-score boxes with the inactive ratios
(Figs. 10-11), return against depth averaged over the tasks (Fig. 9), bars per threshold (Fig. 13) and
normalised scores per task (Table 8).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..harness import stats, style
from ..harness.runs import is_complete
from ..rl import plot as rl_plot
from . import curves
from .experiments import Experiment

COLUMNS = ("variant", "env", "method", "seeds", "return_mean", "return_low", "return_high", "return_iqm",
           "normalized_mean", "normalized_low", "normalized_high", "grama_ratio", "dormant_ratio")  # fmt: skip
ALL_TASKS = "mean over tasks"
FIGURES = {"fig4-variants": "variants", "fig9-depth": "depth", "fig10-dacer": "boxes", "fig13-tau": "tau",
           "table8-baselines": "normalized"}  # fmt: skip
"""The figure of each experiment; the others draw curves."""
PANELS = {"return": ("eval/return", "evaluation return"), "grama": ("grama/ratio", "GraMa-inactive ratio"),
          "redo": ("dormant/ratio", "ReDo-dormant ratio")}  # fmt: skip
OWN_RATIO = {"regrama": "grama/ratio", "redo": "dormant/ratio"}  # what each resetting method resets by

Key = tuple[str, str, str, int]  # (variant, env, method, seed)


def finished(experiment: Experiment, scale: str, out: Path) -> dict[Key, dict[str, Any]]:
    """Summaries of the finished runs, keyed ``(variant, env, method, seed)``; each holds its ``folder``."""
    found = {}
    for cell in experiment.cells_at(scale):
        root = out / experiment.name / scale / cell.variant
        for path in sorted(root.glob("*/*/*/seed*/summary.json")):
            if is_complete(path.parent):
                summary = json.loads(path.read_text())
                if summary["env"] == cell.env:
                    summary["folder"] = str(path.parent)
                    found[(cell.variant, cell.env, summary["method"], int(summary["seed"]))] = summary
    return found


def read_series(folder: str | Path, key: str) -> curves.Series:
    """Environment steps and values of one logged key of a run's ``metrics.csv`` (rows without it skipped)."""
    return rl_plot.read_series(Path(folder) / "metrics.csv", key)


def _row(variant: str, env: str, method: str, returns: Sequence[float], norm: Sequence[float] | None,
         grama: Sequence[float | str | None], dormant: Sequence[float | str | None]) -> dict[str, Any]:  # fmt: skip
    agg = stats.summarize(returns)
    row = {"variant": variant, "env": env, "method": method, "seeds": agg.n, "return_mean": agg.mean,
           "return_low": agg.low, "return_high": agg.high, "return_iqm": agg.iqm, "normalized_mean": "",
           "normalized_low": "", "normalized_high": "", "grama_ratio": _mean(grama),
           "dormant_ratio": _mean(dormant)}  # fmt: skip
    if norm is not None:
        n = stats.summarize(norm)
        row.update(normalized_mean=n.mean, normalized_low=n.low, normalized_high=n.high)
    return row


def _mean(values: Sequence[float | str | None]) -> float | str:
    """Mean of the values a run logged (``""``: none did)."""
    kept = [v for v in values if v is not None and v != ""]
    return float(np.mean(kept)) if kept else ""


def aggregate(experiment: Experiment, scale: str, runs: dict[Key, dict[str, Any]],
              seeds: Sequence[int]) -> list[dict[str, Any]]:  # fmt: skip
    """The table's rows: one per cell and method, then (several tasks) one per variant and method over tasks.

    A seed's normalised score is its return over vanilla's mean return on the same cell (none where that mean is
    not positive). The rows over tasks
    average each seed's returns over the tasks it finished all of (Fig. 9: "averaged over four tasks").
    """
    rows = []
    for cell in experiment.cells_at(scale):
        mine = {
            m: [runs[k] for s in seeds if (k := (cell.variant, cell.env, m, s)) in runs] for m in experiment.methods
        }
        vanilla = [r["final_eval_return"] for r in mine.get("vanilla", [])]
        for method, summaries in mine.items():
            if not summaries:
                continue
            returns = [r["final_eval_return"] for r in summaries]
            # A ratio to a non-positive return means nothing (smoke runs of MuJoCo tasks score below zero).
            norm = (
                list(stats.normalized(returns, float(np.mean(vanilla)))) if vanilla and np.mean(vanilla) > 0 else None
            )
            rows.append(_row(cell.variant, cell.env, method, returns, norm, [r["grama_ratio"] for r in summaries],
                             [r["dormant_ratio"] for r in summaries]))  # fmt: skip
    envs = list(dict.fromkeys(c.env for c in experiment.cells_at(scale)))
    if len(envs) > 1:
        for variant in dict.fromkeys(c.variant for c in experiment.cells_at(scale)):
            for method in experiment.methods:
                per_seed = [[runs[(variant, e, method, s)] for e in envs] for s in seeds
                            if all((variant, e, method, s) in runs for e in envs)]  # fmt: skip
                if per_seed:
                    returns = [float(np.mean([r["final_eval_return"] for r in one])) for one in per_seed]
                    grama = [_mean([r["grama_ratio"] for r in one]) for one in per_seed]
                    dormant = [_mean([r["dormant_ratio"] for r in one]) for one in per_seed]
                    rows.append(_row(variant, ALL_TASKS, method, returns, None, grama, dormant))
    return rows


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
    rows = aggregate(experiment, scale, runs, seeds)
    folder = out / experiment.name
    devices = sorted({r.get("device", "?") for r in runs.values()})
    missing_text = ", ".join(f"{v}/{e}/{m}/seed{s}" for v, e, m, s in missing) or "none"
    write_tables(folder, rows, COLUMNS, f"{experiment.name} ({experiment.reference}), {scale} scale, seeds "
                 f"{list(seeds)}, device {', '.join(devices)}; final evaluation return: mean [95% bootstrap interval] "
                 "and IQM over seeds; normalized = return / vanilla's mean return on the same cell (blank where "
                 "vanilla did not run or its mean return is not positive)",
                 f"Missing runs ({len(missing)}): {missing_text}")  # fmt: skip
    figure(experiment, scale, runs, rows, folder / "figure.png")
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


# -- figures ---------------------------------------------------------------------------------------------------
def figure(experiment: Experiment, scale: str, runs: dict[Key, dict[str, Any]], rows: list[dict[str, Any]],
           path: Path) -> None:  # fmt: skip
    """Draw the experiment's figure (:data:`FIGURES`) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kind = FIGURES.get(experiment.name, "curves")
    cells = [(c.variant, c.env) for c in experiment.cells_at(scale)]
    methods = [m for m in experiment.methods if any(k[2] == m for k in runs)]
    if kind in ("curves", "variants", "boxes"):
        panels = {"curves": ("return", "grama", "redo"), "variants": ("own", "return"),
                  "boxes": ("box", "grama", "redo")}[kind]  # fmt: skip
        size = (max(5.0, 3.2 * len(cells) + 0.8), 2.4 * len(panels) + 0.4)
        fig, axes = plt.subplots(len(panels), len(cells), figsize=size, squeeze=False)
        for j, (variant, env) in enumerate(cells):
            title = env if len({v for v, _ in cells}) == 1 else f"{variant} ({env})"
            for i, panel in enumerate(panels):
                _panel(axes[i][j], panel, variant, env, methods, runs, rows, title if i == 0 else "")
        axes[panels.index("return" if "return" in panels else "grama")][0].legend(fontsize=6)  # every method
    elif kind == "depth":
        fig, ax = plt.subplots(figsize=(4.5, 3.4))
        _depth(ax, rows, methods)
    else:
        fig, ax = plt.subplots(figsize=(max(4.5, 1.6 * len(cells)), 3.4))
        _bars(ax, rows, methods, cells, normalized=kind == "normalized")
    fig.suptitle(f"{experiment.name} ({experiment.reference}), {scale} scale\nmean and 95% bootstrap interval over "
                 "seeds (n in the legend)", fontsize=8)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _panel(ax: Any, panel: str, variant: str, env: str, methods: list[str], runs: dict[Key, dict[str, Any]],
           rows: list[dict[str, Any]], title: str) -> None:  # fmt: skip
    mine = {m: [r for (v, e, mm, _), r in sorted(runs.items()) if (v, e, mm) == (variant, env, m)] for m in methods}
    if panel == "box":
        _box(ax, mine, title)
        return
    if panel == "own":  # Fig. 4 top: the proportion of neurons the method's own criterion flags at each reset
        series = {m: [read_series(r["folder"], OWN_RATIO[m]) for r in rs] for m, rs in mine.items() if m in OWN_RATIO}
        curves.draw(ax, series, "proportion flagged for reset", title)
        return
    key, label = PANELS[panel]
    curves.draw(ax, {m: [read_series(r["folder"], key) for r in rs] for m, rs in mine.items()}, label, title)


def _box(ax: Any, mine: dict[str, list[dict[str, Any]]], title: str) -> None:
    """Fig. 10: normalised final returns per method, boxes over seeds, whiskers at min and max, the median line."""
    vanilla = [r["final_eval_return"] for r in mine.get("vanilla", [])]
    if not vanilla or np.mean(vanilla) <= 0:
        ax.set_title(f"{title}\n(no vanilla run with a positive return to normalise by)", fontsize=7)
        return
    methods = [m for m, rs in mine.items() if rs]
    data = [stats.normalized([r["final_eval_return"] for r in mine[m]], float(np.mean(vanilla))) for m in methods]
    boxes = ax.boxplot(data, whis=(0, 100), patch_artist=True, medianprops={"color": "black"})
    for patch, method in zip(boxes["boxes"], methods, strict=True):
        patch.set_facecolor(style.color(method))
    ax.set_xticks(range(1, len(methods) + 1), [f"{style.label(m)}\n(n={len(mine[m])})" for m in methods], fontsize=6)
    ax.set_ylabel("normalised score (vanilla = 1)", fontsize=7)
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=6)


def _depth(ax: Any, rows: list[dict[str, Any]], methods: list[str]) -> None:
    """Fig. 9: final return averaged over the tasks against the number of BRO-net blocks."""
    over = [r for r in rows if r["env"] == ALL_TASKS] or rows  # one task: that task's rows
    for method in methods:
        mine = sorted((int(r["variant"].removeprefix("blocks")), r) for r in over if r["method"] == method)
        if not mine:
            continue
        xs = [x for x, _ in mine]
        n = min(r["seeds"] for _, r in mine)
        ax.plot(xs, [r["return_mean"] for _, r in mine], "o-", color=style.color(method),
                label=f"{style.label(method)} (n={n})")  # fmt: skip
        ax.fill_between(xs, [r["return_low"] for _, r in mine], [r["return_high"] for _, r in mine],
                        color=style.color(method), alpha=0.2, lw=0)  # fmt: skip
    ax.set_xticks(sorted({int(r["variant"].removeprefix("blocks")) for r in over}))
    ax.set_xlabel("BRO-net blocks (actor and critic)", fontsize=8)
    ax.set_ylabel("final return, mean over tasks" if over is not rows else "final return", fontsize=8)
    ax.legend(fontsize=7)


def _bars(
    ax: Any, rows: list[dict[str, Any]], methods: list[str], cells: list[tuple[str, str]], normalized: bool
) -> None:
    """Fig. 13 (return per threshold) and Table 8 (normalised score per task): one bar per method, 95% interval."""
    key = "normalized" if normalized else "return"
    width = 0.8 / max(1, len(methods))
    for i, method in enumerate(methods):
        for j, (variant, env) in enumerate(cells):
            row = next((r for r in rows if (r["variant"], r["env"], r["method"]) == (variant, env, method)), None)
            if row is None or row[f"{key}_mean"] == "":
                continue
            mean = row[f"{key}_mean"]
            err = [[mean - row[f"{key}_low"]], [row[f"{key}_high"] - mean]]
            ax.bar(j + i * width, mean, width, yerr=err, color=style.color(method), capsize=2,
                   label=f"{style.label(method)} (n={row['seeds']})" if j == 0 else None)  # fmt: skip
    names = [env if normalized else variant.removeprefix("tau") for variant, env in cells]
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cells))], names, fontsize=7)
    ax.set_xlabel("task" if normalized else "threshold tau (GraMa for ReGraMa, ReDo's for ReDo)", fontsize=8)
    ax.set_ylabel("final return / vanilla's mean" if normalized else "final return", fontsize=8)
    if normalized:
        ax.axhline(1.0, color=style.color("vanilla"), lw=0.8, ls="--")
    ax.legend(fontsize=7)
