"""The timed pieces of ``perf``: synthetic CIFAR-shaped data, paired benchmark and plain epochs (see ``perf``)."""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import lightning.pytorch as pl
import torch
from torch.nn import functional as F  # noqa: N812

from .config import PRESETS
from .data import Cifar100Arrays, CIFAR100Continual
from .methods import make_method
from .models import MLPClassifier


def synthetic_arrays(
    classes: int, train_per_class: int = 500, test_per_class: int = 100, seed: int = 0
) -> Cifar100Arrays:
    """Random images with CIFAR-100's shapes and class sizes (for timing only)."""
    g = torch.Generator().manual_seed(seed)

    def split(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(classes).repeat_interleave(per_class)
        return torch.randint(0, 256, (len(labels), 3, 32, 32), generator=g, dtype=torch.uint8), labels

    (train_x, train_y), (test_x, test_y) = split(train_per_class), split(test_per_class)
    return Cifar100Arrays(train_x, train_y, test_x, test_y, [f"class{i}" for i in range(classes)])


class Interleaved(pl.Callback):
    """Runs one plain epoch next to each benchmark epoch, on the same tensors, model and optimizer; times both.

    Plain epochs alternate between just before and just after the benchmark epoch they pair with, and are
    subtracted from the benchmark's time: a benchmark epoch is everything Lightning does from one epoch start to
    the next (hooks, epoch-end logging, dataloader reload included).

    Args:
        dm: The benchmark's datamodule, already built (its training tensors are the plain loop's).
    """

    def __init__(self, dm: CIFAR100Continual) -> None:
        self.dm = dm
        self.benchmark: list[float] = []
        self.plain: list[float] = []
        self._start: float | None = None
        self._inside = 0.0

    def _close(self) -> None:
        if self._start is not None:
            self.benchmark.append(time.perf_counter() - self._start - self._inside)
        self._inside = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Close the previous benchmark epoch; odd epochs: the plain epoch first."""
        self._close()
        if trainer.current_epoch % 2:
            self.plain.append(plain_epoch(pl_module, trainer.optimizers[0], self.dm, trainer.current_epoch))
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Even epochs: the plain epoch after the benchmark's."""
        if trainer.current_epoch % 2 == 0:
            self._inside = plain_epoch(pl_module, trainer.optimizers[0], self.dm, trainer.current_epoch)
            self.plain.append(self._inside)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Close the last benchmark epoch."""
        self._close()


def plain_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, dm: CIFAR100Continual, seed: int) -> float:
    """Seconds of one epoch of a hand-written loop over the datamodule's training tensors (no augmentation)."""
    classes = dm.schedule.total_classes
    x_all, y_all = dm.seen("train", classes)
    start = time.perf_counter()
    order = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(seed))
    for index in order.split(dm.batch_size):
        x, y = x_all.index_select(0, index), y_all.index_select(0, index)
        loss = F.cross_entropy(model(x)[:, :classes], y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def measure(classes: int, config: str, epochs: int, args: argparse.Namespace) -> dict[str, Any]:
    """Pair benchmark and plain epochs at ``classes`` classes; mean epoch times, ratio of means, median pair ratio."""
    preset = PRESETS["paper"]
    dm = CIFAR100Continual(
        initial_classes=classes, max_classes=classes, batch_size=args.batch_size, source=synthetic_arrays(classes)
    )
    dm.build("cpu")
    torch.manual_seed(0)
    model = MLPClassifier(widths=args.widths, num_classes=100, optimizer=preset.optimizer, lr=preset.lr)
    pairs = Interleaved(dm)
    callbacks: list[pl.Callback] = []
    if config == "monitors":
        callbacks = make_method("vanilla", dm.schedule, log_every_n_steps=args.log_every).callbacks
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        reload_dataloaders_every_n_epochs=1,
        limit_val_batches=0,  # training epochs only
        num_sanity_val_steps=0,
        callbacks=[*callbacks, pairs],
        logger=False,
        log_every_n_steps=args.log_every,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    bench, plain = pairs.benchmark[1:], pairs.plain[1:]  # the first pair warms up
    return {
        "classes": classes,
        "config": config,
        "train_images": dm.size("train", classes),
        "steps_per_epoch": -(-dm.size("train", classes) // args.batch_size),
        "benchmark_epoch_s": statistics.mean(bench),
        "plain_epoch_s": statistics.mean(plain),
        "ratio": statistics.mean(bench) / statistics.mean(plain),
        "median_pair_ratio": statistics.median(b / p for b, p in zip(bench, plain, strict=True)),
        "pairs": len(bench),
    }
