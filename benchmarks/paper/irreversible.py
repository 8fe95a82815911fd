"""``fig6b-irreversible`` (paper Fig. 6b): do neurons that lost their learning capacity recover on their own?

In the vanilla BRO-net runs of :mod:`.neuron_runs` (no reset), at the first recorded step past a tenth of
training (the paper: "the pre-training period"), up to 1000 neurons whose GraMa score is <= 0.0095 (the paper's
threshold) are drawn at random (a generator seeded with the run's seed) among the critics' and the actor's
scored neurons. Their GraMa scores are then followed at every later record. The records after the sampling
step are cut into five training phases of equal length (in records); per phase the report gives the histogram
of the sampled neurons' scores at the phase's last record (pooled over seeds, in the figure), the fraction
above the threshold then, and the fraction that has been above it at any record since the sampling, each as
a mean over seeds with a 95% bootstrap interval (a seed with no inactive neuron to sample is left out).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..harness import stats, style
from . import neuron_runs
from .neuron_scores import Recorded
from .report import write_tables

NAME = "fig6b-irreversible"
TAU = 0.0095  # "GraMa with a threshold of tau=0.0095"
SAMPLE = 1000  # "sample 1000 inactive neurons"
SAMPLE_AT = 0.1  # fraction of the run's updates after which the first record is the sampling step
PHASES = 5
COLUMNS = ("phase", "env_steps", "seeds", "sampled", "above_mean", "above_low", "above_high", "ever_mean",
           "ever_low", "ever_high", "median_score")  # fmt: skip


def run(scale: str, out: Path, seeds: tuple[int, ...] | None = None) -> None:
    """Run the vanilla BRO-net runs with score recording (shared with ``fig3-quadrants``)."""
    neuron_runs.run(scale, out, seeds)


def sampling_step(recorded: Recorded) -> int:
    """Index of the sampling record: the first at or past ``SAMPLE_AT`` of the run's steps."""
    return int(np.searchsorted(recorded.steps, SAMPLE_AT * recorded.steps[-1], side="left"))


def trace(recorded: Recorded, seed: int) -> dict | None:
    """The sampled neurons' scores per phase of one run (``None`` when no neuron is inactive at the sampling step).

    Returns:
        ``sampled`` (how many), ``sampled_at`` (environment steps), and per phase ``env_steps`` (at its last
        record), ``scores`` (the sampled neurons' scores then) and ``ever`` (above ``TAU`` at any record since
        the sampling).
    """
    grama, steps = recorded.scores["grama"], recorded.steps
    start = sampling_step(recorded)
    if start >= len(steps) - 1:
        return None
    inactive = np.flatnonzero(np.isfinite(grama[start]) & (grama[start] <= TAU))
    if inactive.size == 0:
        return None
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(inactive, size=min(SAMPLE, inactive.size), replace=False))
    later = grama[start + 1 :, chosen]
    ever = np.maximum.accumulate(later > TAU, axis=0)
    phases = [p for p in np.array_split(np.arange(len(later)), min(PHASES, len(later))) if p.size]
    return {
        "sampled": int(chosen.size),
        "sampled_at": int(recorded.env_steps[start]),
        "phases": [{"env_steps": int(recorded.env_steps[start + 1 + p[-1]]), "scores": later[p[-1]],
                    "ever": ever[p[-1]]} for p in phases],
    }  # fmt: skip


def report(scale: str, out: Path) -> Path:
    """Write ``table.csv``, ``table.md`` and ``figure.png`` under ``<out>/fig6b-irreversible``.

    Raises:
        ValueError: If no run of the scale has finished (naming the missing seeds).
    """
    done, missing = neuron_runs.finished(NAME, scale, out)
    traces = {seed: trace(recorded, seed) for seed, recorded in done.items()}
    lowest = {s: float(np.nanmin(r.scores["grama"][sampling_step(r)])) for s, r in done.items()}
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
    sampled_at = ", ".join(f"seed {s}: {t['sampled']} at {t['sampled_at']} env steps" for s, t in traces.items())
    write_tables(folder, rows, COLUMNS,
                 f"{NAME} (Fig. 6b), {scale} scale: GraMa scores of neurons inactive (<= {TAU}) early in vanilla "
                 f"BRO-net ({neuron_runs.ENV[scale]}), seeds {sorted(done)}",
                 f"Sampled: {sampled_at or 'none'}. Seeds with no inactive neuron to sample: {empty or 'none'}. "
                 f"Lowest GraMa score at the sampling step: "
                 f"{', '.join(f'seed {s}: {v:.3g}' for s, v in lowest.items())}. "
                 f"above = score > {TAU} at the phase's last record; ever = above at any record since the "
                 f"sampling (mean over seeds, 95% bootstrap CI). Missing seeds ({len(missing)}): "
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
        bins = np.linspace(0.0, top, 31)
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
    frac.set_ylabel("fraction of the sampled neurons (mean, 95% CI)")
    frac.set_ylim(-0.02, 1.02)
    seeds = rows[0]["seeds"] if rows else 0
    fig.suptitle(f"{NAME} ({scale} scale, {seeds} seeds with sampled neurons)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
