"""``probe-architectures``: the random-labels probe on four networks, vanilla / ReDo / ReGraMa.

Each network is one invocation of ``python -m benchmarks.random_labels`` (its CSV is the finished run; an
existing CSV is skipped). The report takes each method's accuracy over the later phases (all but the first
fifth, as the probe's own summary), its inactive ratios and the neurons it reset, per network, over seeds.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..harness import stats, style
from .report import write_tables

NETWORKS = ("relu", "leaky_relu", "layer_norm", "bro")
METHODS = ("vanilla", "redo", "regrama")
SCALES = {
    "smoke": ("--phases", "3", "--samples", "128", "--width", "16", "--depth", "2"),
    "cpu": (),  # the probe's defaults: 20 phases, 1024 samples, 3 x 128
    "paper": (),  # the probe is not in the paper: the same settings as cpu
}
SEEDS = {"smoke": (0,), "cpu": (0, 1, 2, 3, 4), "paper": (0, 1, 2, 3, 4)}
# Rough, one run at a time: a cpu-scale run (one network, method and seed) took 29-46 s on this project's 2-core
# machine, and a scale has 4 networks x 3 methods x its seeds.
COST_HOURS = {"smoke": 0.005, "cpu": 0.6, "paper": 0.6}
COLUMNS = ("network", "method", "seeds", "acc_later_mean", "acc_later_low", "acc_later_high", "grama_ratio",
           "dormant_ratio", "neurons_reset")  # fmt: skip


def csv_path(out: Path, scale: str, network: str) -> Path:
    """The CSV of one network's runs."""
    return out / "probe-architectures" / scale / f"{network}.csv"


def run(scale: str, out: Path, seeds: tuple[int, ...] | None = None) -> None:
    """Run the probe on every network not yet done."""
    from ..random_labels.cli import main as probe_main

    seeds = SEEDS[scale] if seeds is None else seeds
    for network in NETWORKS:
        path = csv_path(out, scale, network)
        if path.exists():
            print(f"{path}: done before, skipped (delete it to re-run)")
            continue
        probe_main(["--network", network, "--methods", *METHODS, "--seeds", *map(str, seeds), "--out", str(path),
                    *SCALES[scale]])  # fmt: skip


def report(scale: str, out: Path) -> Path:
    """Write ``table.csv``, ``table.md`` and ``figure.png`` under ``<out>/probe-architectures``.

    Raises:
        ValueError: if no network's runs have finished.
    """
    rows, missing = [], []
    for network in NETWORKS:
        path = csv_path(out, scale, network)
        if not path.exists():
            missing.append(network)
            continue
        with path.open(newline="") as f:
            data = list(csv.DictReader(f))
        phases = max(int(r["phase"]) for r in data) + 1
        first = max(1, phases // 5)
        for method in METHODS:
            mine = [r for r in data if r["method"] == method]
            seeds = sorted({int(r["seed"]) for r in mine})
            later = [np.mean([float(r["accuracy"]) for r in mine if int(r["seed"]) == s and int(r["phase"]) >= first])
                     for s in seeds]  # fmt: skip
            agg = stats.summarize(later)
            rows.append({
                "network": network, "method": method, "seeds": agg.n, "acc_later_mean": agg.mean,
                "acc_later_low": agg.low, "acc_later_high": agg.high,
                "grama_ratio": float(np.mean([float(r["grama"]) for r in mine])),
                "dormant_ratio": float(np.mean([float(r["dormant"]) for r in mine])),
                "neurons_reset": float(np.mean([sum(int(r["reset"]) for r in mine if int(r["seed"]) == s)
                                                for s in seeds])),
            })  # fmt: skip
    if not rows:
        raise ValueError(f"no finished run of probe-architectures at {scale} scale under {out}; run it first.")
    folder = out / "probe-architectures"
    write_tables(folder, rows, COLUMNS,
                 f"probe-architectures, {scale} scale (random labels; later phases = all but the first fifth)",
                 f"Missing networks ({len(missing)}): {', '.join(missing) or 'none'}")  # fmt: skip
    _figure(rows, folder / "figure.png", scale)
    return folder


def _figure(rows: list[dict], path: Path, scale: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    networks = list(dict.fromkeys(r["network"] for r in rows))
    width = 0.8 / len(METHODS)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for i, method in enumerate(METHODS):
        mine = {r["network"]: r for r in rows if r["method"] == method}
        xs = [j + i * width for j, n in enumerate(networks) if n in mine]
        sel = [mine[n] for n in networks if n in mine]
        err = [[r["acc_later_mean"] - r["acc_later_low"] for r in sel], [r["acc_later_high"] - r["acc_later_mean"]
                                                                           for r in sel]]  # fmt: skip
        kw = {"color": style.color(method), "label": style.label(method)}
        axes[0].bar(xs, [r["acc_later_mean"] for r in sel], width, yerr=err, capsize=2, **kw)
        axes[1].bar(xs, [r["neurons_reset"] for r in sel], width, **kw)
    for ax, title in zip(axes, ("accuracy, later phases (mean, 95% CI)", "neurons reset per run"), strict=True):
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(networks))])
        ax.set_xticklabels(networks, fontsize=8)
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"probe-architectures ({scale} scale)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
