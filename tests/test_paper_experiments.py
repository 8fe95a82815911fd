"""The paper's experiments: settings against appendix A, the listing, refusals, and one smoke run."""

import csv
import json

import pytest

from benchmarks.paper import cli
from benchmarks.paper.experiments import EXPERIMENTS, SMOKE
from benchmarks.rl.cli import build_parser

# Written from the paper's appendix A (Tables 3, 5, 7 and their text), independently of the code.
APPENDIX_A = {
    "bro": {  # Table 3; "tau 0.01 for Grama and 0.02 for ReDo"; "every 1000 steps"
        "actor_lr": 1e-4,
        "critic_lr": 1e-3,
        "replay_ratio": 2.0,
        "gamma": 0.99,
        "batch_size": 128,
        "buffer_size": 1_000_000,
        "actor_net_depth": 1,
        "critic_net_depth": 2,
        "actor_net_width": 256,
        "critic_net_width": 256,
        "actor_net_layer_norm": True,
        "critic_net_residual": True,
        "grama_tau": 0.01,
        "redo_tau": 0.02,
        "reset_every": 1000,
    },
    "dacer": {  # Table 5
        "actor_lr": 3e-4,
        "critic_lr": 3e-4,
        "alpha_lr": 3e-2,
        "gamma": 0.99,
        "batch_size": 256,
        "buffer_size": 1_000_000,
        "target_tau": 5e-3,
        "policy_delay": 2,
        "actor_net_width": 256,
        "critic_net_width": 256,
        "reward_scale": 1.0,
        "grama_tau": 0.01,
        "redo_tau": 0.02,
        "reset_every": 1000,
    },
    "sac": {  # Table 7
        "steps": 3_000_000,
        "buffer_size": 1_000_000,
        "gamma": 0.99,
        "target_tau": 0.005,
        "batch_size": 256,
        "learning_starts": 5000,
        "actor_lr": 3e-4,
        "critic_lr": 1e-3,
        "policy_frequency": 2,
        "target_network_frequency": 1,
        "autotune": True,
        "grama_tau": 0.0,
        "reset_every": 1000,
        "actor_net_width": 256,
        "actor_net_depth": 2,
        "critic_net_depth": 2,
    },
}
# What an experiment varies on purpose (the figure's axis), left out of the comparison.
VARIED = {
    "fig9-depth": {"actor_net_depth", "critic_net_depth"},
    "fig13-tau": {"grama_tau", "redo_tau"},
    "fig4-variants": {"critic_net_residual"},
}
SEEDS = {"fig13-tau": [0, 1, 2, 3], "table8-baselines": [0, 1, 2]}  # "4 seeds" (Fig. 13), "3 runs" (Table 8)
TASKS = {
    "fig8-bro": {"dmc:humanoid-stand", "dmc:humanoid-walk", "dmc:dog-stand", "dmc:dog-walk"},
    "table8-baselines": {"dmc:humanoid-stand", "dmc:humanoid-run", "dmc:dog-stand", "dmc:dog-walk"},
    "fig10-dacer": {"Ant-v5", "Walker2d-v5"},
    "fig12-activations": {"Ant-v5"},
    "fig13-tau": {"dmc:humanoid-walk"},
}  # fmt: skip


def _setting(args, key):
    key = key.replace("actor_net_", "actor_net.").replace("critic_net_", "critic_net.")
    settings = vars(args)
    for name in (key, f"agent.{key}", f"agent.loop.{key}"):
        if name in settings:
            return settings[name]
    raise KeyError(key)


def _paper_runs(name):
    experiment = EXPERIMENTS[name]
    methods = tuple(m for m in experiment.methods if m in ("vanilla", "redo", "regrama"))
    argvs = experiment.commands("paper", methods=methods)
    return [build_parser(experiment.agent).parse_args(argv) for argv in argvs]


@pytest.mark.parametrize("name", [n for n, e in EXPERIMENTS.items() if e.agent and not e.missing])
def test_paper_scale_follows_appendix_a(name):
    runs = _paper_runs(name)
    agent = EXPERIMENTS[name].agent
    expected = {k: v for k, v in APPENDIX_A[agent].items() if k not in VARIED.get(name, set())}
    for args in runs:
        assert {k: _setting(args, k) for k in expected} == pytest.approx(expected), args.env
        assert args.seeds == SEEDS.get(name, [0, 1, 2, 3, 4])
    if name in TASKS:
        assert {args.env for args in runs} == TASKS[name]
    if name == "fig9-depth":
        assert sorted({_setting(args, "critic_net_depth") for args in runs}) == [1, 2, 3, 4]
    if name == "fig13-tau":
        taus = sorted({args.grama_tau for args in runs})
        assert taus[0] == 0.0 and taus[-1] == pytest.approx(0.1) and len(taus) > 3
    if name == "fig12-activations":
        assert {args.activation for args in runs} == {"relu", "sigmoid", "tanh"}


def test_listing_names_every_experiment_with_costs(capsys):
    cli.main(["list"])
    out = capsys.readouterr().out
    for name, experiment in EXPERIMENTS.items():
        assert f"{name:<20} {experiment.reference}" in out
        for scale in ("smoke", "cpu", "paper"):
            assert f"python -m benchmarks.paper run {name} --scale {scale}" in out
    assert "60 runs, cpu ~" in out  # fig8 at paper scale, with its gpu estimate
    assert "~34 h" in out  # fig5-cifar at paper scale, from its driver
    # fig8 at paper scale: 4 tasks x 3 methods x 5 seeds.
    assert EXPERIMENTS["fig8-bro"].runs("paper") == 60
    assert EXPERIMENTS["fig8-bro"].cost_hours("paper") > EXPERIMENTS["fig8-bro"].cost_hours("cpu") > 0


def test_every_listed_method_is_in_the_registry_and_an_unknown_one_is_refused():
    from benchmarks.harness.methods import method_names

    for experiment in EXPERIMENTS.values():  # Table 8's S&P, ReBorn, CBP and Fig. 7's pruning come from the toolkit
        assert set(experiment.methods) <= set(method_names("rl")), experiment.name
    with pytest.raises(ValueError, match=r"not in the method registry.*--methods vanilla"):
        EXPERIMENTS["table8-baselines"].commands("smoke", methods=("vanilla", "no-such-method"))


def test_variants_select_cells_and_an_unknown_one_is_refused(tmp_path, capsys):
    argvs = EXPERIMENTS["fig9-depth"].commands("paper", variants=("blocks1", "blocks4"))
    assert len(argvs) == 2 * 4  # two depths on the four tasks
    assert {argv[argv.index("--critic-net-depth") + 1] for argv in argvs} == {"1", "4"}
    with pytest.raises(SystemExit):
        cli.main(["run", "fig9-depth", "--variants", "blocks9", "--out", str(tmp_path)])
    assert "unknown variants ['blocks9']; choose among ['blocks1', 'blocks2', 'blocks3', 'blocks4']" in (
        capsys.readouterr().err
    )


def test_smoke_run_composes_the_runner_and_skips_finished_runs(tmp_path, capfd):
    argv = ["run", "fig12-activations", "--scale", "smoke", "--methods", "regrama", "--accelerator", "cpu"]
    cli.main([*argv, "--out", str(tmp_path)])
    summaries = sorted(tmp_path.glob("fig12-activations/smoke/*/Ant-v5/sac/regrama/seed0/summary.json"))
    assert [p.parts[-6] for p in summaries] == ["relu", "sigmoid", "tanh"]
    assert all(json.loads(p.read_text())["env_steps"] == SMOKE.steps for p in summaries)
    capfd.readouterr()
    cli.main([*argv, "--out", str(tmp_path)])
    out, err = capfd.readouterr()
    assert (out + err).count("done before with these settings, skipped") == 3

    # The report of that run: one row per variant, values from each run's summary, missing runs named.
    cli.main(["report", "fig12-activations", "--scale", "smoke", "--out", str(tmp_path)])
    folder = tmp_path / "fig12-activations"
    with (folder / "table.csv").open() as f:
        rows = list(csv.DictReader(f))
    by_variant = {row["variant"]: row for row in rows}
    for path in summaries:
        summary = json.loads(path.read_text())
        row = by_variant[path.parts[-6]]
        assert (row["method"], row["seeds"]) == ("regrama", "1")
        assert float(row["return_mean"]) == pytest.approx(summary["final_eval_return"])
        assert float(row["grama_ratio"]) == pytest.approx(summary["grama_ratio"])
    assert "Missing runs (6)" in (folder / "table.md").read_text()
    assert "relu/Ant-v5/vanilla/seed0" in (folder / "table.md").read_text()
    assert (folder / "figure.png").read_bytes()[:4] == b"\x89PNG"


def test_probe_architectures_smoke_run_and_report(tmp_path):
    cli.main(["run", "probe-architectures", "--scale", "smoke", "--out", str(tmp_path)])
    cli.main(["report", "probe-architectures", "--scale", "smoke", "--out", str(tmp_path)])
    with (tmp_path / "probe-architectures" / "table.csv").open() as f:
        table = {(r["network"], r["method"]): r for r in csv.DictReader(f)}
    assert set(table) == {
        (n, m) for n in ("relu", "leaky_relu", "layer_norm", "bro") for m in ("vanilla", "redo", "regrama")
    }
    # By hand from the bro run's own CSV: 3 phases, the first fifth is phase 0, so phases 1-2 are "later".
    with (tmp_path / "probe-architectures" / "smoke" / "bro.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["method"] == "redo"]
    later = [float(r["accuracy"]) for r in rows if int(r["phase"]) >= 1]
    assert float(table[("bro", "redo")]["acc_later_mean"]) == pytest.approx(sum(later) / len(later))
    assert float(table[("bro", "redo")]["neurons_reset"]) == sum(int(r["reset"]) for r in rows)
    assert (tmp_path / "probe-architectures" / "figure.png").read_bytes()[:4] == b"\x89PNG"
    assert "Missing networks (0)" in (tmp_path / "probe-architectures" / "table.md").read_text()
