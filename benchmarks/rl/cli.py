"""Train RL agents with and without neuron resets: ``python -m benchmarks.rl --help``.

Examples:
    python -m benchmarks.rl --agent sac --env HalfCheetah-v5 --method regrama --steps 1000000 --seed 0
    python -m benchmarks.rl --env dmc:dog-walk --methods vanilla regrama redo --seeds 0 1 2 --accelerator gpu
    python -m benchmarks.rl --env dmc:dog-walk --methods vanilla regrama redo --seeds 0 1 2 --resume
    python -m benchmarks.rl --agent bro --env dmc:dog-walk --critic-net-depth 4 --actor-net-depth 4
    python -m benchmarks.rl --agent dacer --env HalfCheetah-v5 --diffusion-steps 20
    python -m benchmarks.rl --agent bro --help        # the options (and defaults) of one agent
    python -m benchmarks.rl.plot runs/rl/HalfCheetah-v5

Each run writes ``<out>/<env>/<agent>/<method>/seed<k>/``: ``run.json`` (settings and status), ``metrics.csv`` (every
logged value against environment steps), ``hparams.yaml``, ``tensorboard/`` event files, ``last.ckpt`` (every
--checkpoint-every environment steps and at the end) and ``summary.json``. A run folder is keyed on the run's
full settings: a finished run with the same settings is skipped, one with other settings is never overwritten
without --overwrite, and an interrupted one (Ctrl-C) continues from its last checkpoint with --resume.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..harness.cli import (
    add_config_flag,
    command,
    fraction,
    make_parser,
    non_negative_float,
    non_negative_int,
    positive_int,
    usage_errors,
    with_config,
)
from ..harness.loggers import LOGGERS, check_loggers
from ..harness.methods import method_names
from ..harness.runs import check_out
from .agent_options import add_options, agent_names, options

if TYPE_CHECKING:  # imported when needed: --help must not load torch
    from ..harness.runs import RunControl
    from .runner import RunConfig

# The command line's choices, spelled out so that --help imports no torch (tests check that they equal METHODS,
# ACTIVATIONS and the registry's agents; the agents' own options come from agent_options.json).
AGENT_NAMES = agent_names()
METHOD_NAMES = method_names("rl")
ACTIVATION_NAMES = ("gelu", "leaky_relu", "mish", "relu", "sigmoid", "swish", "tanh")


def build_parser(agent: str = "sac") -> argparse.ArgumentParser:
    """The parser (light: no torch, no Lightning), with the hyperparameters of ``agent``."""
    parser = make_parser(command(__package__), __doc__)
    add = parser.add_argument
    add("--agent", choices=AGENT_NAMES, default="sac", help="the agent; --help lists the chosen agent's options")
    add("--env", default="HalfCheetah-v5", help="gymnasium id (HalfCheetah-v5) or dmc:<domain>-<task> (dmc:dog-walk)")
    add("--method", "--methods", dest="methods", nargs="+", choices=METHOD_NAMES, default=["regrama"],
        help="methods to run (each run measures both GraMa and ReDo ratios)")  # fmt: skip
    add("--seed", "--seeds", dest="seeds", nargs="+", type=non_negative_int, default=[0], help="seeds to run")
    add("--steps", type=positive_int, default=1_000_000, help="environment steps per run")
    shared = parser.add_argument_group("every network of the agent at once (overrides the per-network options)")
    shared.add_argument("--width", type=positive_int, default=None, help="neurons per hidden layer")
    shared.add_argument("--depth", type=positive_int, default=None, help="hidden layers, or residual blocks")
    shared.add_argument("--activation", choices=ACTIVATION_NAMES, default=None, help="hidden activation")
    shared.add_argument("--layer-norm", action="store_const", const=True, default=None, help="LayerNorm after Linear")
    shared.add_argument("--residual", action="store_const", const=True, default=None, help="BRO-net residual blocks")
    add("--networks", nargs="+", default=None, help="networks to reset (default: the agent's own choice)")
    add("--reset-every", type=positive_int, default=1000, help="reset period in agent updates")
    add("--grama-tau", type=non_negative_float, default=0.01, help="GraMa threshold (paper: 0.01)")
    add("--redo-tau", type=non_negative_float, default=0.02, help="ReDo threshold (paper: 0.02)")
    add("--max-reset-fraction", type=fraction, default=None, help="reset at most this fraction of a layer at once")
    add("--keep-outgoing", action="store_true", help="keep reset neurons' outgoing weights (the authors' SAC code)")
    add("--eval-every", type=positive_int, default=10_000, help="evaluation period in environment steps")
    add("--eval-episodes", type=positive_int, default=10, help="episodes per evaluation")
    add("--log-every", type=positive_int, default=1000, help="log losses and ratios every N updates")
    add("--video", action="store_true", help="record evaluation episodes (MUJOCO_GL=egl)")
    add("--checkpoint-buffer", action=argparse.BooleanOptionalAction, default=True,
        help="save the replay buffer in last.ckpt, so that a resumed run trains on the same data as the "
             "uninterrupted one (--no-checkpoint-buffer: small checkpoints; a resumed run first refills the "
             "buffer with --learning-starts steps of its policy, so it makes fewer updates)")  # fmt: skip
    add("--checkpoint-every", type=positive_int, default=None,
        help="save last.ckpt every N environment steps (default: --eval-every)")  # fmt: skip
    control = parser.add_mutually_exclusive_group()
    control.add_argument("--resume", action="store_true",
                         help="continue unfinished runs of the same settings from their last checkpoint")  # fmt: skip
    control.add_argument("--overwrite", action="store_true",
                         help="delete and re-run runs whose folder holds a run (any status or settings)")  # fmt: skip
    add("--accelerator", default="auto", help="cpu, gpu or auto")
    add("--devices", type=positive_int, default=1, help="devices per run")
    add("--threads", type=positive_int, default=1,
        help="torch CPU threads (1 is fastest on 2 cores: the env steps in between)")  # fmt: skip
    add("--no-progress", action="store_true", help="no progress bar")
    add("--out", type=Path, default=Path("runs/rl"), help="root of the run folders")
    add("--logger", nargs="+", choices=sorted(LOGGERS), default=[],
        help="also log to these (metrics.csv and TensorBoard are always written); needs its package")  # fmt: skip
    add_config_flag(parser)
    add_options(parser, agent, options()[agent])
    return parser


def _agent(argv: list[str] | None) -> str:
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--agent", choices=AGENT_NAMES, default="sac")
    return first.parse_known_args(argv)[0].agent


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Checks across flags, as usage errors that name the flags to change."""
    values = vars(args)
    starts, batch = values["agent.loop.learning_starts"], values["agent.loop.batch_size"]
    buffer = min(values["agent.loop.buffer_size"], args.steps)
    if starts >= args.steps:
        parser.error(f"--learning-starts {starts} leaves no update in --steps {args.steps}: lower "
                     "--learning-starts or raise --steps.")  # fmt: skip
    need = max(starts, batch, values["agent.loop.num_envs"])
    if buffer < need:
        parser.error(f"the replay buffer ({buffer} transitions: --buffer-size, at most --steps) must hold "
                     f"--learning-starts, --batch-size and --num-envs ({need}): raise --buffer-size.")  # fmt: skip


def parse(argv: list[str] | None = None) -> tuple[RunConfig, list[str], list[int], int, RunControl]:
    """Parse and check the command line; the agent's options (and their defaults) are those of ``--agent``.

    Everything is checked before any run folder is touched: the flags, the agent's hyperparameters (an agent is
    built once), the environment, the networks, the accelerator, ``--out`` and what the run folders hold.

    Returns:
        ``(RunConfig, methods, seeds, threads, RunControl)``.

    Raises:
        SystemExit: On bad input, with a one-line message naming the flag (argparse's behaviour).
    """
    parser = build_parser(_agent(with_config(build_parser(), argv, check_keys=False)))
    args = parser.parse_args(with_config(parser, argv))
    check(parser, args)
    with usage_errors(parser):
        check_out(args.out)
        check_loggers(args.logger)
    import dataclasses

    from ..harness.runs import RunControl
    from .agent_args import read_agent_arguments
    from .networks import NetworkConfig
    from .registry import agent_class
    from .runner import RunConfig

    with usage_errors(parser):
        agent_args = read_agent_arguments(args, agent_class(args.agent))
        overrides = {"width": args.width, "depth": args.depth, "activation": args.activation}
        overrides |= {"layer_norm": args.layer_norm, "residual": args.residual}
        overrides = {k: v for k, v in overrides.items() if v is not None}
        for name, value in agent_args.items():
            if isinstance(value, NetworkConfig):
                agent_args[name] = dataclasses.replace(value, **overrides)
    config = RunConfig(
        agent=args.agent,
        env=args.env,
        steps=args.steps,
        agent_args=agent_args,
        networks=tuple(args.networks) if args.networks else None,
        reset_every=args.reset_every,
        grama_tau=args.grama_tau,
        redo_tau=args.redo_tau,
        max_reset_fraction=args.max_reset_fraction,
        zero_outgoing=not args.keep_outgoing,
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        log_every=args.log_every,
        video=args.video,
        checkpoint_buffer=args.checkpoint_buffer,
        accelerator=args.accelerator,
        devices=args.devices,
        progress=not args.no_progress,
        out=args.out,
        loggers=tuple(args.logger),
    )
    control = RunControl(args.resume, args.overwrite, args.checkpoint_every)
    with usage_errors(parser):  # a bad hyperparameter, environment, network or accelerator, a folder in use, ...
        _check_runs(config, args.methods, args.seeds, control)
    return config, args.methods, args.seeds, args.threads, control


def _check_runs(config: RunConfig, methods: list[str], seeds: list[int], control: RunControl) -> None:
    from ..harness.devices import check_accelerator
    from ..harness.runs import decide
    from .runner import make_agent, reset_networks, run_dir, run_settings

    check_accelerator(config.accelerator, config.devices)
    agent = make_agent(config, seeds[0])  # checks the hyperparameters and the environment id
    reset_networks(config, agent)
    agent.close()
    for seed in seeds:
        for method in methods:
            decide(run_dir(config, method, seed), run_settings(config, method, seed), control)


def _ratio(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.4f}"


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the grid of methods and seeds; return the summaries."""
    config, methods, seeds, threads, control = parse(argv)
    from ..harness.process import prepare
    from .runner import run

    prepare(threads)
    summaries = []
    for seed in seeds:
        for method in methods:
            summary = run(config, method, seed, control)
            summaries.append(summary)
            print(
                f"{config.env} {method} seed {seed}: eval return {summary['final_eval_return']:.1f} at "
                f"{summary['env_steps']} steps, GraMa ratio {_ratio(summary['grama_ratio'])}, "
                f"{summary['env_steps_per_s']:.0f} env steps/s, {summary['updates_per_s']:.0f} updates/s"
            )
    _seed_table(config, summaries, len(seeds) > 1)
    return summaries


def _seed_table(config: RunConfig, summaries: list[dict], show: bool) -> None:
    """Write the table over seeds next to the runs (``<out>/<env>/<agent>/seed_table.csv``); print it if ``show``."""
    from ..harness.seed_table import Metric, report_seeds
    from .runner import env_folder

    metrics = [Metric("final_eval_return", "final return", 1, iqm=True), Metric("grama_ratio", "GraMa ratio", 4),
               Metric("dormant_ratio", "dormant ratio", 4)]  # fmt: skip
    path = config.out / env_folder(config.env) / config.agent / "seed_table.csv"
    text = report_seeds(
        summaries, metrics, path, f"{config.agent} on {config.env} after {config.steps} environment steps"
    )
    if show:
        print(f"\n{text}")


if __name__ == "__main__":
    main()
