"""Per-step overhead of the ReGraMa / ReDo callbacks relative to a bare Lightning step, on CPU.

Two workloads, both on synthetic tensors built once in memory:

* ``mlp``: 3 hidden layers of 256 ReLU units (64 inputs, 10 classes), batch 256;
* ``cnn``: conv 3->8 -> ReLU -> maxpool -> conv 8->16 -> ReLU -> maxpool -> linear, on 3x32x32, batch 64.

Configurations:

* ``bare``: no callback (an A/A control: its ratio shows the benchmark's own noise);
* ``defaults``: ``ReGraMa()`` (measures every Trainer ``log_every_n_steps`` = 50 steps, resets every 1000);
* ``grama-weight@1``: ``ReGraMa(reset_every_n_steps=None, log_every_n_steps=1)``;
* ``grama-output@1``: ``ReGraMa(reset_every_n_steps=None, score="output", log_every_n_steps=1)``;
* ``redo@1``: ``ReDo(reset_every_n_steps=None, log_every_n_steps=1)``;
* ``reset@100`` (information only): ``ReGraMa(reset_every_n_steps=100)``, ten times the default reset rate;
* ``read-grads`` (reference): a bare callback that only reads ``|W.grad|`` row sums of every layer at each step,
  the part of ``grama-weight@1`` that any implementation of the authors' score must pay;
* the toolkit at its defaults: ``cbp`` (``ContinualBackprop()``: measures every step, replaces every 100),
  ``reborn`` (``ReBorn()``), ``prune`` (``NeuronPruning()``), ``snp`` (``ShrinkPerturb()``: every step),
  ``l2init`` (``L2Init()``), and ``plasticity@100`` (``PlasticityMetrics(every_n_steps=100)``, ten times its
  default rate).

Design. On this kind of (virtual, shared) machine, two identical bare fits differ by 5-10% in per-step time, and so
do 40-step blocks within one fit: far more than the 1% this benchmark must resolve. So the comparison is made
inside one fit: the callback runs behind a :class:`Gate` that passes Lightning's per-step hooks to it on every
other step only. Each "on" step (callback active, bare otherwise) is paired with the "off" step right after it
(a bare step: same model, same memory, same moment), and ``ratio = 1 + mean(on - off) / mean(off)``. Lightning's
own dispatch of a callback's hooks is paid on both steps of a pair, so it is not counted; it is the same for
any callback. The callback counts only its "on" steps, so it measures, logs and resets at its usual period in
those. Step times are the process's CPU time (``--clock``); pairs holding a hiccup (a step over 3x the median)
are dropped. ``hooks %`` is the time inside the callback's Lightning hooks on "on" steps, over the "off" step
(it leaves out the tensor hooks the ``output`` and ReDo signals run inside the model's passes).

Run (about 9 minutes at the defaults on 2 CPU cores):
    python -m benchmarks.overhead
    python -m benchmarks.overhead --pairs 2000 --out results.json
    python -m benchmarks.overhead --models mlp --configs defaults grama-weight@1
"""

from __future__ import annotations

import argparse
import json

from ..harness.cli import command, make_parser, non_negative_int, positive_int

# Choices of the command line, spelled out so that --help imports no torch (a test checks them against
# timing.py's CLOCKS, MODELS and CONFIGS; timing.py imports nothing of this module).
CLOCKS = ("wall", "cpu")
MODELS = ("mlp", "cnn")
CONFIGS = (
    "bare",
    "defaults",
    "grama-weight@1",
    "grama-output@1",
    "redo@1",
    "reset@100",
    "read-grads",
    "cbp",
    "reborn",
    "prune",
    "snp",
    "l2init",
    "plasticity@100",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = make_parser(command(__package__), __doc__)
    p.add_argument("--pairs", type=positive_int, default=600, help="timed (on, off) step pairs per fit")
    p.add_argument("--warmup", type=positive_int, default=30, help="untimed steps at the start of each fit")
    p.add_argument("--rounds", type=positive_int, default=2, help="fits per configuration (their pairs are pooled)")
    p.add_argument("--clock", choices=CLOCKS, default="cpu", help="'cpu' (process CPU time) or 'wall'")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS), help="models to time")
    p.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS), help="'bare' is always run")
    p.add_argument("--threads", type=positive_int, default=1, help="torch intra-op threads (fixed for every run)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the models and data")
    p.add_argument("--out", type=str, default=None, help="also write the results as JSON to this path")
    args = p.parse_args(argv)
    if args.pairs < 2 or args.rounds < 1 or args.warmup < 2:
        p.error("--pairs must be >= 2, --rounds >= 1 and --warmup >= 2")
    args.configs = ["bare", *[c for c in args.configs if c != "bare"]]
    return args


def main(argv: list[str] | None = None) -> None:
    """Time every configuration and print (and optionally write) the results."""
    args = parse_args(argv)
    import lightning.pytorch as pl
    import torch

    from ..harness.process import prepare
    from .timing import bench, check_targets, format_table

    prepare(args.threads)
    print(
        f"torch {torch.__version__}, lightning {pl.__version__}, {torch.get_num_threads()} thread(s); "
        f"{args.pairs} on/off step pairs per fit after {args.warmup} warm-up steps, {args.rounds} fit(s) each",
        flush=True,
    )
    results = bench(args.models, args.configs, args.rounds, args.warmup, args.pairs, args.seed, args.clock)
    print()
    print(format_table(results))
    print(
        f"off/on: mean {args.clock} time of bare steps and of steps with the callback; cost = mean(on - off) over "
        "adjacent pairs; ratio = 1 + cost / off; +-se: standard error; hooks %: inside the callback's hooks / off."
    )
    print()
    print("\n".join(check_targets(results)))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"settings": vars(args), "results": results}, f, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
