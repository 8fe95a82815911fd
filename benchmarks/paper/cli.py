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
    run = sub.add_parser("run", help="run one experiment: its RL runner grid or its driver (finished runs skipped)")
    run.add_argument("name", choices=sorted(EXPERIMENTS), help="the experiment")
    run.add_argument("--scale", choices=SCALES, default="smoke", help="smoke (seconds), cpu (~1 h), paper")
    run.add_argument("--seeds", nargs="+", type=int, default=None, help="seeds (default: the scale's)")
    run.add_argument("--methods", nargs="+", default=None, help="methods (default: the experiment's)")
    run.add_argument("--variants", nargs="+", default=None, help="cells of these variants only (default: all)")
    run.add_argument("--accelerator", default=None, help="cpu, gpu or auto (default: auto)")
    run.add_argument("--out", default="runs/paper", help="root of the run folders")
    run.add_argument("--data-dir", type=Path, default=None, help="folder holding cifar-100-python/ (fig5-cifar)")
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


def _driver_cost(experiment, scale: str) -> str:
    """A driver's rough cost at ``scale`` (its ``COST_HOURS``: cpu hours, and gpu hours where it says)."""
    import importlib

    cost = getattr(importlib.import_module(f".{experiment.driver}", __package__), "COST_HOURS", {}).get(scale)
    return "cost not estimated" if cost is None else f"~{_hours(cost)}"


def _hours(hours: float) -> str:
    """``12 s``, ``4 min``, ``1.5 h`` or ``420 h``."""
    if hours < 1 / 60:
        return f"{hours * 3600:.0f} s"
    if hours < 1:
        return f"{hours * 60:.0f} min"
    return f"{hours:.1f} h" if hours < 10 else f"{hours:,.0f} h"


def listing() -> str:
    """The table printed by ``list``.

    Each experiment with its paper reference and status, then per scale its runs, rough cost and command.
    """
    lines = []
    for e in EXPERIMENTS.values():
        lines.append(f"{e.name:<20} {e.reference:<28} {_status(e)}")
        for scale in SCALES:
            if e.agent and e.cells:  # an RL grid, run by the runner or by a driver around it
                gpu = f", gpu ~{_hours(e.cost_hours(scale, 'gpu'))}" if scale == "paper" else ""
                runs = e.runs(scale)
                cost = f"{runs} run{'s' if runs != 1 else ''}, cpu ~{_hours(e.cost_hours(scale))}{gpu}"
            elif e.driver:
                cost = _driver_cost(e, scale)
            else:
                cost = "-"
            lines.append(f"    {scale:<6} {cost:<40} {command(__package__)} run {e.name} --scale {scale}")
    lines.append("cost: rough, one run at a time; RL from assumed env steps/s per agent (experiments.STEPS_PER_S), "
                 "drivers from their COST_HOURS")  # fmt: skip
    return "\n".join(lines)


def _driver(parser: argparse.ArgumentParser, args: argparse.Namespace, experiment) -> None:
    """``run`` or ``report`` of an experiment with a driver module; a flag the driver does not use is refused."""
    import importlib
    import inspect

    driver = importlib.import_module(f".{experiment.driver}", __package__)
    where = f"benchmarks/paper/{experiment.driver}.py"
    if args.action == "report":
        if args.seeds:
            parser.error(f"{experiment.name} reports every finished run ({where}); leave out --seeds.")
        try:
            folder = driver.report(args.scale, Path(args.out))
        except ValueError as error:
            parser.error(str(error))
        print(f"wrote {folder}/table.csv, table.md, figure.png")
        return
    given = {k: getattr(args, k) for k in ("methods", "variants", "accelerator", "data_dir")}
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items() if v is not None}
    accepted = inspect.signature(driver.run).parameters
    refused = [f"--{k.replace('_', '-')}" for k in given if k not in accepted]
    if refused:
        parser.error(f"{experiment.name} does not use {', '.join(refused)} ({where} runs its own settings).")
    try:
        driver.run(args.scale, Path(args.out), tuple(args.seeds) if args.seeds else None, **given)
    except ValueError as error:  # the drivers' checks of their settings, made before any work
        parser.error(str(error))


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m benchmarks.paper``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.action == "list":
        print(listing())
        return
    experiment = EXPERIMENTS[args.name]
    if experiment.driver:
        _driver(parser, args, experiment)
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
    if args.data_dir is not None:
        parser.error(f"--data-dir is for fig5-cifar; {experiment.name} runs the RL runner, which reads no data.")
    try:
        commands = experiment.commands(
            args.scale, tuple(args.seeds) if args.seeds else None, args.out, args.accelerator or "auto",
            tuple(args.methods) if args.methods else None, tuple(args.variants) if args.variants else None,
        )  # fmt: skip
    except ValueError as error:
        parser.error(str(error))
    from ..rl.cli import main as rl_main

    for rl_argv in commands:
        rl_main([*rl_argv, "--resume"])
