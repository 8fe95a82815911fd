"""Command line: ``run`` a grid of (method, seed) runs with a cost estimate first, ``plot`` their curves.

Run:
    python -m benchmarks.cifar100_continual run --preset paper --data-dir ~/data --seeds 0 1 2
    python -m benchmarks.cifar100_continual run --methods vanilla regrama --max-classes 10 --epochs-per-increment 3
    python -m benchmarks.cifar100_continual run --preset paper --data-dir ~/data --seeds 0 1 2 --resume
    python -m benchmarks.cifar100_continual plot runs/cifar100_paper
    python -m benchmarks.cifar100_continual run --help

Each run writes ``<out>/<method>/seed<k>/``. A run folder is keyed on the run's full settings: a finished run
with the same settings is skipped, one with other settings is never overwritten without --overwrite, and an
interrupted one (Ctrl-C) continues from its last checkpoint with --resume, exactly as it would have gone on.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..harness.cli import (
    HelpFormatter,
    add_config_flag,
    command,
    non_negative_float,
    non_negative_int,
    plain_text,
    positive_float,
    positive_int,
    usage_errors,
    with_config,
)
from ..harness.loggers import LOGGERS, check_loggers
from ..harness.runs import check_out
from .config import METHODS, PRESETS, RunConfig

if TYPE_CHECKING:
    from .data import CIFAR100Continual

PROG = command(__package__)


def build_parser() -> argparse.ArgumentParser:
    """The ``run`` and ``plot`` subcommands (built without importing torch: ``--help`` is instant)."""
    return _parsers()[0]


def _parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    p = argparse.ArgumentParser(prog=PROG, description=plain_text(__doc__), formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="{run,plot}")
    run = sub.add_parser("run", help="train runs; writes <out>/<method>/seed<k>/{metrics.csv,summary.json,...}",
                         description=plain_text(__doc__), formatter_class=HelpFormatter)  # fmt: skip
    add = run.add_argument
    add("--preset", choices=sorted(PRESETS), default="paper",
        help="paper: MLP, +1 class every 15 epochs; dohare: ResNet-18, +5 classes every 200 epochs")  # fmt: skip
    add("--methods", "--method", nargs="+", choices=METHODS, default=list(METHODS), help="methods to run")
    add("--seeds", "--seed", nargs="+", type=non_negative_int, default=[0], help="seeds to run")
    add("--data-dir", type=Path, default=Path("data"), help="folder holding cifar-100-python/")
    add("--download", action="store_true", help="download CIFAR-100 with torchvision (needs internet)")
    add("--verify-integrity", action=argparse.BooleanOptionalAction, default=True,
        help="check the files' md5 sums (--no-verify-integrity: only for files you made yourself)")  # fmt: skip
    add("--out", type=Path, default=None, help="results folder (default: runs/cifar100_<preset>)")
    control = run.add_mutually_exclusive_group()
    control.add_argument("--resume", action="store_true",
                         help="continue unfinished runs of the same settings from their last checkpoint")  # fmt: skip
    control.add_argument("--overwrite", action="store_true",
                         help="delete and re-run runs whose folder holds a run (any status or settings)")  # fmt: skip
    add("--checkpoint-every", type=positive_int, default=1, help="save last.ckpt every N epochs")
    add("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu, ...")
    add("--precision", default="32-true", help="Lightning precision, e.g. bf16-mixed on a GPU")
    add("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)")
    add("--estimate-only", action="store_true", help="print the cost estimate and stop")
    add("--progress", action=argparse.BooleanOptionalAction, default=True,
        help="show a progress bar (--no-progress: a line per epoch)")  # fmt: skip
    add("--logger", nargs="+", choices=sorted(LOGGERS), default=[],
        help="also log to these (metrics.csv and TensorBoard are always written); needs its package")  # fmt: skip
    add_config_flag(run)
    group = run.add_argument_group("overrides of the preset (default: the preset's value, shown per preset)")
    for flag, kind, text in (
        ("--max-classes", positive_int, "classes in the run (quick runs: e.g. 10)"),
        ("--initial-classes", positive_int, "classes at epoch 0"),
        ("--classes-per-increment", positive_int, "classes added at each addition"),
        ("--epochs-per-increment", positive_int, "epochs between additions"),
        ("--val-per-class", non_negative_int, "training images per class held out for validation"),
        ("--batch-size", positive_int, "training batch size"),
        ("--lr", positive_float, "learning rate"),
        ("--weight-decay", non_negative_float, "L2 weight decay"),
        ("--width", positive_int, "ResNet first-stage channels"),
        ("--rotation-degrees", non_negative_float, "rotation augmentation range [0, d]"),
        ("--grama-tau", non_negative_float, "GraMa threshold"),
        ("--redo-tau", non_negative_float, "ReDo threshold"),
        ("--reset-every", positive_int, "reset every N steps instead of at each class addition"),
        ("--log-every", positive_int, "measure the ratios every N steps"),
    ):
        group.add_argument(flag, type=kind, default=None, help=text + preset_values(flag))
    group.add_argument(
        "--optimizer", choices=["sgd", "adam"], default=None, help="optimizer" + preset_values("--optimizer")
    )
    group.add_argument("--widths", type=positive_int, nargs="+", default=None,
                       help="MLP hidden widths" + preset_values("--widths"))  # fmt: skip
    group.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                       help="crop/flip/rotation" + preset_values("--augment"))  # fmt: skip

    plot = sub.add_parser("plot", help="draw Fig. 5 right (accuracy and GraMa ratio per epoch) from a results folder",
                          formatter_class=HelpFormatter)  # fmt: skip
    plot.add_argument("results", type=Path, help="folder written by `run`")
    plot.add_argument("--out", type=Path, default=None, help="PNG path (default: <results>/fig5_right.png)")
    plot.add_argument("--metrics", nargs="+", default=["test_acc", "grama_ratio"], help="metrics.csv columns")
    plot.add_argument("--spread", choices=["std", "sem", "minmax"], default="std", help="shaded band over seeds")
    plot.add_argument("--smooth", type=positive_int, default=1, help="moving average over N epochs")
    plot.add_argument("--include-incomplete", action="store_true",
                      help="also draw runs that have not finished (labelled as such)")  # fmt: skip
    return p, {"run": run, "plot": plot}


def measured_every_epoch(cfg: RunConfig, dm: CIFAR100Continual) -> RunConfig:
    """``cfg`` with a measuring period no longer than the shortest epoch, so that every epoch has its ratios.

    The first epochs (fewest classes) are the shortest; a ``log_every`` above their step count would leave their
    ``grama_ratio`` and ``dormant_ratio`` empty. The period is then lowered to that count, and the run says so.
    """
    first = math.ceil(dm.size("train", dm.schedule.classes_at(0)) / dm.batch_size)
    if cfg.log_every <= first:
        return cfg
    print(f"measuring the ratios every {first} steps, not every {cfg.log_every} (--log-every): the first epochs "
          f"have only {first} training steps, and every epoch gets a measured value")  # fmt: skip
    return cfg.override(log_every=first)


def preset_values(flag: str) -> str:
    """`` (paper: 15, dohare: 200)``: what each preset sets for ``flag`` (the override's default).

    Example:
        >>> preset_values("--epochs-per-increment")
        ' (dohare: 200, paper: 15)'
    """
    name = flag.removeprefix("--").replace("-", "_")
    values = {p: getattr(cfg, name) for p, cfg in sorted(PRESETS.items())}
    shown = {
        p: "none" if v is None else " ".join(map(str, v)) if isinstance(v, tuple) else v for p, v in values.items()
    }
    return " (" + ", ".join(f"{p}: {v}" for p, v in shown.items()) + ")"


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The preset with the command line's overrides, checked by building a datamodule and a model.

    Raises:
        ValueError: On an invalid combination, naming the parameter.
    """
    from .methods import make_method

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
    dm = cfg.datamodule("", 0)
    cfg.model_instance()
    make_method("regrama", dm.schedule, cfg.reset_every, cfg.grama_tau, cfg.redo_tau, cfg.log_every)
    return cfg


def main(argv: list[str] | None = None) -> None:
    """Parse, check the settings and every run folder of the grid, estimate the cost, then run or plot."""
    parser, subcommands = _parsers()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        argv = ["run", *with_config(subcommands["run"], argv[1:])]
    args = parser.parse_args(argv)
    if args.command == "plot":
        from .plot import plot_results

        with usage_errors(subcommands["plot"], FileNotFoundError, ValueError):
            path = plot_results(args.results, args.out, args.metrics, args.spread, args.smooth,
                                include_incomplete=args.include_incomplete)  # fmt: skip
        print(f"wrote {path}")
        return
    run_parser = subcommands["run"]  # its errors print its own usage line
    out = args.out or Path("runs") / f"cifar100_{args.preset}"
    # Every check before training, as one-line usage errors naming flags; the datamodule says total_classes.
    with usage_errors(
        run_parser, ValueError, FileNotFoundError, RuntimeError, aliases={"total_classes": "max_classes"}
    ):
        check_out(out)
        check_loggers(args.logger)
        cfg = config_from_args(args)
        import lightning.pytorch as pl
        import torch

        from ..harness import runs
        from ..harness.devices import check_accelerator
        from ..harness.process import prepare
        from . import runner
        from .data import load_cifar100

        check_accelerator(args.accelerator)
        control = runs.RunControl(args.resume, args.overwrite, args.checkpoint_every)
        grid = [(m, s) for m in args.methods for s in args.seeds]
        folders = {(m, s): out / m / f"seed{s}" for m, s in grid}
        for k in grid:  # a folder that holds another run is refused before the data is loaded
            runs.decide(folders[k], runner.run_settings(cfg, *k, args.precision), control)
        prepare(args.threads or torch.get_num_threads())
        source = load_cifar100(args.data_dir, args.download, args.verify_integrity)
        device = pl.Trainer(accelerator=args.accelerator, devices=1, logger=False).strategy.root_device
        dm = cfg.datamodule("", args.seeds[0], source=source)
        dm.build(device)  # checks that the data fits the settings (classes, images per class)
        cfg = measured_every_epoch(cfg, dm)
        plans = {k: runs.decide(folders[k], runner.run_settings(cfg, *k, args.precision), control) for k in grid}
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
        estimate = runner.estimate_cost(cfg.model_instance(), dm, device)
    del dm
    print(estimate.describe(len(grid)), flush=True)
    if args.estimate_only:
        return
    summaries = []
    for i, (method, seed) in enumerate(grid):
        head = f"[{i + 1}/{len(grid)}] {method} seed {seed}"
        if plans[(method, seed)].action == "skip":
            print(f"{head}: done before with these settings, skipped (--overwrite re-runs it)")
            summaries.append(runs.read_summary(folders[(method, seed)]))
            continue
        if plans[(method, seed)].action == "resume":
            print(f"{head}: resuming from {folders[(method, seed)] / runs.CHECKPOINT_FILE}")
        summaries.append(
            runner.run_one(
                cfg,
                method,
                seed,
                folders[(method, seed)],
                source,
                accelerator=args.accelerator,
                precision=args.precision,
                progress=args.progress,
                description=f"[{i + 1}/{len(grid)}] {cfg.model} {method} seed{seed}",
                extra={"preset": args.preset, "estimated_seconds": estimate.seconds},
                control=control,
                loggers=tuple(args.logger),
            )
        )
    print(f"\n{'method':<8} {'seed':>4} {'final test acc':>14} {'mean test acc':>13} {'final GraMa':>11} {'time':>8}")
    for s in summaries:
        print(
            f"{s['method']:<8} {s['seed']:>4} {s['final_test_acc']:>14.3f} {s['mean_test_acc']:>13.3f} "
            f"{s['final_grama_ratio']:>11.3f} {runner.duration(s['seconds']):>8}"
        )
    from ..harness.seed_table import Metric, report_seeds

    metrics = [Metric("final_test_acc", "final test acc"), Metric("mean_test_acc", "mean test acc"),
               Metric("final_grama_ratio", "final GraMa ratio", 4),
               Metric("final_dormant_ratio", "final dormant ratio", 4)]  # fmt: skip
    table = report_seeds(summaries, metrics, out / "seed_table.csv", f"the runs of {schedule.total_epochs} epochs")
    if len(args.seeds) > 1:
        print(f"\n{table}")
    print(f"\nplot: {PROG} plot {out}")
