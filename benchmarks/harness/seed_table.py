"""The table over seeds a multi-seed command prints at its end and writes next to its runs.

Per method: the number of seeds, and for every metric its mean with a 95% percentile bootstrap interval over
seeds (:mod:`benchmarks.harness.stats`), plus the interquartile mean where the metric asks for it (RL returns).
A run whose value is missing (a ratio never measured) is left out of that metric only, and the table says so.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import stats


@dataclass(frozen=True)
class Metric:
    """One column of the table.

    Attributes:
        key: The value's name in each run's summary.
        label: The column's title.
        digits: Decimals printed (the CSV keeps full precision).
        iqm: Also report the interquartile mean.
    """

    key: str
    label: str
    digits: int = 3
    iqm: bool = False


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def seed_rows(runs: Sequence[Mapping[str, Any]], metrics: Sequence[Metric], group: str = "method") -> list[dict]:
    """One row per method (in order of first appearance): ``seeds`` and each metric's aggregate.

    Args:
        runs: One mapping per run (a summary), holding ``group`` and every metric's ``key``.
        metrics: The columns.
        group: The key that names a row (``"method"``).

    Returns:
        Rows with ``<group>``, ``seeds``, and per metric ``<key>_mean``, ``<key>_ci_low``, ``<key>_ci_high``,
        ``<key>_iqm`` (if asked) and ``<key>_seeds`` (the seeds with a value); ``None`` where no run has one.

    Example:
        >>> rows = seed_rows([{"method": "a", "x": 1.0}, {"method": "a", "x": 3.0}], [Metric("x", "x")])
        >>> rows[0]["seeds"], rows[0]["x_mean"], rows[0]["x_seeds"]
        (2, 2.0, 2)
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for run in runs:
        groups.setdefault(run[group], []).append(run)
    rows = []
    for name, members in groups.items():
        row: dict[str, Any] = {group: name, "seeds": len(members)}
        for metric in metrics:
            values = [run.get(metric.key) for run in members]
            values = [float(v) for v in values if _finite(v)]
            summary = stats.summarize(values) if values else None
            row[f"{metric.key}_mean"] = summary.mean if summary else None
            row[f"{metric.key}_ci_low"] = summary.low if summary else None
            row[f"{metric.key}_ci_high"] = summary.high if summary else None
            if metric.iqm:
                row[f"{metric.key}_iqm"] = summary.iqm if summary else None
            row[f"{metric.key}_seeds"] = len(values)
        rows.append(row)
    return rows


def format_seed_table(rows: Sequence[Mapping[str, Any]], metrics: Sequence[Metric], group: str = "method") -> str:
    """The rows as fixed-width text: ``mean [low, high]`` per metric (the mean alone for one seed), IQM columns.

    Example:
        >>> rows = seed_rows([{"method": "a", "x": 1.0}, {"method": "a", "x": 3.0}], [Metric("x", "x", 1)])
        >>> print(format_seed_table(rows, [Metric("x", "x", 1)]))
        method  seeds  x
        a           2  2.0 [1.0, 3.0]
    """
    header = [group, "seeds"]
    for metric in metrics:
        header += [metric.label] + ([f"{metric.label} IQM"] if metric.iqm else [])
    lines, notes = [header], []
    for row in rows:
        cells = [str(row[group]), str(row["seeds"])]
        for metric in metrics:
            mean, n, d = row[f"{metric.key}_mean"], row[f"{metric.key}_seeds"], metric.digits
            if mean is None:
                cells.append("not measured")
            elif n == 1:
                cells.append(f"{mean:.{d}f}")
            else:
                cells.append(
                    f"{mean:.{d}f} [{row[f'{metric.key}_ci_low']:.{d}f}, {row[f'{metric.key}_ci_high']:.{d}f}]"
                )
            if metric.iqm:
                cells.append("" if mean is None else f"{row[f'{metric.key}_iqm']:.{d}f}")
            if mean is not None and n < row["seeds"]:
                notes.append(f"{row[group]}: {metric.label} of {n} of {row['seeds']} seeds (the others measured none)")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(c.rjust(w) if i == 1 else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True)))
            for line in lines]  # fmt: skip
    text = [line.rstrip() for line in text]
    return "\n".join(text + notes)


def write_seed_table(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write the rows as CSV (empty cells where nothing was measured); return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return path


def report_seeds(
    runs: Sequence[Mapping[str, Any]], metrics: Sequence[Metric], path: Path, what: str, group: str = "method"
) -> str:
    """Aggregate, write the CSV to ``path`` and return the text to print (a title naming ``what`` and the CSV).

    Args:
        runs: One summary per run.
        metrics: The columns.
        path: The CSV to write.
        what: What the values are (``"final evaluation return at 1000 steps"``), for the title.
        group: The key that names a row.

    Returns:
        The title, the table and where the CSV is.
    """
    rows = seed_rows(runs, metrics, group)
    write_seed_table(path, rows)
    title = f"Over seeds, per {group}: mean [95% bootstrap interval over seeds] of {what}"
    iqm = [m.label for m in metrics if m.iqm]
    if iqm:
        title += f"; IQM: interquartile mean of {', '.join(iqm)}"
    return f"{title}\n{format_seed_table(rows, metrics, group)}\n(written to {path})"
