"""RL runs a researcher can trust: periodic checkpoints and resume after Ctrl-C, reruns keyed on the settings,
hyperparameters in hparams.yaml and TensorBoard, a progress bar that names the run, the buffer size used."""

from __future__ import annotations

import csv
import json
import re

import pytest
import torch
import yaml
from helpers import CtrlC, sigint_restored
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from benchmarks.harness import runs
from benchmarks.rl import cli
from benchmarks.rl.plot import read_series
from benchmarks.rl.runner import run, run_dir

ARGS = ["--env", "Pendulum-v1", "--methods", "regrama", "--steps", "400", "--learning-starts", "100"]
ARGS += ["--batch-size", "32", "--width", "32", "--eval-every", "200", "--eval-episodes", "1", "--log-every", "25"]
ARGS += ["--reset-every", "50", "--checkpoint-every", "100", "--checkpoint-buffer", "--no-progress"]
ARGS += ["--accelerator", "cpu"]


@pytest.fixture
def restore_sigint():
    with sigint_restored():
        yield


def ctrl_c_at(env_steps):
    """Ctrl-C at the first update at or after ``env_steps``."""
    return CtrlC(lambda trainer, agent, batch_idx: agent.env_steps >= env_steps)


def tensorboard(folder):
    events = EventAccumulator(str(folder / "tensorboard"))
    events.Reload()
    return events


def test_a_run_interrupted_by_ctrl_c_resumes_with_the_same_counters_buffer_schedule_and_logs(
    tmp_path, restore_sigint, capsys
):
    full = cli.main([*ARGS, "--out", str(tmp_path / "full")])[0]

    out = tmp_path / "cut"
    config, _, _, _, control = cli.parse([*ARGS, "--out", str(out)])
    with pytest.raises(SystemExit):  # Lightning's graceful Ctrl-C: on_exception hooks, teardown, exit(1)
        run(config, "regrama", 0, control, extra_callbacks=[ctrl_c_at(250)])
    folder = out / "Pendulum-v1" / "sac" / "regrama" / "seed0"
    assert runs.read_run(folder)["status"] == "interrupted" and not (folder / "summary.json").exists()
    saved = torch.load(folder / "last.ckpt", weights_only=True)
    resumed_at = saved["off_policy_agent"]["env_steps"]
    assert resumed_at == saved["run_logs"]["step"] == 200  # the periodic checkpoint before the interruption
    with pytest.raises(SystemExit) as refused:  # not silently restarted: the fix is named
        cli.main([*ARGS, "--out", str(out)])
    assert refused.value.code == 2
    capsys.readouterr()
    resumed = cli.main([*ARGS, "--out", str(out), "--resume"])[0]
    # Said before it trains, and the time is the whole run's: the first attempt's (up to its checkpoint) included.
    printed = capsys.readouterr().out
    assert f"{folder}: resuming at 200 environment steps (100 updates), with the replay buffer saved" in printed
    assert resumed["seconds"] > saved["off_policy_agent"]["seconds"] > 0
    assert resumed["env_steps_per_s"] == pytest.approx(resumed["env_steps"] / resumed["seconds"])

    for key in ("env_steps", "updates", "reset_events", "buffer_size"):
        assert resumed[key] == full[key], key
    assert [e["env_steps"] for e in resumed["evaluations"]] == [e["env_steps"] for e in full["evaluations"]]
    assert resumed["evaluations"][0] == full["evaluations"][0]  # the evaluation before the interruption is kept
    assert resumed["resumes"] == 1 and runs.is_complete(folder)
    # The buffer: the first 200 transitions are the uninterrupted run's (the same seed, saved in the checkpoint).
    a = torch.load(tmp_path / "full" / "Pendulum-v1" / "sac" / "regrama" / "seed0" / "last.ckpt", weights_only=True)
    b = torch.load(folder / "last.ckpt", weights_only=True)
    buffer_a, buffer_b = a["off_policy_agent"]["buffer"], b["off_policy_agent"]["buffer"]
    assert buffer_a["size"] == buffer_b["size"] == 400
    for name in ("obs", "action", "reward", "next_obs", "terminated"):
        assert torch.equal(buffer_a[name][:resumed_at], buffer_b[name][:resumed_at]), name
    # The callbacks' schedule: the same step counters, so the same reset steps.
    grama_a = next(v for k, v in a["callbacks"].items() if k.startswith("ReGraMa"))
    grama_b = next(v for k, v in b["callbacks"].items() if k.startswith("ReGraMa"))
    assert grama_a == grama_b
    # The logs: every value once, at the steps of the uninterrupted run (nothing of the interrupted attempt after
    # its checkpoint), in the CSV file and in TensorBoard.
    full_folder = tmp_path / "full" / "Pendulum-v1" / "sac" / "regrama" / "seed0"
    for key in ("train/critic_loss", "eval/return", "reset/neurons", "grama/ratio"):
        steps_a, _ = read_series(full_folder / "metrics.csv", key)
        steps_b, _ = read_series(folder / "metrics.csv", key)
        assert steps_b.tolist() == steps_a.tolist(), key
        board_a = [e.step for e in tensorboard(full_folder).Scalars(key)]
        assert [e.step for e in tensorboard(folder).Scalars(key)] == board_a, key


def test_reruns_are_keyed_on_the_full_settings_and_never_mix_logs(tmp_path, capsys):
    args = [*ARGS, "--steps", "200", "--out", str(tmp_path)]
    folder = tmp_path / "Pendulum-v1" / "sac" / "regrama" / "seed0"
    first = cli.main(args)[0]
    printed = capsys.readouterr().out  # --no-progress: one line per evaluation instead of a bar
    assert "Pendulum-v1: 200 environment steps, evaluation return" in printed and "GraMa ratio 0." in printed
    assert re.search(r"Pendulum-v1: 200 environment steps, evaluation return -?\d+\.\d \(one episode\)\n", printed)
    assert re.search(r"eval return -?\d+\.\d at 200 steps, GraMa ratio 0\.\d{4}, \d+ env steps/s", printed)
    with (folder / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    steps = [row["step"] for row in rows]
    assert len(steps) == len(set(steps)) > 1  # one row per step: the agent's, ReGraMa's and ReDo's values joined
    logged = [row for row in rows if row["train/critic_loss"]]
    assert logged and all(row["grama/ratio"] and row["dormant/ratio"] for row in logged)
    events = sorted((folder / "tensorboard").glob("events.out.tfevents.*"))
    assert cli.main(args)[0] == first  # done: skipped, nothing written
    assert "done before with these settings, skipped" in capsys.readouterr().out
    assert sorted((folder / "tensorboard").glob("events.out.tfevents.*")) == events
    with pytest.raises(SystemExit) as refused:  # another setting in the same folder: refused before training
        cli.main([*args, "--grama-tau", "0.05"])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # argparse's usage lines, then one error line
    assert refused.value.code == 2 and "Traceback" not in err and last.startswith("python -m benchmarks.rl: error: ")
    assert "config.grama_tau: 0.01 -> 0.05" in last and "--overwrite" in last
    second = cli.main([*args, "--grama-tau", "0.05", "--overwrite"])[0]
    assert second["config"]["grama_tau"] == 0.05
    assert not set(events) & set((folder / "tensorboard").glob("events.out.tfevents.*"))  # the old run's are gone
    steps, _ = read_series(folder / "metrics.csv", "eval/return")
    assert steps.tolist() == [200]  # one run's rows only
    # Another agent with the same --out: a folder of its own, nothing refused (its settings differ in every part).
    for agent in ("bro", "dacer"):
        config = cli.parse([*args, "--agent", agent])[0]
        assert run_dir(config, "regrama", 0) == tmp_path / "Pendulum-v1" / agent / "regrama" / "seed0"


def test_hyperparameters_progress_bar_and_buffer_size_are_recorded(tmp_path, capsys):
    args = [a for a in ARGS if a != "--no-progress"]
    summary = cli.main([*args, "--steps", "200", "--out", str(tmp_path)])[0]
    folder = tmp_path / "Pendulum-v1" / "sac" / "regrama" / "seed0"
    shown = capsys.readouterr().out
    assert "sac regrama seed0 Pendulum-v1" in shown  # the progress bar names the run
    assert "v_num" not in shown  # the folder names the run; Lightning's v_num=eed0 said nothing
    asked = summary["config"]["agent_args"]["loop"]["buffer_size"]
    assert summary["buffer_size"] == 200 and asked == 1_000_000  # used / asked
    hparams = yaml.safe_load((folder / "hparams.yaml").read_text())
    assert (hparams["method"], hparams["grama_tau"], hparams["reset_every"]) == ("regrama", 0.01, 50)
    assert hparams["agent_args"]["critic_net"]["width"] == 32 and hparams["agent_args"]["actor_net"]["width"] == 32
    assert hparams["networks"] == ["critic"] and hparams["buffer_size"] == 200
    content = tensorboard(folder).PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["method"].string_value == "regrama" and start.hparams["reset_every"].number_value == 50
    assert start.hparams["agent_args/critic_net/width"].number_value == 32
    final = tensorboard(folder).Scalars("hp/final_eval_return")
    assert final[-1].value == pytest.approx(summary["final_eval_return"])
    assert json.loads((folder / "run.json").read_text())["status"] == "complete"


def test_make_demo_writes_only_where_git_ignores(tmp_path):
    """``make demo`` must leave a clean checkout clean: its runs, table and plot all go to ignored folders."""
    import shutil
    import subprocess
    from pathlib import Path

    from benchmarks.rl import demo

    args = demo.build_parser().parse_args([])
    env = args.env.replace(":", "_")
    written = [
        args.runs / env / "sac" / "regrama" / "seed0" / "summary.json",  # run folders: <env>/<agent>/<method>
        args.out / f"{env}.csv",
        args.out / f"{env}.png",
    ]
    assert all(not str(p).startswith("benchmarks/results") for p in written)  # the committed results stay apart
    root = Path(__file__).resolve().parent.parent
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    done = subprocess.run(["git", "check-ignore", *map(str, written)], cwd=root, capture_output=True, text=True)
    assert done.stdout.split() == [str(p) for p in written]  # every path is ignored


def test_the_plot_takes_the_environment_id_as_typed(tmp_path, capsys):
    from benchmarks.rl import plot

    for agent, method, seed in (("sac", "vanilla", 0), ("sac", "regrama", 0), ("bro", "regrama", 0)):
        folder = tmp_path / "dmc_cheetah-run" / agent / method / f"seed{seed}"
        runs.begin(folder, {"agent": agent, "method": method, "seed": seed})
        rows = ["step,eval/return,grama/ratio,dormant/ratio", "1000,10.5,0.1,0.2", "2000,20.5,0.05,0.3"]
        (folder / "metrics.csv").write_text("\n".join(rows) + "\n")
        runs.finish(folder, {})
    png = plot.main([str(tmp_path / "dmc:cheetah-run")])  # as passed to --env; the folder says dmc_cheetah-run
    fig = plot.draw(plot.run_folder(tmp_path / "dmc:cheetah-run"))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["bro regrama (1 seed)", "sac regrama (1 seed)", "sac vanilla (1 seed)"]  # not "(1 seeds)"
    assert fig._suptitle.get_text() == "dmc_cheetah-run (one seed per curve)"  # no spread over one seed
    assert png == tmp_path / "dmc_cheetah-run" / "curves.png" and png.stat().st_size > 10_000
    with pytest.raises(SystemExit) as missing:
        plot.main([str(tmp_path / "dmc:walker-run")])
    assert missing.value.code == 2 and "run `python -m benchmarks.rl --out ...` first" in capsys.readouterr().err


def test_a_multi_seed_command_ends_with_the_table_over_seeds(tmp_path, capsys):
    summaries = cli.main([*ARGS, "--steps", "200", "--seeds", "0", "1", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "Over seeds, per method: mean [95% bootstrap interval over seeds] of sac on Pendulum-v1" in printed
    assert "IQM: interquartile mean of final return" in printed
    path = tmp_path / "Pendulum-v1" / "sac" / "seed_table.csv"
    with path.open(newline="") as f:
        (row,) = list(csv.DictReader(f))
    returns = [s["final_eval_return"] for s in summaries]
    assert row["method"] == "regrama" and row["seeds"] == "2" and returns[0] != returns[1]
    # Two seeds: the percentile bootstrap interval of the mean spans both values, the IQM is their mean.
    assert float(row["final_eval_return_mean"]) == pytest.approx(sum(returns) / 2)
    assert float(row["final_eval_return_iqm"]) == pytest.approx(sum(returns) / 2)
    low, high = float(row["final_eval_return_ci_low"]), float(row["final_eval_return_ci_high"])
    assert (low, high) == pytest.approx((min(returns), max(returns)))
    ratios = [s["grama_ratio"] for s in summaries]
    assert float(row["grama_ratio_mean"]) == pytest.approx(sum(ratios) / 2)


def test_the_plot_compares_agents_with_a_colour_per_method_and_marks_resets(tmp_path):
    from benchmarks.harness import style
    from benchmarks.rl import plot

    for agent, method in (("sac", "vanilla"), ("sac", "regrama"), ("bro", "regrama"), ("dacer", "redo")):
        for seed in (0, 1):
            folder = tmp_path / "Hopper-v5" / agent / method / f"seed{seed}"
            runs.begin(folder, {"agent": agent, "method": method, "seed": seed})
            reset = "" if method == "vanilla" else "12"
            rows = ["step,eval/return,grama/ratio,dormant/ratio,reset/neurons", f"1000,{10 + seed},0.1,0.2,{reset}",
                    "1500,,,,0", f"2000,{20 + seed},0.05,0.3,{reset}"]  # fmt: skip
            (folder / "metrics.csv").write_text("\n".join(rows) + "\n")
            runs.finish(folder, {})
    fig = plot.draw(tmp_path / "Hopper-v5")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["bro regrama (2 seeds)", "dacer redo (2 seeds)", "sac regrama (2 seeds)", "sac vanilla (2 seeds)"]
    curves = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    # The method's colour in every plot; the agent's line style.
    assert (
        curves["bro regrama (2 seeds)"].get_color()
        == style.color("regrama")
        == curves["sac regrama (2 seeds)"].get_color()
    )
    assert curves["sac vanilla (2 seeds)"].get_color() == style.color("vanilla")
    assert len({curves[label].get_linestyle() for label in labels}) == 3  # bro, dacer, sac
    assert curves["sac regrama (2 seeds)"].get_linestyle() == curves["sac vanilla (2 seeds)"].get_linestyle()
    assert curves["sac regrama (2 seeds)"].get_ydata().tolist()[0] == 10.5  # the mean over seeds
    # Reset events: ticks at the steps with neurons reset (not at 1500, where none were), none for vanilla.
    ticks = [line for line in ax.get_lines() if line.get_marker() == "|"]
    assert {tuple(line.get_xdata().tolist()) for line in ticks} == {(1000, 2000)}
    assert style.color("vanilla") not in {line.get_color() for line in ticks} and len(ticks) == 3


def test_a_resume_without_the_buffer_says_it_refills_it_first(tmp_path):
    from types import SimpleNamespace

    from benchmarks.rl.runner import resume_note

    path = tmp_path / "last.ckpt"
    torch.save({"off_policy_agent": {"env_steps": 3000, "updates": 1000}}, path)
    note = resume_note(tmp_path, path, SimpleNamespace(learning_starts=1000))
    assert note.startswith(f"{tmp_path}: resuming at 3000 environment steps (1000 updates); the checkpoint holds ")
    assert "no replay buffer (--no-checkpoint-buffer)" in note and "refills it with 1000 steps" in note
    assert "fewer updates than an uninterrupted run" in note
