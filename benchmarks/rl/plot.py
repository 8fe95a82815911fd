"""Plot return and inactive-neuron ratios against environment steps: one curve per method, mean and spread over seeds.

Run:
    python -m benchmarks.rl.plot runs/rl/HalfCheetah-v5 --out halfcheetah.png

The folder is ``<out>/<env>`` of ``python -m benchmarks.rl`` (the environment id as typed, ``runs/rl/dmc:dog-walk``,
or as the folder is named, ``runs/rl/dmc_dog-walk``), holding ``<agent>/<method>/seed<k>/metrics.csv``; one curve
per agent and method (``<out>/<env>/<agent>`` draws one agent): the colour names the method, as in every plot of
the benchmarks, the line style the agent (BRO-net, DACER and SAC on one environment compare in one figure); ticks
at the bottom of a panel mark the steps at which a method reset neurons. Only finished runs are drawn
(``--include-incomplete`` adds the others, counted in the legend).
"""

from __future__ import annotations

import csv
import math
import sys
from argparse import ArgumentParser
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from ..harness import stats, style
from ..harness.cli import command, make_parser
from ..harness.runs import is_complete

PANELS = (
    ("eval/return", "evaluation return"),
    ("grama/ratio", "GraMa-inactive ratio"),
    ("dormant/ratio", "ReDo-dormant ratio"),
)


def read_series(path: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Steps and values of one logged key from a Lightning ``metrics.csv`` (rows without it are skipped)."""
    steps, values = [], []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            value = row.get(key, "")
            if value not in ("", None) and math.isfinite(float(value)):
                steps.append(int(row["step"]))
                values.append(float(value))
    return np.asarray(steps), np.asarray(values)


def aggregate(runs: list[tuple[np.ndarray, np.ndarray]], points: int = 200) -> tuple[np.ndarray, ...]:
    """Mean, min and max over runs, interpolated on a common grid of steps covered by every run."""
    gridded = stats.on_common_grid(runs, points)
    if gridded is None:
        return (np.array([]),) * 4
    grid, curves = gridded
    return grid, curves.mean(0), curves.min(0), curves.max(0)


def run_folder(folder: Path) -> Path:
    """``folder`` as given, or with the environment id's ``:`` as the run folders spell it (``dmc_dog-walk``).

    Example:
        >>> run_folder(Path("runs/rl/dmc:cheetah-run")).name  # no folder of that name: the written one
        'dmc_cheetah-run'
    """
    folder = Path(folder)
    named = folder.with_name(folder.name.replace(":", "_"))
    return named if not folder.exists() and named != folder else folder


AGENT_STYLES = ("-", "--", ":", "-.")
"""Line style of each agent in a figure that compares agents (the colour is the method's)."""


def method_colour(method: str) -> str:
    """The method's colour in every plot of the project (``regrama-keep``: ReGraMa's).

    Example:
        >>> method_colour("regrama-keep") == method_colour("regrama")
        True
    """
    return style.color(method.removesuffix("-keep"))


def reset_steps(path: Path) -> np.ndarray:
    """The steps at which a run reset neurons (``reset/neurons`` above zero)."""
    steps, neurons = read_series(path, "reset/neurons")
    return steps[neurons > 0]


def draw(folder: Path, include_incomplete: bool = False) -> Figure:
    """The figure of every agent and method found in ``folder``: one curve each, over its seeds.

    The colour names the method (:mod:`benchmarks.harness.style`), the line style the agent when there are
    several; ticks at the bottom of each panel mark the steps at which a method reset neurons (its first seed).

    Args:
        folder: ``<out>/<env>`` of ``python -m benchmarks.rl`` (or ``<out>/<env>/<agent>``).
        include_incomplete: Also draw runs that have not finished (else they are left out, and named on stderr).

    Returns:
        The figure (not drawn with pyplot: nothing global is touched).

    Raises:
        FileNotFoundError: If no ``seed<k>/metrics.csv`` is under ``folder``.
    """
    from matplotlib.figure import Figure
    from matplotlib.transforms import blended_transform_factory

    found = sorted(folder.glob("**/seed*/metrics.csv"))
    unfinished = [p.parent for p in found if not is_complete(p.parent)]
    if unfinished and not include_incomplete:
        names = ", ".join(str(p.relative_to(folder)) for p in unfinished)
        print(f"left out {len(unfinished)} incomplete run(s): {names} (--include-incomplete)", file=sys.stderr)
        found = [p for p in found if p.parent not in unfinished]
    curves = sorted({p.parent.parent.relative_to(folder) for p in found})
    if not curves:
        raise FileNotFoundError(
            f"No <agent>/<method>/seed<k>/metrics.csv under {folder}; run `python -m benchmarks.rl --out ...` first."
        )
    agents = sorted({c.parts[0] for c in curves}) if len(curves[0].parts) > 1 else []
    most_seeds = 1
    fig = Figure(figsize=(5 * len(PANELS), 3.6))
    axes = fig.subplots(1, len(PANELS))
    for ax, (key, title) in zip(axes, PANELS, strict=True):
        ticks = blended_transform_factory(ax.transData, ax.transAxes)  # x: steps, y: the panel's height
        for curve in curves:
            files = [p for p in found if p.parent.parent.relative_to(folder) == curve]
            grid, mean, low, high = aggregate([read_series(f, key) for f in files])
            if not len(grid):
                continue
            partial = sum(f.parent in unfinished for f in files)
            seeds = f"{len(files)} seed{'s' if len(files) > 1 else ''}"
            name = curve.name if len(agents) < 2 else " ".join(curve.parts)
            colour = method_colour(curve.name)
            dashes = AGENT_STYLES[agents.index(curve.parts[0]) % len(AGENT_STYLES)] if len(agents) > 1 else "-"
            label = f"{name} ({seeds}{f', {partial} incomplete' if partial else ''})"
            ax.plot(grid, mean, label=label, color=colour, linestyle=dashes)
            if len(files) > 1:
                ax.fill_between(grid, low, high, color=colour, alpha=0.2, linewidth=0)
            resets = reset_steps(files[0])
            if len(resets):
                ax.plot(resets, np.zeros(len(resets)), "|", color=colour, markersize=8, transform=ticks)
            most_seeds = max(most_seeds, len(files))
        ax.set_title(title)
        ax.set_xlabel("environment steps")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, title="| at the bottom: neurons reset", title_fontsize=8)
    spread = ": mean, min-max over seeds" if most_seeds > 1 else " (one seed per curve)"
    fig.suptitle(f"{folder.name}{spread}")
    fig.tight_layout()
    return fig


def plot(folder: Path, out: Path, include_incomplete: bool = False) -> Path:
    """Draw every agent and method found in ``folder`` (:func:`draw`) and write the figure to ``out`` (PNG).

    Args:
        folder: ``<out>/<env>`` of ``python -m benchmarks.rl`` (the environment id as typed is accepted).
        out: The PNG.
        include_incomplete: Also draw runs that have not finished.

    Raises:
        FileNotFoundError: If no ``seed<k>/metrics.csv`` is under ``folder``.
    """
    fig = draw(run_folder(folder), include_incomplete)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out


def build_parser() -> ArgumentParser:
    """The command line (light: no torch)."""
    parser = make_parser(command(__package__, "plot"), __doc__)
    parser.add_argument("folder", type=Path, help="<out>/<env> of a run of python -m benchmarks.rl")
    parser.add_argument("--out", type=Path, default=None, help="PNG to write (default: <folder>/curves.png)")
    parser.add_argument("--include-incomplete", action="store_true", help="also draw runs that have not finished")
    return parser


def main(argv: list[str] | None = None) -> Path:
    """Plot a folder of runs; return the PNG's path."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        folder = run_folder(args.folder)
        path = plot(folder, args.out or folder / "curves.png", args.include_incomplete)
    except FileNotFoundError as error:
        parser.error(str(error))
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
