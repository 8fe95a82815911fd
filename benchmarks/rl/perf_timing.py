"""The timed blocks of :mod:`benchmarks.rl.perf` (a Lightning fit against a plain loop); the command line is there."""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
import torch

from .agent import OffPolicyAgent


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
