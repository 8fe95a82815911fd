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
from pathlib import Path

from ..harness.cli import command, make_parser, positive_int
from .config import PRESETS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments; the model and batch size default to the paper preset's."""
    preset = PRESETS["paper"]
    p = make_parser(command(__package__, "perf"), __doc__)
    p.add_argument(
        "--classes", type=positive_int, nargs="+", default=[10, 100], help="class counts to time an epoch at"
    )
    p.add_argument("--configs", nargs="+", choices=["bare", "monitors"], default=["bare"],
                   help="bare: callbacks off; monitors: with the GraMa and ReDo measurements of every run")  # fmt: skip
    p.add_argument("--epochs", type=positive_int, nargs="+", default=[12, 5],
                   help="paired epochs per class count (first pair: warm-up); one value for all")  # fmt: skip
    p.add_argument("--widths", type=positive_int, nargs="+", default=list(preset.widths), help="MLP hidden widths")
    p.add_argument("--batch-size", type=positive_int, default=preset.batch_size, help="training batch size")
    p.add_argument(
        "--log-every", type=positive_int, default=preset.log_every, help="measurement period of the monitors"
    )
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = p.parse_args(argv)
    if min(args.epochs) < 3 or len(args.epochs) not in (1, len(args.classes)):
        p.error("--epochs: one value >= 3 (the first pair is a warm-up), or one per --classes value")
    return args


def main(argv: list[str] | None = None) -> None:
    """Time the epochs and print (and optionally write) the results."""
    args = parse_args(argv)
    from ..harness.process import prepare
    from .timing import measure

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
