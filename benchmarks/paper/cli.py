"""The paper's experiments: ``list``, ``run <name> --scale smoke|cpu|paper``, ``report <name>`` (light).

Example:
    python -m benchmarks.paper list
    python -m benchmarks.paper run fig12-activations --scale smoke --out runs/paper
    python -m benchmarks.paper report fig12-activations --scale smoke --out runs/paper
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..harness.cli import command, make_parser
from ..harness.methods import method_names
from .experiments import EXPERIMENTS, SCALES


def build_parser() -> argparse.ArgumentParser:
    """Parser of the ``list`` and ``run`` subcommands."""
    parser = make_parser(command(__package__), __doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="every experiment, its paper reference, runs and rough cost per scale")
    run = sub.add_parser("run", help="run one experiment through the RL runner (finished runs are skipped)")
    run.add_argument("name", choices=sorted(EXPERIMENTS), help="the experiment")
    run.add_argument("--scale", choices=SCALES, default="smoke", help="smoke (seconds), cpu (~1 h), paper")
    run.add_argument("--seeds", nargs="+", type=int, default=None, help="seeds (default: the scale's)")
    run.add_argument("--methods", nargs="+", default=None, help="methods (default: the experiment's)")
    run.add_argument("--accelerator", default="auto", help="cpu, gpu or auto")
    run.add_argument("--out", default="runs/paper", help="root of the run folders")
    run.add_argument(
        "--data-dir", type=Path, default=Path("data"), help="folder holding cifar-100-python/ (fig5-cifar)"
    )
    rep = sub.add_parser("report", help="table.csv, table.md and figure.png from the finished runs")
    rep.add_argument("name", choices=sorted(EXPERIMENTS), help="the experiment")
    rep.add_argument("--scale", choices=SCALES, default="smoke", help="the scale whose runs to report")
    rep.add_argument("--seeds", nargs="+", type=int, default=None, help="seeds expected (default: the scale's)")
    rep.add_argument("--out", default="runs/paper", help="root of the run folders")
    return parser


def _status(experiment) -> str:
    if experiment.driver:
        return f"runnable (benchmarks/paper/{experiment.driver}.py)"
    if experiment.missing:
        return experiment.missing
    unknown = [m for m in experiment.methods if m not in method_names("rl")]
    return f"runnable without {', '.join(unknown)} ({experiment.needs})" if unknown else "runnable"


def listing() -> str:
    """The table printed by ``list``."""
    lines = [f"{'name':<20} {'paper':<28} {'runs s/c/p':<12} {'cpu h (cpu/paper)':<18} {'gpu h paper':<11} status"]
    for e in EXPERIMENTS.values():
        runs = "/".join(str(e.runs(s)) for s in SCALES) if e.agent and e.cells else "-"
        cost = e.cost_hours("cpu"), e.cost_hours("paper"), e.cost_hours("paper", "gpu")
        cpu = f"{cost[0]:.1f}/{cost[1]:.0f}" if cost[0] is not None else "-"
        gpu = f"{cost[2]:.0f}" if cost[2] is not None else "-"
        lines.append(f"{e.name:<20} {e.reference:<28} {runs:<12} {cpu:<18} {gpu:<11} {_status(e)}")
    lines.append("cost: rough, one run at a time, from assumed env steps/s per agent (see experiments.STEPS_PER_S)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m benchmarks.paper``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.action == "list":
        print(listing())
        return
    experiment = EXPERIMENTS[args.name]
    if experiment.driver:
        import importlib

        driver = importlib.import_module(f".{experiment.driver}", __package__)
        seeds = tuple(args.seeds) if args.seeds else None
        if args.action == "run":
            import inspect

            # Drivers take what they use of --accelerator and --data-dir.
            accepted = inspect.signature(driver.run).parameters
            extra = {k: getattr(args, k) for k in ("accelerator", "data_dir") if k in accepted}
            driver.run(args.scale, Path(args.out), seeds, **extra)
            return
        try:
            folder = driver.report(args.scale, Path(args.out))
        except ValueError as error:
            parser.error(str(error))
        print(f"wrote {folder}/table.csv, table.md, figure.png")
        return
    if args.action == "report":
        from .report import report

        if experiment.agent is None or not experiment.cells:
            parser.error(f"{experiment.name} has no runs to report: {experiment.missing}.")
        try:
            folder = report(experiment, args.scale, Path(args.out), tuple(args.seeds) if args.seeds else None)
        except ValueError as error:
            parser.error(str(error))
        print(f"wrote {folder}/table.csv, table.md, figure.png")
        return
    try:
        commands = experiment.commands(
            args.scale, tuple(args.seeds) if args.seeds else None, args.out, args.accelerator,
            tuple(args.methods) if args.methods else None,
        )  # fmt: skip
    except ValueError as error:
        parser.error(str(error))
    from ..rl.cli import main as rl_main

    for rl_argv in commands:
        rl_main([*rl_argv, "--resume"])
