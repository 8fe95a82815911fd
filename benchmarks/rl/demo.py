"""``make demo``: SAC with and without ReGraMa on HalfCheetah-v5, a few minutes on 2 CPU cores, offline.

Both runs use the same seed, CleanRL's SAC settings (except a shorter random phase) and the paper's ReGraMa
settings (critic neurons with a normalised gradient magnitude <= 0.01 reset every 1000 critic updates). Both also
measure the GraMa and ReDo ratios of the critics. Far too short to show a loss of plasticity (the paper trains
for a million steps): it shows the whole pipeline working and what it costs. Prints a table, writes it as CSV and
draws the curves, all under runs/ (ignored by git: the committed results in benchmarks/results/ stay as they are).
A second demo with the same settings reuses the finished runs (--overwrite trains them again).

Run:
    python -m benchmarks.rl.demo
    python -m benchmarks.rl.demo --steps 30000 --env dmc:cheetah-run
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from ..harness.cli import command, make_parser, non_negative_int, positive_int
from . import cli


def build_parser() -> argparse.ArgumentParser:
    """The command line (light: no torch)."""
    parser = make_parser(command(__package__, "demo"), __doc__)
    parser.add_argument("--env", default="HalfCheetah-v5", help="gymnasium id or dmc:<domain>-<task>")
    parser.add_argument("--steps", type=positive_int, default=10_000, help="environment steps per run")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of both runs")
    parser.add_argument("--runs", type=Path, default=Path("runs/rl_demo"), help="run folders (logs, checkpoints)")
    parser.add_argument("--out", type=Path, default=Path("runs/rl_demo"), help="folder of the table and the plot")
    parser.add_argument("--overwrite", action="store_true", help="train again runs that finished before")
    return parser


def main(argv: list[str] | None = None) -> list[dict]:
    """Train both runs (or reuse them), print and write the table, draw the curves."""
    args = build_parser().parse_args(argv)
    from .plot import plot, read_series
    from .runner import run_dir

    common = ["--env", args.env, "--steps", str(args.steps), "--seed", str(args.seed), "--out", str(args.runs)]
    common += ["--learning-starts", "2000", "--eval-every", "2000", "--eval-episodes", "5", "--log-every", "250"]
    summaries = cli.main([*common, "--methods", "vanilla", "regrama", *(["--overwrite"] if args.overwrite else [])])
    config = cli.parse(common)[0]
    rows = []
    for summary in summaries:
        folder = run_dir(config, summary["method"], args.seed)
        _, grama = read_series(folder / "metrics.csv", "grama/ratio")
        _, reset = read_series(folder / "metrics.csv", "reset/neurons")
        rows.append(
            {
                "method": summary["method"],
                "final_eval_return": round(summary["final_eval_return"], 1),
                "best_eval_return": round(summary["best_eval_return"], 1),
                "grama_ratio_mean": round(float(grama.mean()), 4),
                "grama_ratio_last": round(float(grama[-1]), 4),
                "neurons_reset": int(reset.sum()),
                "env_steps_per_s": round(summary["env_steps_per_s"], 1),
                "updates_per_s": round(summary["updates_per_s"], 1),
            }
        )
    args.out.mkdir(parents=True, exist_ok=True)
    table = args.out / f"{args.env.replace(':', '_')}.csv"
    with table.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    png = plot(args.runs / args.env.replace(":", "_"), args.out / f"{args.env.replace(':', '_')}.png")
    print(f"\nSAC on {args.env}, {args.steps} environment steps, seed {args.seed} (critic GraMa ratio):")
    print(" | ".join(rows[0]))
    for row in rows:
        print(" | ".join(str(v) for v in row.values()))
    print(f"wrote {table} and {png}")
    return rows


if __name__ == "__main__":
    main()
