"""Train RL agents with and without neuron resets: ``python -m benchmarks.rl --help``.

Examples:
    python -m benchmarks.rl --agent sac --env HalfCheetah-v5 --method regrama --steps 1000000 --seed 0
    python -m benchmarks.rl --env dmc:dog-walk --methods vanilla regrama redo --seeds 0 1 2 --accelerator gpu
    python -m benchmarks.rl.plot runs/rl/HalfCheetah-v5

Each run writes ``<out>/<env>/<method>/seed<k>/``: ``metrics.csv`` (every logged value against environment
steps), ``tensorboard/`` event files, ``last.ckpt`` and ``summary.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.common import prepare
from benchmarks.rl.methods import METHODS
from benchmarks.rl.networks import ACTIVATIONS, NetworkConfig
from benchmarks.rl.runner import AGENTS, RunConfig, run


def parse(argv: list[str] | None = None) -> tuple[RunConfig, list[str], list[int], int]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.rl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    d = RunConfig()
    net = NetworkConfig()
    add = parser.add_argument
    add("--agent", choices=sorted(AGENTS), default=d.agent)
    add("--env", default=d.env, help="gymnasium id (HalfCheetah-v5) or dmc:<domain>-<task> (dmc:dog-walk)")
    add("--method", "--methods", dest="methods", nargs="+", choices=METHODS, default=["regrama"])
    add("--seed", "--seeds", dest="seeds", nargs="+", type=int, default=[0])
    add("--steps", type=int, default=d.steps, help="environment steps per run")
    add("--learning-starts", type=int, default=d.learning_starts)
    add("--replay-ratio", type=float, default=d.replay_ratio, help="updates per environment step")
    add("--batch-size", type=int, default=d.batch_size)
    add("--buffer-size", type=int, default=d.buffer_size)
    add("--num-envs", type=int, default=d.num_envs)
    add("--width", type=int, default=net.width)
    add("--depth", type=int, default=net.depth)
    add("--activation", choices=sorted(ACTIVATIONS), default=net.activation)
    add("--layer-norm", action="store_true", help="LayerNorm after every hidden Linear")
    add("--residual", action="store_true", help="BRO-net residual blocks")
    add("--networks", nargs="+", choices=["critic", "actor"], default=list(d.networks), help="networks to reset")
    add("--reset-every", type=int, default=d.reset_every, help="reset period in updates of the reset network")
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
    args = parser.parse_args(argv)
    config = RunConfig(
        agent=args.agent,
        env=args.env,
        steps=args.steps,
        learning_starts=args.learning_starts,
        replay_ratio=args.replay_ratio,
        batch_size=args.batch_size,
        buffer_size=args.buffer_size,
        num_envs=args.num_envs,
        network=NetworkConfig(args.width, args.depth, args.activation, args.layer_norm, args.residual),
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
