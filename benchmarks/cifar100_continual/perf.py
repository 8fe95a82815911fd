"""Speed of the benchmark's training epoch against a plain PyTorch loop over the same tensors, model and optimizer.

Both run in one process on synthetic uint8 images of CIFAR-100's shape and class sizes (450 training images per
class after the hold-out): timing only, these numbers say nothing about accuracy. The benchmark side is the real
thing: ``Trainer(reload_dataloaders_every_n_epochs=1)`` with the ``CIFAR100Continual`` datamodule (on-device
tensors, seeded shuffle) and the ``MLPClassifier`` (loss over the seen classes, on-device epoch accuracy, one log
per epoch), validation off. ``--configs monitors`` adds the ratio measurements every run carries (``ReGraMa`` and
``ReDo`` measuring every ``--log-every`` steps, no reset). The plain side is the loop anyone would write: a seeded
permutation, index selection, forward, loss over the seen classes, backward, step, with the Trainer's own
optimizer and model.

Each benchmark epoch is paired with a plain epoch run right before or right after it (alternating), inside the
same fit, so that both see the same machine load; the first pair is a warm-up. Printed: mean epoch times,
``ratio = mean(benchmark) / mean(plain)`` and the median of the per-pair ratios (robust to load bursts).

Run:
    python -m benchmarks.cifar100_continual.perf                  # 10 and 100 classes, 1 thread (~4 min)
    python -m benchmarks.cifar100_continual.perf --classes 10 --epochs 20 --configs bare monitors
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
from torch.nn import functional as F  # noqa: N812

from benchmarks.cifar100_continual.config import PRESETS
from benchmarks.cifar100_continual.data import Cifar100Arrays, CIFAR100Continual
from benchmarks.cifar100_continual.methods import make_method
from benchmarks.cifar100_continual.models import MLPClassifier
from benchmarks.common import prepare


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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments; the model and batch size default to the paper preset's."""
    preset = PRESETS["paper"]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--classes", type=int, nargs="+", default=[10, 100], help="class counts to time an epoch at")
    p.add_argument("--configs", nargs="+", choices=["bare", "monitors"], default=["bare"],
                   help="bare: callbacks off; monitors: with the GraMa and ReDo measurements of every run")  # fmt: skip
    p.add_argument("--epochs", type=int, nargs="+", default=[12, 5],
                   help="paired epochs per class count (first pair: warm-up); one value for all")  # fmt: skip
    p.add_argument("--widths", type=int, nargs="+", default=list(preset.widths), help="MLP hidden widths")
    p.add_argument("--batch-size", type=int, default=preset.batch_size, help="training batch size")
    p.add_argument("--log-every", type=int, default=preset.log_every, help="measurement period of the monitors")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = p.parse_args(argv)
    if min(args.epochs) < 3 or len(args.epochs) not in (1, len(args.classes)):
        p.error("--epochs: one value >= 3 (the first pair is a warm-up), or one per --classes value")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    prepare(args.threads)
    print(
        f"Synthetic CIFAR-shaped data (timing only); MLP {'x'.join(map(str, args.widths))}, batch {args.batch_size}, "
        f"CPU, {args.threads} thread(s)."
    )
    header = f"{'classes':>7} {'config':<8} {'steps':>5} {'pairs':>5} {'benchmark s/epoch':>17} {'plain s/epoch':>13}"
    print(f"{header} {'ratio':>6} {'median pair ratio':>17}")
    results = []
    epochs = args.epochs * len(args.classes) if len(args.epochs) == 1 else args.epochs
    for classes, n in zip(args.classes, epochs, strict=True):
        for config in args.configs:
            r = measure(classes, config, n, args)
            results.append(r)
            print(
                f"{classes:>7} {config:<8} {r['steps_per_epoch']:>5} {r['pairs']:>5} {r['benchmark_epoch_s']:>17.3f} "
                f"{r['plain_epoch_s']:>13.3f} {r['ratio']:>6.3f} {r['median_pair_ratio']:>17.3f}",
                flush=True,
            )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "results": results}, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
