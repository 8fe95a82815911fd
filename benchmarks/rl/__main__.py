"""Train RL agents with and without neuron resets: ``python -m benchmarks.rl --help``.

Examples:
    python -m benchmarks.rl --agent sac --env HalfCheetah-v5 --method regrama --steps 1000000 --seed 0
    python -m benchmarks.rl --env dmc:dog-walk --methods vanilla regrama redo --seeds 0 1 2 --accelerator gpu
    python -m benchmarks.rl --env dmc:dog-walk --methods vanilla regrama redo --seeds 0 1 2 --resume
    python -m benchmarks.rl.plot runs/rl/HalfCheetah-v5

Each run writes ``<out>/<env>/<method>/seed<k>/``: ``run.json`` (settings and status), ``metrics.csv`` (every
logged value against environment steps), ``hparams.yaml``, ``tensorboard/`` event files, ``last.ckpt`` (every
--checkpoint-every environment steps and at the end) and ``summary.json``. A run folder is keyed on the run's
full settings: a finished run with the same settings is skipped, one with other settings is never overwritten
without --overwrite, and an interrupted one (Ctrl-C) continues from its last checkpoint with --resume.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.cli import (
    fraction,
    make_parser,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    usage_errors,
)

if TYPE_CHECKING:  # imported when needed: --help must not load torch
    from benchmarks.rl.runner import RunConfig
    from benchmarks.runs import RunControl

# The command line's choices and defaults, spelled out so that --help imports no torch (tests check that they
# equal RunConfig's, NetworkConfig's, METHODS and ACTIVATIONS).
AGENT_NAMES = ("sac",)
METHOD_NAMES = ("vanilla", "regrama", "redo")
ACTIVATION_NAMES = ("gelu", "leaky_relu", "mish", "relu", "sigmoid", "swish", "tanh")


def build_parser() -> argparse.ArgumentParser:
    """The parser (light: no torch, no Lightning)."""
    parser = make_parser("python -m benchmarks.rl", __doc__)
    add = parser.add_argument
    add("--agent", choices=AGENT_NAMES, default="sac", help="the agent to train")
    add("--env", default="HalfCheetah-v5", help="gymnasium id (HalfCheetah-v5) or dmc:<domain>-<task> (dmc:dog-walk)")
    add("--method", "--methods", dest="methods", nargs="+", choices=METHOD_NAMES, default=["regrama"],
        help="methods to run (each run measures both GraMa and ReDo ratios)")  # fmt: skip
    add("--seed", "--seeds", dest="seeds", nargs="+", type=non_negative_int, default=[0], help="seeds to run")
    add("--steps", type=positive_int, default=1_000_000, help="environment steps per run")
    add("--learning-starts", type=non_negative_int, default=5_000, help="random steps before the first update")
    add("--replay-ratio", type=positive_float, default=1.0, help="updates per environment step")
    add("--batch-size", type=positive_int, default=256, help="transitions per update")
    add("--buffer-size", type=positive_int, default=1_000_000, help="replay capacity (at most --steps is used)")
    add("--num-envs", type=positive_int, default=1, help="sub-environments stepped together")
    add("--width", type=positive_int, default=256, help="neurons per hidden layer (actor and critics)")
    add("--depth", type=positive_int, default=2, help="hidden layers (--residual: residual blocks)")
    add("--activation", choices=ACTIVATION_NAMES, default="relu", help="hidden activation")
    add("--layer-norm", action="store_true", help="LayerNorm after every hidden Linear")
    add("--residual", action="store_true", help="BRO-net residual blocks")
    add("--networks", nargs="+", choices=["critic", "actor"], default=["critic"], help="networks to reset")
    add("--reset-every", type=positive_int, default=1000, help="reset period in updates of the reset network")
    add("--grama-tau", type=non_negative_float, default=0.01, help="GraMa threshold (paper: 0.01)")
    add("--redo-tau", type=non_negative_float, default=0.02, help="ReDo threshold (paper: 0.02)")
    add("--max-reset-fraction", type=fraction, default=None, help="reset at most this fraction of a layer at once")
    add("--keep-outgoing", action="store_true", help="keep reset neurons' outgoing weights (the authors' SAC code)")
    add("--eval-every", type=positive_int, default=10_000, help="evaluation period in environment steps")
    add("--eval-episodes", type=positive_int, default=10, help="episodes per evaluation")
    add("--log-every", type=positive_int, default=1000, help="log losses and ratios every N updates")
    add("--video", action="store_true", help="record evaluation episodes (MUJOCO_GL=egl)")
    add("--checkpoint-buffer", action="store_true",
        help="save the replay buffer in last.ckpt, so that a resumed run trains on the same data")  # fmt: skip
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
    return parser


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Checks across flags, as usage errors that name the flags to change."""
    buffer = min(args.buffer_size, args.steps)
    if args.learning_starts >= args.steps:
        parser.error(f"--learning-starts {args.learning_starts} leaves no update in --steps {args.steps}: lower "
                     "--learning-starts or raise --steps.")  # fmt: skip
    need = max(args.learning_starts, args.batch_size, args.num_envs)
    if buffer < need:
        parser.error(f"the replay buffer ({buffer} transitions: --buffer-size, at most --steps) must hold "
                     f"--learning-starts, --batch-size and --num-envs ({need}): raise --buffer-size.")  # fmt: skip


def parse(argv: list[str] | None = None) -> tuple[RunConfig, list[str], list[int], int, RunControl]:
    """Parse and check the command line.

    Returns:
        ``(RunConfig, methods, seeds, threads, RunControl)``.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    check(parser, args)
    from benchmarks.rl.networks import NetworkConfig
    from benchmarks.rl.runner import RunConfig
    from benchmarks.runs import RunControl

    with usage_errors(parser):
        network = NetworkConfig(args.width, args.depth, args.activation, args.layer_norm, args.residual)
    config = RunConfig(
        agent=args.agent,
        env=args.env,
        steps=args.steps,
        learning_starts=args.learning_starts,
        replay_ratio=args.replay_ratio,
        batch_size=args.batch_size,
        buffer_size=args.buffer_size,
        num_envs=args.num_envs,
        network=network,
        networks=tuple(args.networks),
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
    )
    control = RunControl(args.resume, args.overwrite, args.checkpoint_every)
    with usage_errors(parser):  # an unknown environment, a run folder that holds another run, ...
        _check_runs(config, args.methods, args.seeds, control)
    return config, args.methods, args.seeds, args.threads, control


def _check_runs(config: RunConfig, methods: list[str], seeds: list[int], control: RunControl) -> None:
    from benchmarks.rl.envs import make_env
    from benchmarks.rl.runner import run_dir, run_settings
    from benchmarks.runs import decide

    make_env(config.env, seed=0).close()
    for seed in seeds:
        for method in methods:
            decide(run_dir(config, method, seed), run_settings(config, method, seed), control)


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the grid of methods and seeds; return the summaries."""
    config, methods, seeds, threads, control = parse(argv)
    from benchmarks.common import prepare
    from benchmarks.rl.runner import run

    prepare(threads)
    summaries = []
    for seed in seeds:
        for method in methods:
            summary = run(config, method, seed, control)
            summaries.append(summary)
            print(
                f"{config.env} {method} seed {seed}: eval return {summary['final_eval_return']:.1f} at "
                f"{summary['env_steps']} steps, GraMa ratio {summary['grama_ratio']}, "
                f"{summary['env_steps_per_s']:.0f} env steps/s, {summary['updates_per_s']:.0f} updates/s"
            )
    return summaries


if __name__ == "__main__":
    main()
