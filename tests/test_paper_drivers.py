"""The paper's non-RL experiments at smoke scale: fig5-time (timing) and fig5-cifar (CIFAR-100 benchmark).

Structure and consistency only: no timing threshold is asserted (timings are measured by the benchmark
command, on a quiet machine).
"""

import csv
import json
import statistics
from pathlib import Path

import pytest
from test_cifar100_continual import one_thread, write_cifar100  # noqa: F401 (one_thread: an autouse fixture)

from benchmarks.paper import cli, timing


def _table(folder):
    with (folder / "table.csv").open() as f:
        return list(csv.DictReader(f))


def test_fig5_time_smoke_times_every_configuration_and_reports_the_ratios(tmp_path, capsys):
    cli.main(["run", "fig5-time", "--scale", "smoke", "--out", str(tmp_path), "--accelerator", "cpu"])
    data = json.loads(timing.result_path(tmp_path, "smoke").read_text())
    setting = timing.SCALES["smoke"]
    (only,) = data["runs"]
    assert only["machine"]["device"] == "cpu" and only["machine"]["clock"] == "cpu"
    assert len(only["rounds"]) == setting.rounds
    for result in only["rounds"]:
        assert set(result) == set(timing.CONFIGS)
        assert all(r["pairs"] == setting.pairs for r in result.values())
        assert all(r["bare_s"] > 0 for r in result.values())
        # Measuring alone resets nothing; ReDo at tau 0.02 on a fresh BRO-net resets at every gated update.
        assert result["grama-measure"]["neurons_reset"] == result["redo-measure"]["neurons_reset"] == 0
    # Run again: the timing is kept, not redone.
    capsys.readouterr()
    cli.main(["run", "fig5-time", "--scale", "smoke", "--out", str(tmp_path), "--accelerator", "cpu"])
    assert "done before, skipped" in capsys.readouterr().out

    cli.main(["report", "fig5-time", "--scale", "smoke", "--out", str(tmp_path)])
    folder = tmp_path / "fig5-time"
    rows = {r["kind"]: r for r in _table(folder)}
    assert set(rows) == {"measure", "reset"}
    for kind, row in rows.items():  # by hand from the JSON: per-round ratios, their median, min and max
        grama = statistics.median(r[f"grama-{kind}"]["cost_s"] for r in only["rounds"])
        assert float(row["grama_ms"]) == pytest.approx(1e3 * grama)
        ratios = [r[f"grama-{kind}"]["cost_s"] / r[f"redo-{kind}"]["cost_s"] for r in only["rounds"]
                  if r[f"redo-{kind}"]["cost_s"] > 0]  # fmt: skip
        if not ratios:  # ReDo's cost lost in the noise of a smoke run: no ratio, said so
            assert row["ratio_median"] == "" and row["rounds"] == "0"
            continue
        assert float(row["ratio_median"]) == pytest.approx(statistics.median(ratios))
        assert (float(row["ratio_low"]), float(row["ratio_high"])) == pytest.approx((min(ratios), max(ratios)))
        assert row["rounds"] == str(len(ratios))
    md = (folder / "table.md").read_text()
    assert "smoke scale" in md and "cpu clock" in md and "seeds [0]" in md
    assert (folder / "figure.png").read_bytes()[:4] == b"\x89PNG"


def test_fig5_time_report_before_a_run_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["report", "fig5-time", "--scale", "cpu", "--out", str(tmp_path)])
    assert "no timing of fig5-time at cpu scale" in capsys.readouterr().err


def test_fig5_cifar_smoke_runs_the_benchmark_and_reports_it(tmp_path, capsys):
    data = tmp_path / "data"
    write_cifar100(data)
    argv = ["run", "fig5-cifar", "--scale", "smoke", "--out", str(tmp_path), "--accelerator", "cpu"]
    cli.main([*argv, "--data-dir", str(data)])
    root = tmp_path / "fig5-cifar" / "smoke"
    summaries = {
        m: json.loads((root / m / "seed0" / "summary.json").read_text()) for m in ("vanilla", "redo", "regrama")
    }
    cli.main(["report", "fig5-cifar", "--scale", "smoke", "--out", str(tmp_path)])
    rows = {r["method"]: r for r in _table(tmp_path / "fig5-cifar")}
    assert set(rows) == set(summaries)
    for method, summary in summaries.items():  # one seed: the mean is the run's value, the interval degenerate
        row = rows[method]
        assert row["seeds"] == "1"
        assert float(row["final_acc_mean"]) == pytest.approx(summary["final_test_acc"])
        assert float(row["final_acc_low"]) == float(row["final_acc_high"]) == pytest.approx(summary["final_test_acc"])
        with (root / method / "seed0" / "metrics.csv").open() as f:
            accs = [float(r["test_acc"]) for r in csv.DictReader(f)]
        assert float(row["mean_acc_mean"]) == pytest.approx(sum(accs) / len(accs))
    assert "Missing runs (0)" in (tmp_path / "fig5-cifar" / "table.md").read_text()
    assert (tmp_path / "fig5-cifar" / "figure.png").read_bytes()[:4] == b"\x89PNG"


def test_fig5_cifar_without_the_data_names_the_folder_and_the_fix(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "fig5-cifar", "--scale", "cpu", "--out", str(tmp_path), "--data-dir", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert str(tmp_path / "none" / "cifar-100-python") in err and "--download" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "probe-architectures", "--accelerator", "gpu"], "probe-architectures does not use --accelerator"),
        (["run", "fig5-time", "--methods", "redo"], "fig5-time does not use --methods"),
        (["run", "fig8-bro", "--data-dir", "data"], "--data-dir is for fig5-cifar"),
        (["report", "fig5-cifar", "--seeds", "0"], "fig5-cifar reports every finished run"),
        (["run", "fig5-time", "--accelerator", "tpu-nope"], "--accelerator tpu-nope with --devices 1 cannot run"),
    ],
)
def test_a_flag_an_experiment_does_not_use_is_refused(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit):
        cli.main([*argv, "--out", str(tmp_path)])
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_paper_scales_follow_the_paper():
    from benchmarks.cifar100_continual.cli import _parsers, config_from_args
    from benchmarks.paper import cifar

    # Fig. 5 right (Sec. 4.2): a ReLU MLP, one class added every 15 epochs, all 100 classes, tau 0.01 for GraMa and
    # 0.02 for ReDo, a reset at each class addition; appendix A's seeds 0-4.
    argv = cifar.argv("paper", Path("runs"), cifar.SEEDS["paper"], "auto", Path("data"))
    args = _parsers()[0].parse_args(argv)
    cfg = config_from_args(args)
    assert (cfg.model, cfg.classes_per_increment, cfg.epochs_per_increment, cfg.max_classes) == ("mlp", 1, 15, 100)
    assert (cfg.grama_tau, cfg.redo_tau, cfg.reset_every) == (0.01, 0.02, None)
    assert args.seeds == [0, 1, 2, 3, 4] and args.methods == ["vanilla", "redo", "regrama"]
    # Fig. 5 left: BRO-net as in appendix A Table 3 (width 256, batch 128), on a BRO-net task of the paper.
    paper = timing.SCALES["paper"]
    assert (paper.width, paper.batch, paper.env) == (256, 128, "dmc:dog-walk")
