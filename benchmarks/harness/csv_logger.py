"""Lightning's ``CSVLogger`` with one row per logged step.

Lightning's CSV writer appends a row for every ``log_metrics`` call, so a step at which the module, ReGraMa and
ReDo each log is three rows of mostly empty cells. :class:`StepCSVLogger` merges the values of one step into
one row: a call joins a pending row of the same step unless that row already holds one of its names (two
episodes ending at the same step keep two rows, no value is overwritten).
"""

from __future__ import annotations

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor


class _StepWriter(ExperimentWriter):
    """Lightning's writer, with the values of one step merged into one pending row."""

    def log_metrics(self, metrics_dict: dict[str, float], step: int | None = None) -> None:
        """Add the values to the pending row of ``step`` that holds none of their names, or start a row."""
        values = {k: v.item() if isinstance(v, Tensor) else v for k, v in metrics_dict.items()}
        if step is None:
            step = len(self.metrics)
        for row in self.metrics:
            if row["step"] == step and not values.keys() & row.keys():
                row.update(values)
                return
        self.metrics.append({**values, "step": step})

    def save_before(self, step: int) -> None:
        """Write the pending rows of steps before ``step`` (later calls cannot join them any more)."""
        kept = [row for row in self.metrics if row["step"] >= step]
        self.metrics = [row for row in self.metrics if row["step"] < step]
        self.save()
        self.metrics = kept


class StepCSVLogger(CSVLogger):
    """A ``CSVLogger`` writing one row per step of ``metrics.csv`` (see the module docstring).

    Rows are written once ``flush_logs_every_n_steps`` are pending (those of earlier steps than the latest
    call's), and all of them at every ``save`` (checkpoints, the end of the fit).

    Takes ``CSVLogger``'s arguments.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     logger = StepCSVLogger(folder, name="run", version=0)
        ...     logger.log_metrics({"train/loss": 0.5}, step=10)
        ...     logger.log_metrics({"grama/ratio": 0.25}, step=10)
        ...     logger.save()
        ...     print(open(logger.experiment.metrics_file_path).read().strip())
        grama/ratio,step,train/loss
        0.25,10,0.5
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> _StepWriter:
        """The writer (made at the first use)."""
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _StepWriter(log_dir=self.log_dir)
        return self._experiment

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Tensor | float], step: int | None = None) -> None:
        """Record the values at ``step``; write the complete rows when enough are pending."""
        writer = self.experiment
        if self._prefix:
            metrics = {f"{self._prefix}{self.LOGGER_JOIN_CHAR}{k}": v for k, v in metrics.items()}
        writer.log_metrics(metrics, step)
        if len(writer.metrics) >= self._flush_logs_every_n_steps:
            writer.save_before(writer.metrics[-1]["step"])
