"""``fig3-quadrants`` (paper Fig. 3): which kinds of neurons ReDo and ReGraMa reset in BRO-net.

Where the scores come from: both methods' selections on the same network, the same step and the same batch.
In a vanilla BRO-net run (:mod:`.neuron_runs`: no reset, so that neither method changes what the other sees),
the run's ReGraMa and ReDo callbacks measure every neuron of the critics and the actor at each recorded step
(every 1000 updates at ``cpu`` scale: the paper's reset steps). At each of the records of the last quarter of
the run, every neuron's ReDo score (activation magnitude over its layer mean: expressive capacity) and GraMa
score (gradient magnitude over its layer mean: learning capacity) are ranked over all scored neurons of the
agent, and the top 25% of each ranking is "high" (the paper's Sec. 4.1 rule). The neurons ReDo would reset
there are those with ReDo score <= 0.02, those ReGraMa would reset have GraMa score <= 0.01 (the paper's
thresholds, the callbacks' own selection rule). Per seed, the four kinds' shares among each method's
selections are pooled over those records; the report gives their mean over seeds with a 95% bootstrap interval,
and the number of seeds (a seed where a method selects no neuron has no share and is left out: ``seeds``
counts those that have one).

The paper shows one reset step of one run per method; pooling the last quarter's reset steps of the same
network is this project's choice, so that the two selections differ only by their metric.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..harness import stats, style
from . import neuron_runs
from .neuron_scores import Recorded
from .report import write_tables

NAME = "fig3-quadrants"
# Each bar: a method and the signal it selects on; "all": every scored neuron (the kinds' base rates).
METHODS: dict[str, str | None] = {"redo": "redo", "regrama": "grama", "all": None}
TOP = 0.25  # "we select the top 25% of neurons in each ranking"
LAST = 0.25  # the records analysed: the last quarter of the run
# (expressive, learning) high?  -> kind; colours after the paper's figure (white, dark blue, reds)
KINDS = {
    (True, True): ("high expr, high learn", "#ffffff"),
    (False, True): ("low expr, high learn", "#1f3b73"),
    (False, False): ("low expr, low learn", "#d62728"),
    (True, False): ("high expr, low learn", "#f4a582"),
}
COLUMNS = ("method", "kind", "seeds", "share_mean", "share_low", "share_high", "selected_per_step", "steps_analysed")


def run(scale: str, out: Path, seeds: tuple[int, ...] | None = None) -> None:
    """Run the vanilla BRO-net runs with score recording (shared with ``fig6b-irreversible``)."""
    neuron_runs.run(scale, out, seeds)


def high(scores: np.ndarray, top: float = TOP) -> np.ndarray:
    """Whether each neuron is in the top ``top`` fraction of ``scores`` (ties broken by position)."""
    k = int(np.ceil(top * scores.size))
    flags = np.zeros(scores.size, dtype=bool)
    flags[np.argsort(-scores, kind="stable")[:k]] = True
    return flags


def kind_counts(recorded: Recorded) -> tuple[dict[str, np.ndarray], dict[str, int], int, dict[str, np.ndarray]]:
    """How the neurons each method selects fall into the four kinds, pooled over the last quarter's records.

    Returns:
        Per method the count of each kind (``KINDS`` order), per method the neurons selected in all, the
        number of records analysed, and per method the neurons selected in each layer (``recorded.layers``).
    """
    steps = recorded.steps
    first = int(np.searchsorted(steps, steps[-1] * (1.0 - LAST), side="right"))
    rows = range(min(first, len(steps) - 1), len(steps))
    counts = {m: np.zeros(len(KINDS), dtype=np.int64) for m in METHODS}
    per_layer = {m: np.zeros(len(recorded.layers), dtype=np.int64) for m in METHODS}
    for i in rows:
        grama, redo = recorded.scores["grama"][i], recorded.scores["redo"][i]
        keep = np.isfinite(grama) & np.isfinite(redo)
        grama, redo, layer = grama[keep], redo[keep], recorded.layer_of()[keep]
        expressive, learning = high(redo), high(grama)
        for method, signal in METHODS.items():
            if signal is None:
                chosen = np.ones(grama.size, dtype=bool)
            else:
                chosen = (redo if signal == "redo" else grama) <= recorded.taus[signal]
            for j, (e, g) in enumerate(KINDS):
                counts[method][j] += int(np.sum(chosen & (expressive == e) & (learning == g)))
            per_layer[method] += np.bincount(layer[chosen], minlength=len(recorded.layers))
    return counts, {m: int(c.sum()) for m, c in counts.items()}, len(rows), per_layer


def report(scale: str, out: Path) -> Path:
    """Write ``table.csv``, ``table.md`` and ``figure.png`` under ``<out>/fig3-quadrants``.

    Raises:
        ValueError: If no run of the scale has finished (naming the missing seeds).
    """
    done, missing = neuron_runs.finished(NAME, scale, out)
    per_seed = {seed: kind_counts(recorded) for seed, recorded in done.items()}
    rows = []
    for method in METHODS:
        shares = [c[method] / total[method] for c, total, _, _ in per_seed.values() if total[method] > 0]
        selected = float(np.mean([total[method] / n for _, total, n, _ in per_seed.values()]))
        analysed = int(np.mean([n for _, _, n, _ in per_seed.values()]))
        for j, (name, _) in enumerate(KINDS.values()):
            agg = stats.summarize([s[j] for s in shares]) if shares else None
            rows.append({
                "method": method, "kind": name, "seeds": agg.n if agg else 0,
                "share_mean": agg.mean if agg else float("nan"), "share_low": agg.low if agg else float("nan"),
                "share_high": agg.high if agg else float("nan"), "selected_per_step": selected,
                "steps_analysed": analysed,
            })  # fmt: skip
    folder = out / NAME
    layers = next(iter(done.values())).layers
    where = {m: np.mean([c[3][m] / c[2] for c in per_seed.values()], axis=0) for m in METHODS if m != "all"}
    by_layer = "; ".join(f"{style.label(m)}: " + ", ".join(f"{n} {v:.1f}" for n, v in zip(layers, where[m], strict=True)
                                                          if v > 0) for m in where)  # fmt: skip
    write_tables(folder, rows, COLUMNS,
                 f"{NAME} (Fig. 3), {scale} scale: kinds of neurons each method selects on the same vanilla "
                 f"BRO-net ({neuron_runs.ENV[scale]}), seeds {sorted(done)}",
                 f"Shares over seeds (mean, 95% bootstrap CI) among the neurons selected at the last quarter's "
                 f"recorded steps; high = top {TOP:.0%} of the ranking; method 'all' = every scored neuron (the "
                 f"kinds' base rates). Selected per record by layer (mean over seeds): {by_layer}. Missing seeds "
                 f"({len(missing)}): {', '.join(map(str, missing)) or 'none'}")  # fmt: skip
    _figure(rows, folder / "figure.png", scale, len(done))
    return folder


def _figure(rows: list[dict], path: Path, scale: str, seeds: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for x, method in enumerate(METHODS):
        bottom = 0.0
        for name, colour in KINDS.values():
            row = next(r for r in rows if r["method"] == method and r["kind"] == name)
            share = row["share_mean"] if np.isfinite(row["share_mean"]) else 0.0
            edge = style.color(method if method in style.COLORS else "vanilla")
            ax.bar(x, share, 0.6, bottom=bottom, color=colour, edgecolor=edge, linewidth=1.5)
            if share > 0.04:
                ci = f"{share:.2f}\n[{row['share_low']:.2f}, {row['share_high']:.2f}]"
                ax.text(x, bottom + share / 2, ci, ha="center", va="center", fontsize=6,
                        color="white" if colour in ("#1f3b73", "#d62728") else "black")  # fmt: skip
            bottom += share
    first = {m: next(r for r in rows if r["method"] == m) for m in METHODS}
    ax.set_xticks(range(len(METHODS)))
    names = {**{m: style.label(m) for m in METHODS}, "all": "all scored"}
    ax.set_xticklabels([f"{names[m]}\n{first[m]['seeds']} seeds\n{first[m]['selected_per_step']:.1f} / step"
                        for m in METHODS], fontsize=8)  # fmt: skip
    ax.set_ylabel("share of the neurons it resets")
    ax.set_xlim(-0.6, len(METHODS) + 1.6)
    kinds = [Patch(facecolor=colour, edgecolor="black", label=name) for name, colour in KINDS.values()]
    ax.legend(handles=kinds, fontsize=7, loc="center right")
    ax.set_title(f"{NAME} ({scale} scale, {seeds} seeds; mean, 95% CI)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
