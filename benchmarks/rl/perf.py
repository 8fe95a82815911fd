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
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from benchmarks.common import prepare
from benchmarks.rl.agent import OffPolicyAgent
from benchmarks.rl.registry import AGENTS


class _Timer(pl.Callback):
    """Wall time of the updates after the first ``warmup`` of a fit (environment steps in between included)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.count, self.elapsed = warmup, 0.0, 0, 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx == self.warmup:
            self.start, self.count = time.perf_counter(), pl_module.updates

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.elapsed, self.count = time.perf_counter() - self.start, pl_module.updates - self.count


def lightning_block(agent: OffPolicyAgent, updates: int, warmup: int, accelerator: str) -> float:
    """Updates per second of ``trainer.fit`` over ``updates`` more updates (one environment step each)."""
    agent.total_steps = agent.env_steps + updates + warmup
    timer = _Timer(warmup)
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1000,
        callbacks=[timer],
    )
    trainer.fit(agent)
    return timer.count / timer.elapsed


def plain_block(agent: OffPolicyAgent, optimizers: list[torch.optim.Optimizer], updates: int) -> float:
    """Updates per second of the same update called from a plain PyTorch loop."""
    buffer = agent.collector.buffer
    start = time.perf_counter()
    for _ in range(updates):
        agent.collect()
        agent.updates += 1  # the agent's schedules (delayed actor steps) read this counter
        agent.update(buffer.sample(agent.batch_size), optimizers, torch.Tensor.backward)
    if agent.device.type == "cuda":
        torch.cuda.synchronize()
    return updates / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agent", choices=sorted(AGENTS), default="sac")
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--updates", type=int, default=300, help="updates per timed block")
    parser.add_argument("--warmup", type=int, default=20, help="untimed updates at the start of each block")
    parser.add_argument("--blocks", type=int, default=5, help="blocks of each kind, alternating")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = parser.parse_args(argv)
    prepare(args.threads)
    pl.seed_everything(0, verbose=False)
    agent = AGENTS[args.agent](
        args.env, total_steps=10**9, learning_starts=1_000, replay_ratio=1.0, buffer_size=100_000
    )
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
