"""Every RL experiment of the paper at smoke scale through the real runner, then its report.

To stay fast each runs one seed and the fewest methods and variants that still exercise its figure (vanilla
where the figure normalises by it and the smoke return is positive); the aggregation itself, the boxes of Fig. 10
included, is checked on written runs in test_paper_report.py.
fig12-activations runs in test_paper_experiments.py.
"""

import csv
import json

import pytest

from benchmarks.paper import cli
from benchmarks.paper.experiments import EXPERIMENTS

SMOKE = {  # name -> (methods, variants or None for all)
    "fig4-variants": (("regrama",), None),
    "fig7-pruning": (("prune-grama",), None),
    "fig8-bro": (("vanilla",), None),
    "fig9-depth": (("regrama",), ("blocks1", "blocks2")),
    "fig10-dacer": (("regrama",), None),  # Ant scores below zero at smoke scale: nothing to normalise by
    "fig13-tau": (("regrama",), ("tau0.0", "tau0.1")),
    "table8-baselines": (("vanilla", "snp"), None),
}


def test_every_rl_experiment_has_a_smoke_test():
    covered = set(SMOKE) | {"fig12-activations"}  # drivers around a grid (fig3, fig6b) have their own smoke tests
    assert covered == {n for n, e in EXPERIMENTS.items() if e.agent and not e.missing and not e.driver}


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_smoke_run_and_report(tmp_path, name):
    methods, variants = SMOKE[name]
    argv = ["run", name, "--scale", "smoke", "--accelerator", "cpu", "--out", str(tmp_path), "--methods", *methods]
    cli.main(argv + (["--variants", *variants] if variants else []))
    cli.main(["report", name, "--scale", "smoke", "--out", str(tmp_path)])
    folder = tmp_path / name
    with (folder / "table.csv").open() as f:
        table = {(r["variant"], r["env"], r["method"]): r for r in csv.DictReader(f)}
    experiment = EXPERIMENTS[name]
    cells = [c for c in experiment.cells_at("smoke") if variants is None or c.variant in variants]
    assert set(table) == {(c.variant, c.env, m) for c in cells for m in methods}
    for cell in cells:
        runs = {m: json.loads(next((tmp_path / name / "smoke" / cell.variant).glob(f"*/*/{m}/seed0/summary.json"))
                              .read_text()) for m in methods}  # fmt: skip
        for method, summary in runs.items():
            row = table[(cell.variant, cell.env, method)]
            assert row["seeds"] == "1"
            assert float(row["return_mean"]) == pytest.approx(summary["final_eval_return"])
            vanilla = runs.get("vanilla", {}).get("final_eval_return")
            if vanilla is not None and vanilla > 0:
                assert float(row["normalized_mean"]) == pytest.approx(summary["final_eval_return"] / vanilla)
            else:  # no vanilla run, or a return below zero (Ant at smoke scale): nothing to normalise by
                assert row["normalized_mean"] == ""
    expected = len(experiment.cells_at("smoke")) * len(experiment.methods)
    assert f"Missing runs ({expected - len(table)})" in (folder / "table.md").read_text()
    assert (folder / "figure.png").read_bytes()[:4] == b"\x89PNG"
