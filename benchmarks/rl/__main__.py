"""Train RL agents with and without neuron resets: ``python -m benchmarks.rl --help``.

Examples:
    python -m benchmarks.rl --agent sac --env HalfCheetah-v5 --method regrama --steps 1000000 --seed 0
    python -m benchmarks.rl --env dmc:dog-walk --methods vanilla regrama redo --seeds 0 1 2 --accelerator gpu
    python -m benchmarks.rl --agent bro --env dmc:dog-walk --critic-net-depth 4 --actor-net-depth 4
    python -m benchmarks.rl --agent dacer --env HalfCheetah-v5 --diffusion-steps 20
    python -m benchmarks.rl --agent bro --help        # the options (and defaults) of one agent
    python -m benchmarks.rl.plot runs/rl/HalfCheetah-v5

Each run writes ``<out>/<env>/<method>/seed<k>/``: ``metrics.csv`` (every logged value against environment
steps), ``tensorboard/`` event files, ``last.ckpt`` and ``summary.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from benchmarks.common import prepare
from benchmarks.rl.agent_args import add_agent_arguments, read_agent_arguments
from benchmarks.rl.methods import METHODS
from benchmarks.rl.networks import ACTIVATIONS, NetworkConfig
from benchmarks.rl.registry import AGENTS
from benchmarks.rl.runner import RunConfig, run


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The docstring as written, and every option's default."""


def parse(argv: list[str] | None = None) -> tuple[RunConfig, list[str], list[int], int]:
    """Parse a command line; the agent's options (and their defaults) are those of ``--agent``.

    Raises:
        SystemExit: On bad input, with a message naming the option (argparse's behaviour).
    """
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--agent", choices=sorted(AGENTS), default="sac")
    known, _ = first.parse_known_args(argv)
    cls = AGENTS[known.agent]
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rl", description=__doc__, formatter_class=_Formatter)
    d = RunConfig()
    add = parser.add_argument
    add("--agent", choices=sorted(AGENTS), default=d.agent, help="agent; --help lists the chosen agent's options")
    add("--env", default=d.env, help="gymnasium id (HalfCheetah-v5) or dmc:<domain>-<task> (dmc:dog-walk)")
    add("--method", "--methods", dest="methods", nargs="+", choices=METHODS, default=["regrama"])
    add("--seed", "--seeds", dest="seeds", nargs="+", type=int, default=[0])
    add("--steps", type=int, default=d.steps, help="environment steps per run")
    shared = parser.add_argument_group("every network of the agent at once (overrides the per-network options)")
    shared.add_argument("--width", type=int, default=None)
    shared.add_argument("--depth", type=int, default=None, help="hidden layers, or residual blocks")
    shared.add_argument("--activation", choices=sorted(ACTIVATIONS), default=None)
    shared.add_argument("--layer-norm", action="store_const", const=True, default=None)
    shared.add_argument("--residual", action="store_const", const=True, default=None, help="BRO-net residual blocks")
    add(
        "--networks",
        nargs="+",
        default=None,
        help=f"networks to reset (default for {cls.__name__}: {' '.join(cls.RESET_NETWORKS)})",
    )
    add("--reset-every", type=int, default=d.reset_every, help="reset period in agent updates")
    add("--grama-tau", type=float, default=d.grama_tau)
    add("--redo-tau", type=float, default=d.redo_tau)
    add("--max-reset-fraction", type=float, default=d.max_reset_fraction)
    add("--keep-outgoing", action="store_true", help="keep reset neurons' outgoing weights (the authors' SAC code)")
    add("--eval-every", type=int, default=d.eval_every, help="evaluation period in environment steps")
    add("--eval-episodes", type=int, default=d.eval_episodes)
    add("--log-every", type=int, default=d.log_every, help="log losses and ratios every N updates")
    add("--video", action="store_true", help="record evaluation episodes (MUJOCO_GL=egl)")
    add("--checkpoint-buffer", action="store_true", help="save the replay buffer in last.ckpt")
    add("--accelerator", default=d.accelerator, help="cpu, gpu or auto")
    add("--devices", type=int, default=d.devices)
    add("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on 2 cores: the env steps in between)")
    add("--no-progress", action="store_true", help="no progress bar")
    add("--out", type=Path, default=d.out)
    add_agent_arguments(parser, cls)
    args = parser.parse_args(argv)
    agent_args = read_agent_arguments(args, cls)
    overrides = {"width": args.width, "depth": args.depth, "activation": args.activation}
    overrides |= {"layer_norm": args.layer_norm, "residual": args.residual}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    for name, value in agent_args.items():
        if isinstance(value, NetworkConfig):
            agent_args[name] = dataclasses.replace(value, **overrides)
    if agent_args["learning_starts"] >= args.steps:
        parser.error(
            f"--learning-starts {agent_args['learning_starts']} is not below --steps {args.steps}: the run would end "
            "before its first update; lower --learning-starts (or raise --steps)."
        )
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
    )
    return config, args.methods, args.seeds, args.threads


def main(argv: list[str] | None = None) -> list[dict]:
    config, methods, seeds, threads = parse(argv)
    prepare(threads)
    summaries = []
    for seed in seeds:
        for method in methods:
            summary = run(config, method, seed)
            summaries.append(summary)
            print(
                f"{config.env} {method} seed {seed}: eval return {summary['final_eval_return']:.1f} at "
                f"{summary['env_steps']} steps, GraMa ratio {summary['grama_ratio']}, "
                f"{summary['env_steps_per_s']:.0f} env steps/s, {summary['updates_per_s']:.0f} updates/s"
            )
    return summaries


if __name__ == "__main__":
    main()
