"""Periodic checkpoints that a run resumes from exactly: the file, the random state, and the logs up to it.

- :class:`PeriodicCheckpoint` saves one file (``last.ckpt``) every N training epochs or every N units of a
  counter of the module (``env_steps``), atomically (written aside, then renamed: an interruption during the save
  leaves the previous checkpoint intact). It is a Lightning ``Checkpoint``, so its epoch-end save runs after the
  module's own ``on_train_epoch_end`` and sees that epoch's logged values. It flushes the loggers first and
  stores how many rows each ``CSVLogger`` file had, and the step, so that a resumed run can drop what the
  interrupted attempt logged after the checkpoint (:func:`resume_csv_loggers`,
  :func:`tensorboard_resume_kwargs`).
- :class:`RandomState` saves and restores the global random generators (torch CPU and CUDA, numpy, Python), which
  Lightning's checkpoints do not hold, so that a resumed run draws what the uninterrupted one would have drawn.

Resume with ``trainer.fit(module, ckpt_path=path)``: Lightning restores the module, optimizers, loop counters and
every callback's state.
"""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.loggers import CSVLogger, Logger

LOGS_KEY = "run_logs"  # where the checkpoint keeps the log positions


class PeriodicCheckpoint(Checkpoint):
    """Save ``path`` every ``every`` epochs, or each time a counter of the module passes a multiple of ``every``.

    With ``attribute=None`` it saves at the end of every ``every``-th training epoch; with ``attribute`` (e.g.
    ``"env_steps"``) after the first training batch at which ``module.<attribute>`` has reached the next multiple.

    Args:
        path: The checkpoint file, overwritten at every save.
        every: The period.
        attribute: An integer counter of the module (e.g. ``"env_steps"``); ``None`` counts epochs.

    Raises:
        ValueError: On a non-positive period.
    """

    def __init__(self, path: str | Path, every: int, attribute: str | None = None) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"`every` must be a positive integer, got {every!r}.")
        self.path = Path(path)
        self.every = every
        self.attribute = attribute
        self.saves = 0
        self._next = every

    @property
    def state_key(self) -> str:
        """One state per file and schedule."""
        return f"PeriodicCheckpoint[{self.path.name},{self.every},{self.attribute}]"

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Schedule the next save after the current count (a resumed run continues the schedule)."""
        if self.attribute is not None:
            self._next = (int(getattr(pl_module, self.attribute)) // self.every + 1) * self.every

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Save once the counter has reached the next multiple."""
        if self.attribute is None:
            return
        value = int(getattr(pl_module, self.attribute))
        if value >= self._next:
            self._next = (value // self.every + 1) * self.every
            self.save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Save every ``every`` epochs (after the module's epoch-end hook: Lightning runs checkpoints last)."""
        if self.attribute is None and (trainer.current_epoch + 1) % self.every == 0:
            self.save(trainer)

    def save(self, trainer: pl.Trainer) -> None:
        """Flush the loggers and save now, atomically."""
        for logger in trainer.loggers:
            logger.save()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        trainer.save_checkpoint(tmp)
        os.replace(tmp, self.path)
        self.saves += 1

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        """Record the step and the rows of every CSV log, as of this save."""
        step = int(getattr(pl_module, self.attribute)) if self.attribute else trainer.global_step
        rows = {}
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                logger.save()
                rows[str(Path(logger.log_dir) / "metrics.csv")] = _csv_rows(Path(logger.log_dir) / "metrics.csv")
        checkpoint[LOGS_KEY] = {"step": step, "csv_rows": rows}


def _csv_rows(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open(newline="") as f:
        return max(sum(1 for _ in csv.reader(f)) - 1, 0)


class RandomState(pl.Callback):
    """Keeps the global random generators in checkpoints (torch CPU and CUDA, numpy, Python's ``random``).

    Saved as tensors and plain numbers, so that checkpoints load with ``torch.load(weights_only=True)``; restored
    when Lightning restores callbacks, before the resumed fit draws anything.
    """

    def state_dict(self) -> dict[str, Any]:
        """The current states."""
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        version, python_state, python_gauss = random.getstate()
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": {
                "kind": kind,
                "keys": torch.from_numpy(keys.astype(np.int64)),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "gauss": float(gauss),
            },
            "python": {"version": version, "state": list(python_state), "gauss": python_gauss},
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the saved states."""
        torch.set_rng_state(state_dict["torch"])
        n = state_dict["numpy"]
        keys = n["keys"].numpy().astype(np.uint32)
        np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))
        p = state_dict["python"]
        random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


def saved_entry(checkpoint: str | Path, key: str) -> dict[str, Any]:
    """The entry ``key`` of ``checkpoint`` (empty if none), read without loading the rest."""
    # mmap: a checkpoint with a replay buffer can be gigabytes; only the small entry is read
    return torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True).get(key, {})


def saved_log_positions(checkpoint: str | Path) -> dict[str, Any]:
    """The step and CSV row counts :class:`PeriodicCheckpoint` stored in ``checkpoint`` (empty if none)."""
    return saved_entry(checkpoint, LOGS_KEY)


def saved_counters(checkpoint: str | Path | None, key: str, **defaults: int) -> dict[str, int]:
    """The integer entries named by ``defaults`` of ``checkpoint[key]`` (the defaults without a checkpoint)."""
    saved = saved_entry(checkpoint, key) if checkpoint is not None else {}
    return {name: int(saved.get(name, value)) for name, value in defaults.items()}


def _read_csv(path: Path, rows: int) -> tuple[list[str], list[list[str]]]:
    """The header and the first ``rows`` rows of a CSV file (nothing if it does not exist)."""
    if not path.exists():
        return [], []
    with path.open(newline="") as f:
        lines = list(csv.reader(f))
    return (lines[0], lines[1 : rows + 1]) if lines else ([], [])


def resume_csv_loggers(loggers: list[Logger], checkpoint: str | Path) -> None:
    """Cut every ``CSVLogger`` file among ``loggers`` back to its rows at ``checkpoint``; call before ``fit``.

    The logger then continues the file with the same columns (new ones are still added), so a resumed run never
    mixes in what the interrupted attempt logged after its checkpoint.

    Args:
        loggers: The new attempt's loggers, writing into the interrupted attempt's folders.
        checkpoint: The checkpoint being resumed.
    """
    rows: dict[str, int] = saved_log_positions(checkpoint).get("csv_rows", {})
    for logger in loggers:
        if isinstance(logger, CSVLogger):
            path = Path(logger.log_dir) / "metrics.csv"
            header, kept = _read_csv(path, rows.get(str(path), 0))
            writer = logger.experiment  # made now: it deletes an existing metrics.csv, which is written back below
            if header:
                with path.open("w", newline="") as f:
                    csv.writer(f).writerows([header, *kept])
            writer.metrics_keys = header  # continue with the same columns (new ones are still added)


def tensorboard_resume_kwargs(checkpoint: str | Path | None) -> dict[str, Any]:
    """``TensorBoardLogger`` arguments for a run resumed from ``checkpoint`` (none for a fresh run).

    ``purge_step``: the new event file starts with a marker at the step after the checkpoint's, and TensorBoard
    discards the earlier files' events from that step on. (Values logged at the checkpoint's own step after the
    save may appear twice.)
    """
    if checkpoint is None:
        return {}
    saved = saved_log_positions(checkpoint)
    return {"purge_step": saved["step"] + 1} if "step" in saved else {}
