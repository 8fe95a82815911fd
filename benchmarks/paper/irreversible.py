"""``fig6b-irreversible`` (paper Fig. 6b): do neurons that lost their learning capacity recover on their own?

In the vanilla BRO-net runs of :mod:`.neuron_runs` (no reset), the sampling window is the records of the
first third of training (the paper samples "in the pre-training period"; a window, not one step, because at
``cpu`` scale GraMa-inactive neurons appear only now and then). Among the critics' and the actor's neurons
whose GraMa score is <= 0.0095 (the paper's threshold) at some record of the window, up to 1000 are drawn at
random (a generator seeded with the run's seed), each followed from the record where it was first inactive.
The records after the window are cut into five training phases of equal length (in records); per phase the
report gives the histogram of the sampled neurons' scores at the phase's last record (pooled over seeds, in the
figure), the fraction above the threshold then, and the fraction that has been above it at any record since it
was first inactive ("ever recovered"), each as a mean over seeds with a 95% bootstrap interval (a seed with no
inactive neuron to sample is left out).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ..harness import stats, style
from . import neuron_runs
from .neuron_scores import Recorded
from .report import write_tables

NAME = "fig6b-irreversible"
TAU = 0.0095  # "GraMa with a threshold of tau=0.0095"
SAMPLE = 1000  # "sample 1000 inactive neurons"
SAMPLE_UNTIL = 1 / 3  # the sampling window: records up to this fraction of the run's steps
PHASES = 5
COLUMNS = ("phase", "env_steps", "seeds", "sampled", "above_mean", "above_low", "above_high", "ever_mean",
           "ever_low", "ever_high", "median_score")  # fmt: skip


def run(scale: str, out: Path, seeds: tuple[int, ...] | None = None) -> None:
    """Run the vanilla BRO-net runs with score recording (shared with ``fig3-quadrants``)."""
    neuron_runs.run(scale, out, seeds)


def window_end(recorded: Recorded) -> int:
    """Index of the last record of the sampling window (steps up to ``SAMPLE_UNTIL`` of the last one)."""
    return max(0, int(np.searchsorted(recorded.steps, SAMPLE_UNTIL * recorded.steps[-1], side="right")) - 1)


def trace(recorded: Recorded, seed: int) -> dict | None:
    """The sampled neurons' scores per phase of one run (``None`` when no neuron is inactive in the window).

    Returns:
        ``sampled`` (how many), ``window_env_steps`` (environment steps at the window's end), ``layers`` (the
        layer of each sampled neuron), and per phase
        ``env_steps`` (at its last record), ``scores`` (the sampled neurons' scores then) and ``ever`` (above
        ``TAU`` at some record after the neuron's first inactive one).
    """
    grama = recorded.scores["grama"]
    end = window_end(recorded)
    if end >= len(grama) - 1:
        return None
    low = np.isfinite(grama[: end + 1]) & (grama[: end + 1] <= TAU)
    candidates = np.flatnonzero(low.any(axis=0))
    if candidates.size == 0:
        return None
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(candidates, size=min(SAMPLE, candidates.size), replace=False))
    first = low[:, chosen].argmax(axis=0)  # each neuron's first inactive record
    after = np.arange(len(grama))[:, None] > first[None, :]
    ever = np.maximum.accumulate((grama[:, chosen] > TAU) & after, axis=0)
    later = np.arange(end + 1, len(grama))
    phases = [p[-1] for p in np.array_split(later, min(PHASES, later.size)) if p.size]
    return {
        "sampled": int(chosen.size),
        "window_env_steps": int(recorded.env_steps[end]),
        "layers": [recorded.layers[i] for i in recorded.layer_of()[chosen]],
        "phases": [{"env_steps": int(recorded.env_steps[i]), "scores": grama[i, chosen], "ever": ever[i]}
                   for i in phases],
    }  # fmt: skip


def report(scale: str, out: Path) -> Path:
    """Write ``table.csv``, ``table.md`` and ``figure.png`` under ``<out>/fig6b-irreversible``.

    Raises:
        ValueError: If no run of the scale has finished (naming the missing seeds).
    """
    done, missing = neuron_runs.finished(NAME, scale, out)
    traces = {seed: trace(recorded, seed) for seed, recorded in done.items()}
    lowest = {s: float(np.nanmin(r.scores["grama"][: window_end(r) + 1])) for s, r in done.items()}
    empty = sorted(s for s, t in traces.items() if t is None)
    traces = {s: t for s, t in traces.items() if t is not None}
    rows = []
    for j in range(min((len(t["phases"]) for t in traces.values()), default=0)):
        phase = [t["phases"][j] for t in traces.values()]
        above = stats.summarize([float(np.mean(p["scores"] > TAU)) for p in phase])
        ever = stats.summarize([float(np.mean(p["ever"])) for p in phase])
        rows.append({
            "phase": j + 1, "env_steps": int(np.mean([p["env_steps"] for p in phase])), "seeds": above.n,
            "sampled": float(np.mean([t["sampled"] for t in traces.values()])),
            "above_mean": above.mean, "above_low": above.low, "above_high": above.high,
            "ever_mean": ever.mean, "ever_low": ever.low, "ever_high": ever.high,
            "median_score": float(np.median(np.concatenate([p["scores"] for p in phase]))),
        })  # fmt: skip
    folder = out / NAME
    sampled = "; ".join(f"seed {s}: {t['sampled']} (window to {t['window_env_steps']} env steps; "
                        + ", ".join(f"{n} {k}" for n, k in Counter(t["layers"]).most_common()) + ")"
                        for s, t in traces.items())  # fmt: skip
    write_tables(folder, rows, COLUMNS,
                 f"{NAME} (Fig. 6b), {scale} scale: GraMa scores of neurons inactive (<= {TAU}) early in vanilla "
                 f"BRO-net ({neuron_runs.ENV[scale]}), seeds {sorted(done)}",
                 f"Sampled: {sampled or 'none'}. Seeds with no inactive neuron to sample: {empty or 'none'}. "
                 f"Lowest GraMa score in the sampling window: "
                 f"{', '.join(f'seed {s}: {v:.3g}' for s, v in lowest.items())}. "
                 f"above = score > {TAU} at the phase's last record; ever = above at some record since the "
                 f"neuron was first inactive (mean over seeds, 95% bootstrap CI). Missing seeds ({len(missing)}): "
                 f"{', '.join(map(str, missing)) or 'none'}")  # fmt: skip
    _figure(rows, traces, folder / "figure.png", scale)
    return folder


def _figure(rows: list[dict], traces: dict[int, dict], path: Path, scale: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colour = style.color("vanilla")
    fig, (hist, frac) = plt.subplots(1, 2, figsize=(9, 3.8))
    if rows:
        pooled = [np.concatenate([t["phases"][r["phase"] - 1]["scores"] for t in traces.values()]) for r in rows]
        top = max(3 * TAU, float(np.quantile(np.concatenate(pooled), 0.99)))
        bins = np.concatenate([[0.0], np.linspace(TAU, top, 30)])  # tau is an edge: the first bin is inactive
        for r, scores in zip(rows, pooled, strict=True):
            counts, _ = np.histogram(np.clip(scores, 0.0, top), bins)
            y = r["phase"]
            hist.fill_between(bins[:-1], y, y + 0.8 * counts / max(1, counts.max()), step="post", color=colour,
                              alpha=0.8)  # fmt: skip
        hist.axvline(TAU, color="black", linestyle="--", linewidth=1, label=f"tau = {TAU}")
        hist.set_yticks([r["phase"] for r in rows])
        hist.set_yticklabels([f"{r['phase']} ({r['env_steps']} st.)" for r in rows], fontsize=7)
        hist.legend(fontsize=7)
        x = [r["env_steps"] for r in rows]
        curves = (("ever", "-", "ever above tau since sampling"), ("above", "--", "above tau at phase end"))
        for key, line, text in curves:
            frac.plot(x, [r[f"{key}_mean"] for r in rows], line, color=colour, marker="o", label=text)
            frac.fill_between(x, [r[f"{key}_low"] for r in rows], [r[f"{key}_high"] for r in rows], color=colour,
                              alpha=0.2)  # fmt: skip
        frac.legend(fontsize=7)
    hist.set_xlabel("GraMa score of the sampled neurons (clipped at the right edge)")
    hist.set_ylabel("training phase (env steps at its end)")
    frac.set_xlabel("environment steps")
    frac.set_ylabel("fraction of sampled neurons (mean, 95% CI)")
    frac.set_ylim(-0.02, 1.02)
    seeds = rows[0]["seeds"] if rows else 0
    fig.suptitle(f"{NAME} ({scale} scale, {seeds} seeds with sampled neurons)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
