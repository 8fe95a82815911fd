"""Speed of a Lightning agent against the same agent's update written as a plain PyTorch loop, in one process.

Both sides do the same work per iteration: one environment step with the current policy (through the same
:class:`~benchmarks.rl.loop.Collector` and replay buffer), one replay sample, one update (the agent's own
``update``, so the arithmetic is identical). The Lightning side runs ``trainer.fit`` on the agent; the plain side
calls ``update`` with the bare optimizers and ``Tensor.backward``. Blocks of each alternate, so the machine's drift
hits both alike; the ratio of their medians is printed (> 1: Lightning is faster). The replay ratio is 1 on both
sides (updates per second is the measure).

Run:
    python -m benchmarks.rl.perf                                   # SAC, HalfCheetah-v5, CPU
    python -m benchmarks.rl.perf --agent bro --env dmc:dog-walk --blocks 3
    python -m benchmarks.rl.perf --agent dacer --accelerator gpu
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from ..harness.cli import command, make_parser, non_negative_int, positive_int
from .agent_options import agent_names


def build_parser() -> argparse.ArgumentParser:
    """The parser (light: no torch)."""
    parser = make_parser(command(__package__, "perf"), __doc__)
    add = parser.add_argument
    add("--agent", choices=agent_names(), default="sac", help="the agent to time")
    add("--env", default="HalfCheetah-v5", help="gymnasium id or dmc:<domain>-<task>")
    add("--updates", type=positive_int, default=300, help="updates per timed block")
    add("--warmup", type=non_negative_int, default=20, help="untimed updates at the start of each block")
    add("--blocks", type=positive_int, default=5, help="blocks of each kind, alternating")
    add("--accelerator", default="cpu", help="cpu, gpu or auto")
    add("--threads", type=positive_int, default=1, help="torch CPU threads")
    add("--out", type=Path, default=None, help="write the result as JSON here")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Time both sides; print and return the result."""
    args = build_parser().parse_args(argv)
    import lightning.pytorch as pl

    from ..harness.process import prepare
    from .perf_timing import lightning_block, plain_block
    from .registry import AGENTS

    prepare(args.threads)
    pl.seed_everything(0, verbose=False)
    cls = AGENTS[args.agent]
    loop = cls.LOOP.replace(total_steps=10**9, learning_starts=1_000, replay_ratio=1.0, buffer_size=100_000)
    agent = cls(args.env, loop)
    # A first fit fills the buffer with random steps and moves the agent to the device.
    lightning_block(agent, updates=agent.learning_starts, warmup=0, accelerator=args.accelerator)
    optimizers = agent.configure_optimizers()  # the same optimizers, not wrapped by Lightning
    plain_block(agent, optimizers, args.warmup)
    rates: dict[str, list[float]] = {"lightning": [], "plain": []}
    for _ in range(args.blocks):
        rates["lightning"].append(lightning_block(agent, args.updates, args.warmup, args.accelerator))
        rates["plain"].append(plain_block(agent, optimizers, args.updates))
    lightning, plain = statistics.median(rates["lightning"]), statistics.median(rates["plain"])
    result = {
        "agent": args.agent,
        "env": args.env,
        "device": str(agent.device),
        "threads": args.threads,
        "updates_per_block": args.updates,
        "blocks": args.blocks,
        "lightning_updates_per_s": lightning,
        "plain_updates_per_s": plain,
        "ratio": lightning / plain,
        "per_block": rates,
    }
    print(
        f"{args.agent} on {args.env}, {agent.device}: Lightning {lightning:.1f} updates/s, "
        f"plain loop {plain:.1f} updates/s (one environment step each); "
        f"ratio {lightning / plain:.3f} (median of {args.blocks} blocks each)"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
