"""The RL experiments' report on runs the test writes: aggregation against hand computations, every figure kind."""

import csv
import dataclasses
import json

import numpy as np
import pytest

from benchmarks.paper import curves
from benchmarks.paper.experiments import EXPERIMENTS, Cell, Scale
from benchmarks.paper.report import ALL_TASKS, FIGURES, report


def write_run(out, name, scale, variant, env, agent, method, seed, final, grama=0.1, dormant=0.2, complete=True):
    """A run folder as the RL runner leaves it: run.json, summary.json and a metrics.csv of three evaluations."""
    folder = out / name / scale / variant / env.replace(":", "_") / agent / method / f"seed{seed}"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"status": "complete" if complete else "running"}))
    summary = {"env": env, "method": method, "seed": seed, "final_eval_return": final, "grama_ratio": grama,
               "dormant_ratio": dormant, "device": "cpu"}  # fmt: skip
    (folder / "summary.json").write_text(json.dumps(summary))
    with (folder / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, ["step", "eval/return", "grama/ratio", "dormant/ratio"])
        writer.writeheader()
        for step, fraction in ((100, 0.25), (200, 0.5), (300, 1.0)):
            writer.writerow({"step": step, "eval/return": final * fraction, "grama/ratio": grama * fraction,
                             "dormant/ratio": ""})  # fmt: skip
            writer.writerow({"step": step, "eval/return": "", "grama/ratio": "", "dormant/ratio": dormant})
    return folder


def read_table(folder):
    with (folder / "table.csv").open() as f:
        return {(r["variant"], r["env"], r["method"]): r for r in csv.DictReader(f)}


def hand_bootstrap(values, resamples=10_000, seed=0):
    """The percentile bootstrap of the mean, written out: resample seeds with replacement, 2.5 and 97.5 percentiles."""
    values = np.asarray(values, float)
    rng = np.random.default_rng(seed)
    means = [values[rng.integers(0, len(values), size=len(values))].mean() for _ in range(resamples)]
    return tuple(np.percentile(means, [2.5, 97.5]))


ENVS = ("dmc:humanoid-stand", "dmc:dog-walk")
# Final returns by hand: (variant, env, method) -> one per seed 0, 1, 2.
RETURNS = {
    ("blocks1", ENVS[0], "vanilla"): [100.0, 120.0, 140.0],
    ("blocks1", ENVS[0], "regrama"): [150.0, 90.0, 210.0],
    ("blocks1", ENVS[1], "vanilla"): [300.0, 200.0, 250.0],
    ("blocks1", ENVS[1], "regrama"): [330.0, 270.0, 300.0],
    ("blocks2", ENVS[0], "vanilla"): [80.0, 80.0, 110.0],
    ("blocks2", ENVS[0], "regrama"): [160.0, 170.0, 190.0],
    ("blocks2", ENVS[1], "vanilla"): [400.0, 420.0, 380.0],
    ("blocks2", ENVS[1], "regrama"): [500.0, 10.0, 450.0],
}


@pytest.fixture
def depth_runs(tmp_path):
    """fig9-depth reduced to two depths on two tasks, 3 seeds; blocks2/dog-walk/regrama seed 2 did not finish."""
    experiment = dataclasses.replace(
        EXPERIMENTS["fig9-depth"],
        cells=tuple(Cell(env, v) for env in ENVS for v in ("blocks1", "blocks2")),
        methods=("vanilla", "regrama"),
        paper=Scale(steps=300, seeds=(0, 1, 2)),
    )
    for (variant, env, method), finals in RETURNS.items():
        for seed, final in enumerate(finals):
            complete = (variant, env, method, seed) != ("blocks2", ENVS[1], "regrama", 2)
            write_run(tmp_path, "fig9-depth", "paper", variant, env, "bro", method, seed, final,
                      grama=0.01 * (seed + 1), complete=complete)  # fmt: skip
    return experiment, tmp_path


def test_per_cell_rows_match_hand_computations(depth_runs):
    experiment, out = depth_runs
    folder = report(experiment, "paper", out)
    table = read_table(folder)
    for (variant, env, method), finals in RETURNS.items():
        row = table[(variant, env, method)]
        kept = finals[:2] if (variant, env, method) == ("blocks2", ENVS[1], "regrama") else finals
        assert int(row["seeds"]) == len(kept)
        assert float(row["return_mean"]) == pytest.approx(sum(kept) / len(kept))
        assert (float(row["return_low"]), float(row["return_high"])) == pytest.approx(hand_bootstrap(kept))
        s = sorted(kept)  # IQM of 3 values: the middle half [0.75, 2.25) weighs them 0.25, 1, 0.25
        iqm = (0.25 * s[0] + s[1] + 0.25 * s[2]) / 1.5 if len(s) == 3 else (s[0] + s[1]) / 2
        assert float(row["return_iqm"]) == pytest.approx(iqm)
        vanilla = RETURNS[(variant, env, "vanilla")]
        normalized = [x / (sum(vanilla) / 3) for x in kept]
        assert float(row["normalized_mean"]) == pytest.approx(sum(normalized) / len(normalized))
        assert (float(row["normalized_low"]), float(row["normalized_high"])) == pytest.approx(
            hand_bootstrap(normalized)
        )
        assert float(row["grama_ratio"]) == pytest.approx(sum(0.01 * (k + 1) for k in range(len(kept))) / len(kept))
    md = (folder / "table.md").read_text()
    assert "seeds [0, 1, 2]" in md and "Missing runs (1): blocks2/dmc:dog-walk/regrama/seed2" in md


def test_rows_over_tasks_average_each_seed_over_the_tasks_it_finished(depth_runs):
    experiment, out = depth_runs
    table = read_table(report(experiment, "paper", out))
    for variant in ("blocks1", "blocks2"):
        for method in ("vanilla", "regrama"):
            a, b = RETURNS[(variant, ENVS[0], method)], RETURNS[(variant, ENVS[1], method)]
            seeds = [0, 1] if (variant, method) == ("blocks2", "regrama") else [0, 1, 2]  # seed 2 lacks dog-walk
            per_seed = [(a[s] + b[s]) / 2 for s in seeds]
            row = table[(variant, ALL_TASKS, method)]
            assert int(row["seeds"]) == len(seeds)
            assert float(row["return_mean"]) == pytest.approx(sum(per_seed) / len(per_seed))
            assert (float(row["return_low"]), float(row["return_high"])) == pytest.approx(hand_bootstrap(per_seed))
            assert row["normalized_mean"] == ""


def test_curve_band_interpolates_seeds_on_a_common_grid():
    a = (np.array([0, 100, 200]), np.array([0.0, 10.0, 20.0]))
    b = (np.array([50, 150, 250]), np.array([5.0, 5.0, 5.0]))
    grid, mean, low, high = curves.band([a, b], points=3)
    # Common range: [50, 200]; at 50 a is 5 (interpolated) and b 5; at 125 a is 12.5; at 200 a is 20.
    assert grid.tolist() == [50.0, 125.0, 200.0]
    assert mean.tolist() == pytest.approx([5.0, (12.5 + 5.0) / 2, (20.0 + 5.0) / 2])
    assert (low[1], high[1]) == pytest.approx(hand_bootstrap([12.5, 5.0], resamples=curves.CURVE_RESAMPLES))
    assert curves.band([])[0].size == 0


@pytest.mark.parametrize("name", ["fig4-variants", "fig8-bro", "fig9-depth", "fig10-dacer", "fig13-tau",
                                  "table8-baselines"])  # fmt: skip
def test_every_figure_kind_draws_from_two_seeds(tmp_path, name):
    experiment = EXPERIMENTS[name]
    for cell in experiment.cells_at("smoke"):
        for k, method in enumerate(experiment.methods):
            for seed in (0, 1):
                write_run(tmp_path, name, "smoke", cell.variant, cell.env, experiment.agent, method, seed,
                          100.0 + 10 * k + seed)  # fmt: skip
    folder = report(experiment, "smoke", tmp_path, seeds=(0, 1))
    table = read_table(folder)
    assert len(table) == len(experiment.cells_at("smoke")) * len(experiment.methods)
    assert all(row["seeds"] == "2" for row in table.values())
    if "vanilla" in experiment.methods:  # vanilla's normalised score is 1 by construction
        assert all(float(r["normalized_mean"]) == pytest.approx(1.0) for k, r in table.items() if k[2] == "vanilla")
    png = (folder / "figure.png").read_bytes()
    assert png[:4] == b"\x89PNG" and len(png) > 10_000, FIGURES.get(name, "curves")
