"""Fig. 5 (right) of the paper from a results folder: test accuracy and GraMa ratio per epoch, one curve per method."""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..harness import style
from ..harness.runs import is_complete
from .config import METHODS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LABELS = {
    "test_acc": "test accuracy (seen classes)",
    "grama_ratio": "GraMa ratio",
    "dormant_ratio": "dormant (ReDo) ratio",
    "train_acc": "training accuracy",
    "train_loss": "training loss",
    "val_acc": "validation accuracy",
    "reset_neurons": "neurons reset",
}


def read_metrics(path: Path) -> dict[str, np.ndarray]:
    """The columns of one ``metrics.csv`` as float arrays (empty cells are NaN)."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    return {key: np.array([float(r[key]) if r[key] else math.nan for r in rows]) for key in rows[0]}


def load_results(
    root: str | Path, include_incomplete: bool = False
) -> tuple[dict[str, list[dict[str, np.ndarray]]], list[Path]]:
    """The runs under ``root`` (``<root>/<method>/seed<k>/metrics.csv``), by method, in seed order.

    Args:
        root: A results folder.
        include_incomplete: Also load runs that have not finished (``benchmarks.harness.runs.is_complete``).

    Returns:
        The runs' metrics, and the folders of the incomplete runs (loaded or not).
    """
    runs: dict[str, list[dict[str, np.ndarray]]] = {}
    incomplete = []
    for path in sorted(Path(root).glob("*/seed*/metrics.csv"), key=lambda p: (p.parent.parent.name, _seed(p))):
        if not is_complete(path.parent):
            incomplete.append(path.parent)
            if not include_incomplete:
                continue
        metrics = read_metrics(path)
        if metrics:
            runs.setdefault(path.parent.parent.name, []).append(metrics)
    return runs, incomplete


def _seed(path: Path) -> int:
    digits = path.parent.name.removeprefix("seed")
    return int(digits) if digits.isdigit() else 0


def plot_results(
    root: str | Path,
    out: str | Path | None = None,
    metrics: Sequence[str] = ("test_acc", "grama_ratio"),
    spread: str = "std",
    smooth: int = 1,
    include_incomplete: bool = False,
) -> Path:
    """Draw the results under ``root`` (:func:`draw_results`) and write the figure.

    Args:
        root: A results folder written by ``python -m benchmarks.cifar100_continual run``.
        out: PNG to write; default ``<root>/fig5_right.png``.
        metrics: Columns of ``metrics.csv`` to draw, one panel each.
        spread: See :func:`draw_results`.
        smooth: Moving average over this many epochs (1: none).
        include_incomplete: Also draw runs that have not finished.

    Returns:
        The PNG's path.

    Raises:
        FileNotFoundError: When ``root`` holds no run.
        ValueError: On an unknown metric or spread.
    """
    fig = draw_results(root, metrics, spread, smooth, include_incomplete)
    out = Path(out) if out is not None else Path(root) / "fig5_right.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out


def draw_results(
    root: str | Path,
    metrics: Sequence[str] = ("test_acc", "grama_ratio"),
    spread: str = "std",
    smooth: int = 1,
    include_incomplete: bool = False,
) -> Figure:
    """One panel per metric against epoch: per method the mean over seeds and a shaded spread.

    Each method has its colour of every plot of the benchmarks (:mod:`benchmarks.harness.style`); dotted vertical
    lines mark the class additions, ticks at the bottom of a panel the epochs in which a method reset neurons (in
    its first seed).

    Only finished runs are drawn unless ``include_incomplete``; the runs left out are named on stderr. With
    ``include_incomplete`` a method's curves are cut to its shortest run and its label counts the incomplete ones.

    Args:
        root: A results folder written by ``python -m benchmarks.cifar100_continual run``.
        metrics: Columns of ``metrics.csv`` to draw, one panel each.
        spread: ``"std"`` (mean ± one standard deviation over seeds), ``"sem"`` (± standard error) or
            ``"minmax"`` (the range over seeds).
        smooth: Moving average over this many epochs (1: none).
        include_incomplete: Also draw runs that have not finished.

    Returns:
        The figure (drawn without pyplot: no GUI backend, nothing global touched).

    Raises:
        FileNotFoundError: When ``root`` holds no run.
        ValueError: On an unknown metric or spread.
    """
    from matplotlib.figure import Figure
    from matplotlib.transforms import blended_transform_factory

    runs, incomplete = load_results(root, include_incomplete)
    if not runs:
        if incomplete:
            raise FileNotFoundError(
                f"No finished run under {root}, {len(incomplete)} incomplete: finish them (run ... --resume) or "
                "pass --include-incomplete."
            )
        raise FileNotFoundError(f"No <method>/seed<k>/metrics.csv under {root}: run the benchmark first.")
    if incomplete and not include_incomplete:
        names = ", ".join(str(p.relative_to(root)) for p in incomplete)
        print(
            f"left out {len(incomplete)} incomplete run(s): {names} (--include-incomplete draws them)", file=sys.stderr
        )
    unfinished = {m: sum(p.parent.name == m for p in incomplete) for m in runs} if include_incomplete else {}
    if spread not in ("std", "sem", "minmax"):
        raise ValueError(f"`spread` must be 'std', 'sem' or 'minmax', got {spread!r}.")
    if smooth < 1:
        raise ValueError(f"`smooth` must be >= 1, got {smooth}.")
    known = set.intersection(*(set(r) for method in runs.values() for r in method))
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise ValueError(f"Unknown metrics {unknown}; the results have {sorted(known)}.")
    order = [m for m in METHODS if m in runs] + sorted(m for m in runs if m not in METHODS)
    fig = Figure(figsize=(5.5 * len(metrics), 4))
    axes = fig.subplots(1, len(metrics), squeeze=False)
    additions = class_additions(runs)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for epoch in additions:
            ax.axvline(epoch, color="0.6", linestyle=":", linewidth=0.8, zorder=0)
        ticks = blended_transform_factory(ax.transData, ax.transAxes)  # x: epochs, y: the panel's height
        for method in order:
            length = min(len(r[metric]) for r in runs[method])
            values = np.stack([_smooth(r[metric][:length], smooth) for r in runs[method]])
            epochs = runs[method][0]["epoch"][:length]
            mean = np.nanmean(values, axis=0)
            if spread == "minmax":
                low, high = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
            else:
                dev = np.nanstd(values, axis=0)
                if spread == "sem":
                    dev = dev / math.sqrt(len(values))
                low, high = mean - dev, mean + dev
            color = style.color(method)
            note = f", {unfinished[method]} incomplete" if unfinished.get(method) else ""
            label = f"{style.label(method)} ({len(values)} seed{'s' if len(values) > 1 else ''}{note})"
            ax.plot(epochs, mean, color=color, label=label, linewidth=1.2)
            if len(values) > 1:
                ax.fill_between(epochs, low, high, color=color, alpha=0.25, linewidth=0)
            first = runs[method][0]
            resets = first["epoch"][first["reset_neurons"] > 0] if "reset_neurons" in first else []
            if len(resets):
                ax.plot(resets, np.zeros(len(resets)), "|", color=color, markersize=8, transform=ticks)
        ax.set_xlabel("epoch")
        ax.set_ylabel(LABELS.get(metric, metric))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, title="dotted: class added, |: neurons reset", title_fontsize=8)
    fig.suptitle(_title(Path(root)), fontsize=10)
    fig.tight_layout()
    return fig


def class_additions(runs: dict[str, list[dict[str, np.ndarray]]]) -> list[float]:
    """The epochs at which the class count grows (the ``classes`` column of the runs' metrics)."""
    for method_runs in runs.values():
        for r in method_runs:
            if "classes" in r and len(r["classes"]) > 1:
                grows = np.flatnonzero(np.diff(r["classes"]) > 0) + 1
                return r["epoch"][grows].tolist()
    return []


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if window == 1:
        return values
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def _title(root: Path) -> str:
    """The schedule and model from the first summary.json found, if any."""
    for path in sorted(root.glob("*/seed*/summary.json")):
        config = json.loads(path.read_text())["config"]
        net = "MLP " + "x".join(map(str, config["widths"])) if config["model"] == "mlp" else "ResNet-18"
        return (
            f"Class-incremental CIFAR-100, {net}: {config['initial_classes']} classes, "
            f"+{config['classes_per_increment']} every {config['epochs_per_increment']} epochs "
            f"(up to {config['max_classes']})"
        )
    return "Class-incremental CIFAR-100"
