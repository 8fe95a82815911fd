"""A run's hyperparameters in every logger: ``hparams.yaml`` at the start, TensorBoard's hparams table at the end."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger


class LogHyperparams(pl.Callback):
    """Give ``hparams`` (method, thresholds, period, network, ...) to every logger, the final metrics to TensorBoard.

    At ``setup`` every logger gets the hyperparameters (``CSVLogger`` and ``TensorBoardLogger`` write them to their
    ``hparams.yaml``, next to the module's own). At the end of a fit that finished (Lightning calls ``teardown``
    then, before it closes the loggers) each ``TensorBoardLogger`` writes the hparams session with the values of
    ``final()``, which appear as ``hp/...`` columns of the table; an interrupted fit writes none.

    Args:
        hparams: Plain values (nested dicts are flattened by TensorBoard as ``a/b``).
        final: Returns the metrics of the table, e.g. ``{"hp/final_eval_return": ...}``.
        step: Returns the step to log the final metrics at.
    """

    def __init__(
        self,
        hparams: Mapping[str, Any],
        final: Callable[[], Mapping[str, float]],
        step: Callable[[pl.Trainer, pl.LightningModule], int] | None = None,
    ) -> None:
        self.hparams = dict(hparams)
        self.final = final
        self.step = step or (lambda trainer, module: trainer.global_step)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Log the hyperparameters (no metrics yet)."""
        for logger in trainer.loggers:
            logger.log_hyperparams(self.hparams)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Write TensorBoard's hparams session with the final metrics."""
        metrics = {k: float("nan") if v is None else float(v) for k, v in self.final().items()}
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.log_hyperparams(self.hparams, metrics, step=self.step(trainer, pl_module))
