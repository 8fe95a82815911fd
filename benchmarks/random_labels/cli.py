"""Random-label memorisation: a plasticity probe (Lyle et al. 2023, "Understanding plasticity in neural networks").

A ReLU MLP must memorise random labels of a fixed set of inputs. At the start of every phase the labels are
re-drawn, so each phase is a fresh memorisation task on the same inputs; a network that keeps its plasticity
fits every phase about as well as the first, one that loses it fits later phases worse. The same network (same
seed, same data, same label draws, same batch order) is trained three times, each time as one continuous Lightning
fit over all phases with one Adam optimizer throughout:

* ``vanilla``: no reset; ``ReGraMa(reset_every_n_steps=None)`` and ``ReDo(reset_every_n_steps=None)`` only measure;
* ``regrama``: ``ReGraMa`` resets GraMa-inactive neurons (by default every 80 optimizer steps = 5 epochs, four
  times per phase; ``--reset-every 0`` resets once at the end of each phase);
* ``redo``: ``ReDo`` resets dormant neurons on the same schedule;
* the toolkit's methods (``cbp``, ``reborn``, ``snp``, ``l2init``, ``prune-grama``, ``prune-redo`` and ReGraMa
  with L2-init and/or weight decay): see ``benchmarks/harness/methods.py``; ReBorn and pruning act on the
  same schedule as the resets.

Every run carries both a GraMa and a ReDo monitor so that the ratios are comparable across methods, and
``PlasticityMetrics`` (measured on each epoch's last batch; the table shows the effective rank of the hidden
features).

The data is synthetic and built in memory (no download): ``--samples`` standard Gaussian inputs of dimension
``--input-dim`` and labels drawn uniformly from ``--classes`` classes.

Run:
    python -m benchmarks.random_labels            # the demo settings (about 1 minute on 2 CPU cores)
    python -m benchmarks.random_labels --out benchmarks/results/random_labels.csv
    python -m benchmarks.random_labels --help
"""

from __future__ import annotations

import argparse
import csv
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

from ..harness.cli import (
    add_config_flag,
    command,
    make_parser,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    with_config,
)
from ..harness.methods import method_names

METHODS = method_names("random_labels")


NETWORKS = ("relu", "leaky_relu", "layer_norm", "bro")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments; the defaults are the ``make demo`` settings."""
    p = make_parser(command(__package__), __doc__)
    p.add_argument("--phases", type=positive_int, default=20, help="number of label re-draws (tasks)")
    p.add_argument(
        "--epochs-per-phase", type=positive_int, default=20, help="epochs of training on each phase's labels"
    )
    p.add_argument("--samples", type=positive_int, default=1024, help="number of synthetic Gaussian inputs")
    p.add_argument("--input-dim", type=positive_int, default=32, help="input dimension")
    p.add_argument("--classes", type=positive_int, default=10, help="number of label classes")
    p.add_argument("--width", type=positive_int, default=128, help="hidden units per layer")
    p.add_argument("--depth", type=positive_int, default=3, help="hidden layers (residual blocks for --network bro)")
    p.add_argument("--network", choices=NETWORKS, default="relu",
                   help="MLP with relu, leaky_relu or layer_norm; bro: residual LayerNorm blocks")  # fmt: skip
    p.add_argument("--batch-size", type=positive_int, default=64, help="training batch size")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate")
    p.add_argument("--grama-tau", type=non_negative_float, default=0.01, help="GraMa threshold (paper: 0.01)")
    p.add_argument(
        "--redo-tau", type=non_negative_float, default=0.02, help="ReDo threshold (GraMa paper's ReDo: 0.02)"
    )
    p.add_argument(
        "--reset-every",
        type=non_negative_int,
        default=80,
        help="reset period in optimizer steps (80 = 5 epochs at the defaults); 0 = once, at each phase's end",
    )
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="methods to run")
    p.add_argument("--seeds", "--seed", nargs="+", type=non_negative_int, default=[0],
                   help="seeds of data, labels, initialisation, batch order (a run per method and seed)")  # fmt: skip
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (1 is fastest for this tiny MLP)")
    p.add_argument("--out", type=Path, default=Path("runs/random_labels/random_labels.csv"),
                   help="CSV of the per-phase rows; the figure goes next to it (.png)")  # fmt: skip
    add_config_flag(p)
    return p.parse_args(with_config(p, argv))


def main(argv: list[str] | None = None) -> None:
    """Run the methods and print (and optionally write) the per-phase table."""
    args = parse_args(argv)
    from ..harness.process import prepare
    from .fit import PhaseRow, format_table, run_method, summary
    from .plot import plot_phases

    prepare(args.threads)
    print(
        f"Random-label memorisation on synthetic data: {args.samples} Gaussian inputs (dim {args.input_dim}), "
        f"{args.classes} classes re-drawn every {args.epochs_per_phase} epochs, {args.phases} phases; "
        f"{args.network} network {args.depth}x{args.width}, Adam lr {args.lr}, batch {args.batch_size}, "
        f"seeds {args.seeds}."
    )
    print(
        f"Ratios: GraMa tau={args.grama_tau} ('weight' score), ReDo tau={args.redo_tau}, measured on each "
        "phase's last step (hidden layers); accuracy: full training set, this phase's labels, before any reset "
        f"of that step; 'reset' = neurons reset during the phase (every {args.reset_every or 'phase-end'} steps)."
    )
    rows: list[PhaseRow] = []
    for method in args.methods:
        for seed in args.seeds:
            start = time.perf_counter()
            rows += [
                replace(r, seed=seed) for r in run_method(method, argparse.Namespace(**{**vars(args), "seed": seed}))
            ]
            print(f"[{method} seed {seed}] done in {time.perf_counter() - start:.1f}s", flush=True)
    print()
    print(format_table(rows))
    print()
    first = max(1, args.phases // 5)
    seeds = f"{len(args.seeds)} seed{'s' if len(args.seeds) > 1 else ''}"
    print(
        f"Per method ({seeds}): accuracy of the last phase, mean over phases, over the first {first} and over the rest:"
    )
    print(summary(rows, args.methods, first))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[field.name for field in fields(PhaseRow)])
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    png = plot_phases(rows, args.out.with_suffix(".png"))
    table = seed_table(rows, args, args.out.with_name(f"{args.out.stem}_seeds.csv"))
    if len(args.seeds) > 1:
        print(f"\n{table}")
    print(f"wrote {args.out} and {png}")


def seed_table(rows: list, args: argparse.Namespace, path: Path) -> str:
    """Write the table over seeds (accuracy of the last phase and over the later phases, ratios) and return it."""
    from ..harness.seed_table import Metric, report_seeds

    first = max(1, args.phases // 5)
    runs = []
    for method in args.methods:
        for seed in args.seeds:
            mine = [r for r in rows if r.method == method and r.seed == seed]
            later = [r for r in mine if r.phase >= first] or mine[-1:]
            runs.append({"method": method, "last_acc": mine[-1].accuracy,
                         "later_acc": sum(r.accuracy for r in later) / len(later),
                         "grama": sum(r.grama for r in mine) / len(mine), "rank": mine[-1].rank})  # fmt: skip
    metrics = [Metric("last_acc", "acc last phase"), Metric("later_acc", f"acc phases {first}+"),
               Metric("grama", "GraMa ratio"), Metric("rank", "eff. rank last phase", 2)]  # fmt: skip
    return report_seeds(runs, metrics, path, f"{args.phases} phases (accuracy on each phase's labels)")


if __name__ == "__main__":
    main()
