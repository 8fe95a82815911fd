"""The vanilla BRO-net runs whose per-neuron scores ``fig3-quadrants`` and ``fig6b-irreversible`` analyse.

Both experiments read the same runs: vanilla BRO-net (no reset; both the ReGraMa and the ReDo callback only
measure, on the same batch), through the RL runner with a :class:`~.neuron_scores.NeuronScores` recorder in its
``extra_callbacks``. They live under ``<out>/neuron-scores/<scale>/`` (the runner's layout below it), so that
running the second experiment skips the runs the first one made. Steps and seeds are the experiment's scale
(``experiments.py``: ``list`` shows them); the rest of each scale is here:

* ``paper``: dmc:dog-walk, BRO-net at appendix A Table 3 (the agent's defaults: width 256, 1 actor block, 2
  critic blocks, batch 128, replay ratio 2), 1M environment steps, seeds 0-4; scores recorded every 10,000
  updates (every tenth reset step of the paper's 1000-update period; about 200 records, about 5 MB a run).
* ``cpu``: dmc:dog-walk, BRO-net as at ``paper`` scale but 20k environment steps (the first 5k random, the
  loop's default), seeds 0-2; scores every 1000 updates (each reset step of the paper's period); one final
  evaluation episode.
* ``smoke``: Pendulum-v1 instead of dog-walk (a dog-walk evaluation episode alone takes seconds), width 16, 150
  steps; scores every 20 updates.
"""

from __future__ import annotations

from pathlib import Path

from .experiments import EXPERIMENTS
from .neuron_scores import NeuronScores, Recorded, load

SCORES_FILE = "neuron_scores.npz"
ENV = {"smoke": "Pendulum-v1", "cpu": "dmc:dog-walk", "paper": "dmc:dog-walk"}
RECORD_EVERY = {"smoke": 20, "cpu": 1000, "paper": 10_000}  # updates; multiples of the scale's --log-every
FLAGS = {
    "smoke": ("--learning-starts", "100", "--eval-every", "200", "--eval-episodes", "1", "--width", "16",
              "--log-every", "20", "--buffer-size", "1000", "--batch-size", "32", "--no-progress"),
    "cpu": ("--eval-every", "20000", "--eval-episodes", "1", "--checkpoint-every", "5000", "--no-progress"),
    "paper": (),
}  # fmt: skip


def root(out: Path, scale: str) -> Path:
    """Where the runs of ``scale`` live."""
    return Path(out) / "neuron-scores" / scale


def argv(scale: str, out: Path, seeds: tuple[int, ...] | None = None, name: str = "fig6b-irreversible") -> list[str]:
    """The RL runner's arguments of the runs of ``scale`` (steps and seeds: experiment ``name``'s scale)."""
    budget = EXPERIMENTS[name].scale(scale)
    seeds = budget.seeds if seeds is None else seeds
    return ["--agent", "bro", "--env", ENV[scale], "--methods", "vanilla", "--seeds", *map(str, seeds),
            "--steps", str(budget.steps), "--out", str(root(out, scale)), *FLAGS[scale]]  # fmt: skip


def run(scale: str, out: Path, seeds: tuple[int, ...] | None = None) -> None:
    """Run every seed not yet done (an interrupted one resumes from its checkpoint and its recorded scores)."""
    from ..harness.process import prepare
    from ..rl.cli import parse
    from ..rl.runner import run as run_one
    from ..rl.runner import run_dir

    config, methods, seeds_, threads, control = parse([*argv(scale, out, seeds), "--resume"])
    prepare(threads)
    for seed in seeds_:
        for method in methods:
            recorder = NeuronScores(run_dir(config, method, seed) / SCORES_FILE, RECORD_EVERY[scale], "updates")
            run_one(config, method, seed, control, extra_callbacks=[recorder])


def finished(name: str, scale: str, out: Path) -> tuple[dict[int, Recorded], list[int]]:
    """The finished runs' recorded scores by seed (any seed found), and the scale's seeds not finished.

    Raises:
        ValueError: If no run has finished, naming experiment ``name``, where it looked and the missing seeds.
    """
    from ..harness.runs import is_complete

    expected = EXPERIMENTS[name].scale(scale).seeds
    files = root(out, scale).glob(f"*/bro/vanilla/seed*/{SCORES_FILE}")
    folders = {int(p.parent.name.removeprefix("seed")): p.parent for p in files}
    done = {s: load(f / SCORES_FILE) for s, f in sorted(folders.items()) if is_complete(f)}
    missing = [s for s in expected if s not in done]
    if not done:
        raise ValueError(
            f"no finished run of {name} at {scale} scale under {root(out, scale)} (missing seeds {missing}); "
            "run it first."
        )
    return done, missing
