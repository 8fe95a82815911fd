"""Reading buffered measurements and logging them: one host sync per read, one log row per measured step."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from regrama_lightning.track import OptimizerTrack


class ActivityLog:
    """Turns the optimizers' buffered measurements into logged ratios.

    Args:
        owner: The callback's class name, for messages.
        prefix: Logged names are ``<prefix>/<layer>``, ``<prefix>/ratio`` and ``<prefix>/skipped``.
        log_per_layer: Also log one ratio per layer.

    Attributes:
        last_metrics: The latest logged value of each name.
    """

    def __init__(self, owner: str, prefix: str, log_per_layer: bool) -> None:
        self.owner = owner
        self.prefix = prefix
        self.log_per_layer = log_per_layer
        self.last_metrics: dict[str, float] = {}
        self._warned_nonfinite = False

    def read(
        self,
        trainer: pl.Trainer,
        tracks: Sequence[OptimizerTrack],
        now: int,
        act: Callable[[Sequence[OptimizerTrack]], Tensor] | None = None,
        observe: Callable[[OptimizerTrack, Tensor, list[int]], None] | None = None,
    ) -> None:
        """Evaluate every buffered measurement (summed across ranks), act on due resets and log: one host sync.

        Args:
            trainer: The Trainer (its strategy reduces across ranks; its loggers log).
            tracks: Every followed optimizer.
            now: The x-axis value of logs made now.
            act: Applies the due resets, returning the number of neurons acted on (0-d tensor).
            observe: Sees each optimizer's rows (synced) and their steps before they are summarised.
        """
        reduce = None
        if trainer.world_size > 1:  # the union of all ranks' samples, as the metric's own sync would give
            reduce = lambda rows: trainer.strategy.reduce(rows, reduce_op="sum")  # noqa: E731
        parts: list[Tensor] = []
        layout: list[tuple[OptimizerTrack, list[int]]] = []
        for track in tracks:
            if not len(track.buffer):
                continue
            track.buffer.stamp(now)
            rows, steps = track.buffer.take(reduce if track.metric.sync_on_compute else None)
            track.state = rows[-1]
            if observe is not None:
                observe(track, rows, steps)
            summary = track.metric.summary(rows)
            index = track.scored_index
            parts.append(torch.cat([summary.inactive[:, index], summary.neurons[:, index]], 1).flatten())
            parts.append(summary.skipped.float())
            layout.append((track, steps))
        due = [t for t in tracks if t.reset_due] if act is not None else []
        if due:
            parts.append(act(due).view(1))
            for track in due:
                track.reset_due = False
        if parts:
            self._log(trainer, now, torch.cat(parts).tolist(), tracks, layout, bool(due))  # the read's one host sync

    def _log(
        self,
        trainer: pl.Trainer,
        now: int,
        numbers: list[float],
        tracks: Sequence[OptimizerTrack],
        layout: list[tuple[OptimizerTrack, list[int]]],
        reset: bool,
    ) -> None:
        """Per-step logs: layer ratios, and the global ratio over every optimizer's layers.

        A measurement skipped for non-finite values logs ``nan`` ratios (never its optimizer's last finite one)
        until that optimizer's next finite measurement, and ``<prefix>/skipped`` counts the skips of each step.
        """
        rows: dict[int, list[tuple[OptimizerTrack, list[float], list[float], float]]] = {}  # step -> measurements
        at = 0
        for track, steps in layout:
            k = len(track.scored)
            skipped = numbers[at + 2 * k * len(steps) : at + (2 * k + 1) * len(steps)]
            for i, step in enumerate(steps):
                counts = numbers[at + 2 * k * i : at + 2 * k * (i + 1)]
                rows.setdefault(step, []).append((track, counts[:k], counts[k:], skipped[i]))
            at += (2 * k + 1) * len(steps)
            self._warn_if_skipped(skipped)
        logs: dict[int, dict[str, float]] = {}
        for step in sorted(rows):
            logs[step] = {f"{self.prefix}/skipped": sum(r[3] for r in rows[step])}
            for track, inactive, neurons, skipped in rows[step]:
                track.latest_counts = (math.nan, math.nan) if skipped else (sum(inactive), sum(neurons))
                if self.log_per_layer:
                    for name, i, n in zip(track.scored, inactive, neurons, strict=True):
                        logs[step][f"{self.prefix}/{name}"] = i / n if n else math.nan
            latest = [t.latest_counts for t in tracks if t.latest_counts is not None]
            total = sum(n for _, n in latest)
            if total != 0:  # nan (a skipped measurement) is logged as nan
                logs[step][f"{self.prefix}/ratio"] = sum(i for i, _ in latest) / total
        if reset:
            logs.setdefault(max(logs, default=now), {})["reset/neurons"] = numbers[-1]
        latest_values: dict[str, float] = {}
        for step, values in logs.items():
            for logger in trainer.loggers:
                logger.log_metrics(values, step=step)
            latest_values.update(values)
        self.last_metrics.update(latest_values)
        if latest_values:  # for monitors such as EarlyStopping and ModelCheckpoint
            values = torch.tensor(list(latest_values.values())).unbind()
            trainer.callback_metrics.update(zip(latest_values, values, strict=True))

    def _warn_if_skipped(self, skipped: list[float]) -> None:
        if any(skipped) and not self._warned_nonfinite:
            rank_zero_warn(
                f"{self.owner}: a measurement had non-finite gradients or activations and was skipped; "
                f"no neuron is reset on it, its ratios are logged as nan and `{self.prefix}/skipped` counts it "
                "(this warning is shown once)."
            )
            self._warned_nonfinite = True
