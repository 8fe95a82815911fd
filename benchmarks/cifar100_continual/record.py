"""One row per epoch: accuracies, neuron ratios and resets, written to ``metrics.csv`` as the run goes."""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.loggers import Logger

from .schedule import ClassSchedule

# Fixed columns of metrics.csv; per-layer ratios (``grama/<layer>``, ``dormant/<layer>``) follow them.
COLUMNS = (
    "epoch",
    "classes",
    "lr",
    "train_loss",
    "train_acc",
    "val_acc",
    "test_acc",
    "grama_ratio",
    "dormant_ratio",
    "reset_neurons",
    "seconds",
)
_LOGGED = {
    "train/loss": "train_loss",
    "train/acc": "train_acc",
    "val/acc": "val_acc",
    "test/acc": "test_acc",
    "grama/ratio": "grama_ratio",
    "dormant/ratio": "dormant_ratio",
}


class _Sink(Logger):
    """A Trainer logger that hands every logged dict to the recorder (nothing is written by Lightning)."""

    def __init__(self, receive: Callable[[dict[str, float]], None]) -> None:
        super().__init__()
        self._receive = receive

    @property
    def name(self) -> str:
        """Logger name."""
        return "epoch-recorder"

    @property
    def version(self) -> int:
        """Logger version."""
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Hyperparameters go to summary.json instead."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Pass the values on."""
        self._receive(metrics)


class EpochRecorder(pl.Callback):
    """Collects what is logged during each epoch into one row and appends it to a CSV file.

    Pass ``recorder.logger`` as the Trainer's logger and put the recorder last in ``callbacks``. Within an
    epoch the neuron ratios (every measurement the ``ReGraMa``/``ReDo`` callbacks log) are averaged and the
    neurons reset are summed; accuracies are the module's epoch values. An epoch with no measurement has
    empty ratio cells.

    The rows are part of checkpoints: a checkpoint saved at an epoch's end (by a Lightning ``Checkpoint``, which
    runs after the module's epoch-end hook) holds that epoch's row too, its training loss and accuracy read from
    ``trainer.callback_metrics``. A fit resumed from it rewrites the CSV file with the saved rows and continues,
    so the file never holds rows of epochs the resumed run trains again.

    Args:
        schedule: The run's class schedule (for the ``classes`` column).
        path: CSV file to write (overwritten at fit start); ``None`` keeps the rows in memory only.
        on_row: Called with each finished row (e.g. to update a progress bar).
    """

    def __init__(
        self,
        schedule: ClassSchedule,
        path: Path | None = None,
        on_row: Callable[[dict[str, float]], None] | None = None,
    ) -> None:
        self.schedule = schedule
        self.path = path
        self.on_row = on_row
        self.logger = _Sink(self._receive)
        self.rows: list[dict[str, float]] = []
        self._columns: list[str] = []
        self._open = False
        self._samples: dict[str, list[float]] = {}
        self._values: dict[str, float] = {}
        self._start = 0.0
        self._trainer: pl.Trainer | None = None
        self._restored: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Keep the trainer, whose epoch-end values a checkpoint's row needs."""
        self._trainer = trainer

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start a new file, or rewrite it with the rows of the checkpoint being resumed."""
        restored, self._restored = self._restored, None
        self.rows, self._columns, self._open = [], [], False
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.unlink(missing_ok=True)
        if restored is not None:
            self._columns = list(restored["columns"])
            for row in restored["rows"]:
                self._keep(dict(row))

    def state_dict(self) -> dict[str, Any]:
        """The finished rows and, at an epoch's end, that epoch's row (floats and strings only)."""
        rows = list(self.rows)
        if self._open and self._trainer is not None:
            metrics = self._trainer.callback_metrics
            epoch_values = {k: c for k, c in _LOGGED.items() if not k.startswith(("grama/", "dormant/"))}
            pending = {c: float(metrics[k]) for k, c in epoch_values.items() if c not in self._values and k in metrics}
            rows.append(self._row(pending))
        columns = self._columns or ([*COLUMNS, *sorted(k for k in rows[-1] if k not in COLUMNS)] if rows else [])
        return {"rows": rows, "columns": columns}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the saved rows until the fit starts."""
        self._restored = state_dict

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Close the previous epoch's row (its epoch-end values arrive after on_train_epoch_end) and open one."""
        self._close()
        epoch = trainer.current_epoch
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else math.nan
        self._values = {"epoch": epoch, "classes": self.schedule.classes_at(epoch), "lr": lr, "reset_neurons": 0.0}
        self._samples = {}
        self._start = time.perf_counter()
        self._open = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Close the last row."""
        self._close()

    def _receive(self, metrics: dict[str, float]) -> None:
        if not self._open:
            return
        for key, value in metrics.items():
            if key == "reset/neurons":
                self._values["reset_neurons"] += float(value)
            elif key.startswith(("grama/", "dormant/")):
                self._samples.setdefault(_LOGGED.get(key, key), []).append(float(value))
            elif key in _LOGGED:
                self._values[_LOGGED[key]] = float(value)

    def _row(self, pending: dict[str, float] | None = None) -> dict[str, float]:
        row = {c: math.nan for c in COLUMNS} | self._values | (pending or {})
        row |= {key: sum(v) / len(v) for key, v in self._samples.items()}
        row["seconds"] = time.perf_counter() - self._start
        return row

    def _close(self) -> None:
        if not self._open:
            return
        self._open = False
        self._keep(self._row())

    def _keep(self, row: dict[str, float]) -> None:
        self.rows.append(row)
        if self.path is not None:
            self._write(row)
        if self.on_row is not None:
            self.on_row(row)

    def _write(self, row: dict[str, float]) -> None:
        new = not self.path.exists()
        if not self._columns:  # per-layer columns are known once the first epoch has traced and measured the model
            self._columns = [*COLUMNS, *sorted(k for k in row if k not in COLUMNS)]
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._columns, extrasaction="ignore", restval="")
            if new:
                writer.writeheader()
            writer.writerow({k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()})
