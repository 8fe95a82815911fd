"""Every benchmark command line: --help shows a text and the default of each flag, prints without importing torch
(fast), and bad arguments are argparse one-liners that name the flag and a fix the command line can express."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import time

import pytest

from benchmarks.harness.cli import flags_without_help

CLIS = [
    "benchmarks.rl",
    "benchmarks.rl.demo",
    "benchmarks.rl.plot",
    "benchmarks.rl.perf",
    "benchmarks.cifar100_continual",
    "benchmarks.cifar100_continual.perf",
    "benchmarks.random_labels",
    "benchmarks.overhead",
]
PARSE = {  # the function of each command line that parses (and, for --help, prints and exits)
    "benchmarks.rl": ("benchmarks.rl.cli", "parse"),
    "benchmarks.rl.demo": ("benchmarks.rl.demo", "main"),
    "benchmarks.rl.plot": ("benchmarks.rl.plot", "main"),
    "benchmarks.rl.perf": ("benchmarks.rl.perf", "main"),
    "benchmarks.cifar100_continual": ("benchmarks.cifar100_continual.cli", "main"),
    "benchmarks.cifar100_continual.perf": ("benchmarks.cifar100_continual.perf", "parse_args"),
    "benchmarks.random_labels": ("benchmarks.random_labels.cli", "parse_args"),
    "benchmarks.overhead": ("benchmarks.overhead.cli", "parse_args"),
}


def parser_of(cli: str) -> argparse.ArgumentParser:
    """The parser a command line builds, caught when it parses."""
    import importlib

    module, function = PARSE[cli]
    caught = []

    class ParsedError(Exception):
        pass

    def catch(self, args=None, namespace=None):
        caught.append(self)
        raise ParsedError

    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = catch
    try:
        getattr(importlib.import_module(module), function)([])
    except ParsedError:
        pass
    finally:
        argparse.ArgumentParser.parse_args = original
    return caught[0]


@pytest.mark.parametrize("cli", CLIS)
def test_every_flag_has_a_help_text_and_shows_its_default(cli):
    parser = parser_of(cli)
    assert flags_without_help(parser) == []
    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for p in [parser, *(s for a in subcommands for s in a.choices.values())]:
        text = p.format_help()
        for action in p._actions:
            if not action.option_strings or action.default is argparse.SUPPRESS or not action.help:
                continue
            shown = p._get_formatter()._format_action(action)
            # A default that says nothing is left out: None (the help says what happens) and an off switch.
            says_nothing = action.default is None or (action.nargs == 0 and action.default is False)
            assert says_nothing or "(default:" in shown, (cli, action.option_strings, shown)
            assert "(default: None)" not in shown and shown.count("(default:") <= 1, shown
        assert "usage:" in text and "``" not in text and ":class:" not in text  # no raw markup


@pytest.mark.parametrize("cli", [*CLIS, "benchmarks.cifar100_continual run", "benchmarks.cifar100_continual plot"])
def test_help_prints_without_importing_torch(cli):
    # -X importtime lists every module imported: the hard guarantee. The wall time is checked with a wide margin
    # against the 3 s bound (torch alone takes ~4 s to import here, Lightning ~12 s).
    start = time.perf_counter()
    command = [sys.executable, "-X", "importtime", "-m", *cli.split(), "--help"]
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    assert done.returncode == 0 and "usage:" in done.stdout, done.stderr[-2000:]
    assert "(default:" in done.stdout or cli == "benchmarks.cifar100_continual"  # that one lists subcommands only
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time")}
    heavy = {m for m in imported if m.split(".")[0] in ("torch", "lightning", "matplotlib", "gymnasium", "mujoco")}
    assert not heavy, sorted(heavy)[:5]
    assert seconds < 3.0


def test_rl_command_line_defaults_and_choices_are_those_of_the_code():
    from benchmarks.rl import cli
    from benchmarks.rl.agent_args import agent_defaults, describe
    from benchmarks.rl.agent_options import options
    from benchmarks.rl.methods import METHODS
    from benchmarks.rl.networks import ACTIVATIONS
    from benchmarks.rl.registry import AGENTS
    from benchmarks.rl.runner import RunConfig

    config, methods, seeds, threads, control = cli.parse(["--env", "Pendulum-v1"])
    expected = dataclasses.replace(RunConfig(), env="Pendulum-v1", agent_args=agent_defaults(AGENTS["sac"]))
    assert config == expected
    assert (methods, seeds, threads, control.resume, control.overwrite) == (["regrama"], [0], 1, False, False)
    assert tuple(sorted(AGENTS)) == cli.AGENT_NAMES and cli.METHOD_NAMES == METHODS
    assert tuple(sorted(ACTIVATIONS)) == cli.ACTIVATION_NAMES
    # The stored option table is the one the agents' signatures and docstrings give (regenerate it with
    # `python -m benchmarks.rl.agent_args` after changing an agent).
    assert options() == {name: describe(cls) for name, cls in AGENTS.items()}


def test_overhead_choices_are_those_of_the_code():
    from benchmarks.overhead import cli as overhead
    from benchmarks.overhead import timing as overhead_timing

    assert overhead.CLOCKS == overhead_timing.CLOCKS
    assert tuple(overhead_timing.MODELS) == overhead.MODELS and tuple(overhead_timing.CONFIGS) == overhead.CONFIGS


def one_line_error(capsys, main, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--reset-every", "0"], "argument --reset-every: must be a positive integer, got '0'"),
        (["--max-reset-fraction", "2"], "argument --max-reset-fraction: must be a number in (0, 1], got '2'"),
        (["--steps", "300"], "--learning-starts 5000 leaves no update in --steps 300: lower --learning-starts"),
        (["--steps", "300", "--learning-starts", "10", "--buffer-size", "5"], "raise --buffer-size"),
        (["--env", "HalfCheeta-v5"], "HalfCheetah-v5"),  # the environment's own message, with close matches
        (["--resume", "--overwrite"], "argument --overwrite: not allowed with argument --resume"),
    ],
)
def test_rl_argument_errors_are_one_line_usage_errors(capsys, tmp_path, argv, message):
    from benchmarks.rl import cli

    line = one_line_error(capsys, cli.main, [*argv, "--out", str(tmp_path)])
    assert line.startswith("python -m benchmarks.rl: error: ") and message in line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--reset-every", "0"], "argument --reset-every: must be a positive integer, got '0'"),
        (["--grama-tau", "-1"], "argument --grama-tau: must be a number >= 0, got '-1'"),
        (["--initial-classes", "200"], "--initial-classes 200 exceeds --max-classes 100"),
    ],
)
def test_cifar_argument_errors_are_one_line_usage_errors(capsys, tmp_path, argv, message):
    from benchmarks.cifar100_continual import cli

    line = one_line_error(capsys, cli.main, ["run", "--out", str(tmp_path), *argv])
    assert line.startswith("python -m benchmarks.cifar100_continual run: error: ") and message in line


def test_a_config_file_holds_the_same_keys_as_the_flags(tmp_path):
    from benchmarks.rl import cli

    flags = ["--agent", "bro", "--env", "Pendulum-v1", "--methods", "vanilla", "redo", "--steps", "3000"]
    flags += ["--learning-starts", "500", "--n-quantiles", "8", "--no-checkpoint-buffer", "--out", str(tmp_path)]
    (tmp_path / "run.yaml").write_text(
        "agent: bro\nenv: Pendulum-v1\nmethods: [vanilla, redo]\nsteps: 3000\nlearning_starts: 500\n"
        f"n-quantiles: 8\ncheckpoint_buffer: false\nout: {tmp_path}\n"
    )
    from_flags, from_file = cli.parse(flags), cli.parse(["--config", str(tmp_path / "run.yaml")])
    assert from_file[:2] == from_flags[:2] and from_file[0].agent_args["n_quantiles"] == 8
    assert from_file[0].checkpoint_buffer is False
    overridden = cli.parse(["--config", str(tmp_path / "run.yaml"), "--steps", "4000"])[0]  # the command line wins
    assert overridden.steps == 4000


@pytest.mark.parametrize(
    ("text", "message"),
    [("stepz: 10\n", "unknown setting 'stepz' (there is no flag --stepz)"), ("- 1\n", "expected a mapping")],
)
def test_a_bad_config_file_is_a_usage_error(capsys, tmp_path, text, message):
    from benchmarks.random_labels import cli

    (tmp_path / "run.yaml").write_text(text)
    line = one_line_error(capsys, cli.parse_args, ["--config", str(tmp_path / "run.yaml")])
    assert line.startswith("python -m benchmarks.random_labels: error: --config ") and message in line


def test_the_agents_loop_settings_are_declared_once():
    import inspect

    from benchmarks.rl.agent_options import options
    from benchmarks.rl.config import LoopConfig
    from benchmarks.rl.registry import AGENTS

    fields = {f.name for f in dataclasses.fields(LoopConfig)}
    per_run = {"total_steps", "seed", "checkpoint_buffer"}  # set by the runner's --steps, --seed, --checkpoint-buffer
    for name, cls in AGENTS.items():
        assert not set(inspect.signature(cls.__init__).parameters) & fields, name  # no agent re-declares them
        flags = {o["dest"].removeprefix("agent.loop.") for o in options()[name] if o["dest"].startswith("agent.loop.")}
        assert flags == fields - per_run, name  # each one flag, from LoopConfig, with the agent's default
        loop_defaults = {o["dest"]: o["default"] for o in options()[name] if o["dest"].startswith("agent.loop.")}
        assert loop_defaults == {f"agent.loop.{k}": getattr(cls.LOOP, k) for k in fields - per_run}, name
