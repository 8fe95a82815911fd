"""Command line: ``run`` a grid of (method, seed) runs with a cost estimate first, ``plot`` their curves.

Run:
    python -m benchmarks.cifar100_continual run --preset paper --data-dir ~/data --seeds 0 1 2
    python -m benchmarks.cifar100_continual run --methods vanilla regrama --max-classes 10 --epochs-per-increment 3
    python -m benchmarks.cifar100_continual plot results/cifar100_paper
    python -m benchmarks.cifar100_continual run --help
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812
from tqdm.auto import tqdm

from benchmarks.cifar100_continual.config import PRESETS, RunConfig
from benchmarks.cifar100_continual.data import EVAL_SETS, Cifar100Arrays, CIFAR100Continual, load_cifar100
from benchmarks.cifar100_continual.methods import METHODS, TaskLRSchedule, make_method
from benchmarks.cifar100_continual.models import IncrementalClassifier
from benchmarks.cifar100_continual.plot import plot_results
from benchmarks.cifar100_continual.record import EpochRecorder
from benchmarks.common import prepare


@dataclass(frozen=True)
class CostEstimate:
    """Predicted cost of one run: batches in the whole schedule times the measured time of one batch."""

    train_steps: int
    eval_batches: int
    step_seconds: float
    eval_seconds: float
    device: str

    @property
    def seconds(self) -> float:
        """Predicted seconds of one run (Lightning's own overhead and the ratio measurements not included)."""
        return self.train_steps * self.step_seconds + self.eval_batches * self.eval_seconds

    def describe(self, runs: int) -> str:
        """A printable summary for a grid of ``runs`` runs."""
        return (
            f"Estimated cost of one run on {self.device}: {self.train_steps:,} training steps x "
            f"{1e3 * self.step_seconds:.2f} ms + {self.eval_batches:,} evaluation batches x "
            f"{1e3 * self.eval_seconds:.2f} ms = {_duration(self.seconds)}; {runs} run(s): "
            f"{_duration(runs * self.seconds)} (from a few timed batches; Lightning and the ratio measurements add "
            "about 5-10% to an MLP step on a CPU, see perf.py)."
        )


def count_batches(dm: CIFAR100Continual) -> tuple[int, int]:
    """Training steps and evaluation batches of a whole run (needs ``dm`` built)."""
    train = evaluation = 0
    for epoch in range(dm.schedule.total_epochs):
        classes = dm.schedule.classes_at(epoch)
        train += math.ceil(dm.size("train", classes) / dm.batch_size)
        evaluation += sum(math.ceil(dm.size(split, classes) / dm.eval_batch_size) for split in EVAL_SETS)
    return train, evaluation


def estimate_cost(
    model: IncrementalClassifier, dm: CIFAR100Continual, device: torch.device, steps: int = 20, budget_s: float = 10.0
) -> CostEstimate:
    """Time training steps (data pipeline included) and evaluation batches on a copy of ``model``.

    The random state of the run is left untouched.

    Args:
        model: The run's model (copied; the original is not trained).
        dm: The run's datamodule, built on ``device``.
        device: The training device.
        steps: Batches to time of each kind, after warm-up ones.
        budget_s: Stop timing a kind after this many seconds (at least 2 batches are timed): a ResNet on a CPU.

    Returns:
        The estimate for one run.
    """
    net = copy.deepcopy(model).to(device)
    optimizer = net.configure_optimizers()
    last = dm.schedule.total_epochs - 1  # the largest class set: full batches
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(batches: Iterator[tuple[Tensor, Tensor]], train: bool, warmup: int) -> float:
        timed_batches, start = 0, 0.0
        for i in range(warmup + steps):
            if i == warmup:
                sync()
                start = time.perf_counter()
            elif i > warmup + 1 and time.perf_counter() - start > budget_s:
                break
            x, y = next(batches)
            if train:
                loss = F.cross_entropy(net(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            else:
                with torch.no_grad():
                    net(x).argmax(1)
            timed_batches += i >= warmup
        sync()
        return (time.perf_counter() - start) / timed_batches

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        net.train()
        step = timed(_cycle(lambda: dm.train_batches(last)), train=True, warmup=3)
        net.eval()
        x, y = dm.seen("test", dm.schedule.total_classes)
        batches = list(zip(x.split(dm.eval_batch_size), y.split(dm.eval_batch_size), strict=True))
        evaluation = timed(_cycle(lambda: batches), train=False, warmup=1)
    train, eval_batches = count_batches(dm)
    return CostEstimate(train, eval_batches, step, evaluation, str(device))


def _cycle(make: Callable[[], Iterable[tuple[Tensor, Tensor]]]) -> Iterator[tuple[Tensor, Tensor]]:
    while True:
        yield from make()


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def run_one(
    cfg: RunConfig,
    method: str,
    seed: int,
    out: Path,
    source: Cifar100Arrays,
    accelerator: str = "auto",
    precision: str = "32-true",
    progress: bool = True,
    description: str = "",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one method with one seed through the whole schedule; write ``metrics.csv`` and ``summary.json``.

    Args:
        cfg: The run settings.
        method: One of :data:`~benchmarks.cifar100_continual.methods.METHODS`.
        seed: Seed of the class order, hold-out, initialisation, batch order, augmentation and re-draws.
        out: Folder for this run's files.
        source: The loaded CIFAR-100 arrays.
        accelerator: Lightning accelerator (``"auto"``, ``"cpu"``, ``"gpu"``, ...).
        precision: Lightning precision (e.g. ``"bf16-mixed"`` on a GPU).
        progress: Show a progress bar over epochs.
        description: Prefix of the progress bar.
        extra: More fields for summary.json.

    Returns:
        The summary (also written to ``out/summary.json``).
    """
    pl.seed_everything(seed, verbose=False)
    dm = cfg.datamodule("", seed, source=source)
    model = cfg.model_instance()
    chosen = make_method(method, dm.schedule, cfg.reset_every, cfg.grama_tau, cfg.redo_tau, cfg.log_every, seed)
    bar = tqdm(total=dm.schedule.total_epochs, desc=description or f"{method} seed{seed}", unit="epoch",
               disable=not progress, dynamic_ncols=True)  # fmt: skip

    def show(row: dict[str, float]) -> None:
        bar.update(1)
        bar.set_postfix(classes=row["classes"], test=f"{row['test_acc']:.3f}", grama=f"{row['grama_ratio']:.3f}")

    recorder = EpochRecorder(dm.schedule, out / "metrics.csv", on_row=show)
    callbacks: list[pl.Callback] = list(chosen.callbacks)
    if cfg.lr_milestones:
        callbacks.append(TaskLRSchedule(dm.schedule, cfg.lr_milestones, cfg.lr_gamma))
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_epochs=dm.schedule.total_epochs,
        reload_dataloaders_every_n_epochs=1,  # each epoch gets the class set of its own
        num_sanity_val_steps=0,
        callbacks=[*callbacks, recorder],  # the recorder last: it closes rows after the others' epoch hooks
        logger=recorder.logger,
        log_every_n_steps=cfg.log_every,  # as the callbacks measure: each measurement is logged in its own step
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    bar.close()
    rows = recorder.rows
    schedule = dm.schedule
    task_ends = [e - 1 for e in schedule.increment_epochs] + [schedule.total_epochs - 1]
    summary = {
        "method": method,
        "seed": seed,
        "config": dataclasses.asdict(cfg),
        "device": str(trainer.strategy.root_device),
        "precision": precision,
        "epochs": len(rows),
        "seconds": time.perf_counter() - start,
        "class_order": dm.order,
        "final_test_acc": rows[-1]["test_acc"],
        "final_train_acc": rows[-1]["train_acc"],
        "final_grama_ratio": rows[-1]["grama_ratio"],
        "final_dormant_ratio": rows[-1]["dormant_ratio"],
        "mean_test_acc": _mean([r["test_acc"] for r in rows]),
        "task_end_test_acc": [rows[e]["test_acc"] for e in task_ends if e < len(rows)],
        "reset_neurons": sum(r["reset_neurons"] for r in rows),
        "reset_epochs": [r["epoch"] for r in rows if r["reset_neurons"] > 0],
        **(extra or {}),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, allow_nan=True) + "\n")
    return summary


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def build_parser() -> argparse.ArgumentParser:
    """The ``run`` and ``plot`` subcommands."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.cifar100_continual",
        description="Class-incremental CIFAR-100 plasticity benchmark: vanilla vs ReDo vs ReGraMa (vs a fresh net).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train runs; writes <out>/<method>/seed<k>/{metrics.csv,summary.json}")
    run.add_argument("--preset", choices=sorted(PRESETS), default="paper", help="paper: MLP, +1 class / 15 epochs; "
                     "dohare: ResNet-18, +5 classes / 200 epochs")  # fmt: skip
    run.add_argument("--methods", "--method", nargs="+", choices=METHODS, default=list(METHODS))
    run.add_argument("--seeds", "--seed", nargs="+", type=int, default=[0])
    run.add_argument("--data-dir", type=Path, default=Path("data"), help="folder holding cifar-100-python/")
    run.add_argument("--download", action="store_true", help="download CIFAR-100 with torchvision (needs internet)")
    run.add_argument("--no-verify-integrity", dest="verify_integrity", action="store_false",
                     help="skip torchvision's md5 check (only for files you made yourself)")  # fmt: skip
    run.add_argument("--out", type=Path, default=None, help="results folder (default results/cifar100_<preset>)")
    run.add_argument("--overwrite", action="store_true", help="re-run runs that already have a summary.json")
    run.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu, ...")
    run.add_argument("--precision", default="32-true", help="Lightning precision, e.g. bf16-mixed on a GPU")
    run.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    run.add_argument("--estimate-only", action="store_true", help="print the cost estimate and stop")
    run.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    group = run.add_argument_group("overrides of the preset")
    for flag, kind, text in (
        ("--max-classes", int, "classes in the run (quick runs: e.g. 10)"),
        ("--initial-classes", int, "classes at epoch 0"),
        ("--classes-per-increment", int, "classes added at each addition"),
        ("--epochs-per-increment", int, "epochs between additions"),
        ("--val-per-class", int, "training images per class held out for validation"),
        ("--batch-size", int, "training batch size"),
        ("--lr", float, "learning rate"),
        ("--weight-decay", float, "L2 weight decay"),
        ("--width", int, "ResNet first-stage channels"),
        ("--rotation-degrees", float, "rotation augmentation range [0, d]"),
        ("--grama-tau", float, "GraMa threshold"),
        ("--redo-tau", float, "ReDo threshold"),
        ("--reset-every", int, "reset every N steps instead of at each class addition"),
        ("--log-every", int, "measure the ratios every N steps"),
    ):
        group.add_argument(flag, type=kind, default=None, help=text)
    group.add_argument("--optimizer", choices=["sgd", "adam"], default=None, help="optimizer")
    group.add_argument("--widths", type=int, nargs="+", default=None, help="MLP hidden widths")
    group.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None, help="crop/flip/rotation")

    plot = sub.add_parser("plot", help="draw Fig. 5 right (accuracy and GraMa ratio per epoch) from a results folder")
    plot.add_argument("results", type=Path, help="folder written by `run`")
    plot.add_argument("--out", type=Path, default=None, help="PNG path (default <results>/fig5_right.png)")
    plot.add_argument("--metrics", nargs="+", default=["test_acc", "grama_ratio"], help="metrics.csv columns")
    plot.add_argument("--spread", choices=["std", "sem", "minmax"], default="std", help="shaded band over seeds")
    plot.add_argument("--smooth", type=int, default=1, help="moving average over N epochs")
    return p


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The preset with the command line's overrides, checked by building a datamodule and a model.

    Raises:
        ValueError: On an invalid combination, naming the parameter.
    """
    cfg = PRESETS[args.preset].override(
        max_classes=args.max_classes,
        initial_classes=args.initial_classes,
        classes_per_increment=args.classes_per_increment,
        epochs_per_increment=args.epochs_per_increment,
        val_per_class=args.val_per_class,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        weight_decay=args.weight_decay,
        width=args.width,
        rotation_degrees=args.rotation_degrees,
        grama_tau=args.grama_tau,
        redo_tau=args.redo_tau,
        reset_every=args.reset_every,
        log_every=args.log_every,
        widths=tuple(args.widths) if args.widths else None,
        augment=args.augment,
    )
    cfg.datamodule("", 0)
    cfg.model_instance()
    make_method("regrama", cfg.datamodule("", 0).schedule, cfg.reset_every, cfg.grama_tau, cfg.redo_tau, cfg.log_every)
    return cfg


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "plot":
        try:
            path = plot_results(args.results, args.out, args.metrics, args.spread, args.smooth)
        except (FileNotFoundError, ValueError) as error:
            parser.error(str(error))
        print(f"wrote {path}")
        return
    try:
        cfg = config_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    prepare(args.threads or torch.get_num_threads())
    try:
        source = load_cifar100(args.data_dir, args.download, args.verify_integrity)
    except (FileNotFoundError, RuntimeError) as error:
        raise SystemExit(f"error: {error}") from None
    out = args.out or Path("results") / f"cifar100_{args.preset}"
    grid = [(m, s) for m in args.methods for s in args.seeds]
    device = pl.Trainer(accelerator=args.accelerator, devices=1, logger=False).strategy.root_device
    dm = cfg.datamodule("", args.seeds[0], source=source)
    dm.build(device)
    schedule = dm.schedule
    print(
        f"Class-incremental CIFAR-100 ({args.preset} preset): {cfg.model} "
        f"{'x'.join(map(str, cfg.widths)) if cfg.model == 'mlp' else f'width {cfg.width}'}, "
        f"{schedule.initial_classes} classes + {schedule.classes_per_increment} every "
        f"{schedule.epochs_per_increment} epochs up to {schedule.total_classes} ({schedule.total_epochs} epochs), "
        f"{cfg.optimizer} lr {cfg.lr}, batch {cfg.batch_size}; resets "
        f"{'at each class addition' if cfg.reset_every is None else f'every {cfg.reset_every} steps'}; "
        f"methods {args.methods}, seeds {args.seeds} -> {out}/"
    )
    with torch.random.fork_rng():
        estimate = estimate_cost(cfg.model_instance(), dm, device)
    del dm
    print(estimate.describe(len(grid)), flush=True)
    if args.estimate_only:
        return
    summaries = []
    for i, (method, seed) in enumerate(grid):
        folder = out / method / f"seed{seed}"
        if (folder / "summary.json").exists() and not args.overwrite:
            print(f"[{i + 1}/{len(grid)}] {method} seed {seed}: done before, skipped (--overwrite re-runs it)")
            summaries.append(json.loads((folder / "summary.json").read_text()))
            continue
        summaries.append(
            run_one(
                cfg,
                method,
                seed,
                folder,
                source,
                accelerator=args.accelerator,
                precision=args.precision,
                progress=args.progress,
                description=f"[{i + 1}/{len(grid)}] {method} seed{seed}",
                extra={"preset": args.preset, "estimated_seconds": estimate.seconds},
            )
        )
    print(f"\n{'method':<8} {'seed':>4} {'final test acc':>14} {'mean test acc':>13} {'final GraMa':>11} {'time':>8}")
    for s in summaries:
        print(
            f"{s['method']:<8} {s['seed']:>4} {s['final_test_acc']:>14.3f} {s['mean_test_acc']:>13.3f} "
            f"{s['final_grama_ratio']:>11.3f} {_duration(s['seconds']):>8}"
        )
    print(f"\nplot: python -m benchmarks.cifar100_continual plot {out}")
