"""Loggers a run writes to besides its CSV and TensorBoard files: ``--logger wandb`` where the package is installed.

:func:`check_loggers` is light (no import of the logger's package), for the command line's checks.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

#: ``--logger`` choices: the package each needs.
LOGGERS = {"wandb": "wandb"}


def check_loggers(names: list[str]) -> None:
    """Raise a ``ValueError`` naming ``--logger`` if a chosen logger's package is not installed."""
    for name in names:
        if importlib.util.find_spec(LOGGERS[name]) is None:
            raise ValueError(
                f"--logger {name} needs the {LOGGERS[name]} package, which is not installed here: pip install "
                f"{LOGGERS[name]} (the runs always write metrics.csv and TensorBoard files)."
            )


def extra_loggers(names: list[str], folder: Path, run_name: str, config: dict[str, Any]) -> list[Any]:
    """The chosen loggers for one run (``folder``: the run folder; ``run_name``: its name in the logger's UI)."""
    loggers = []
    for name in names:
        if name == "wandb":
            from lightning.pytorch.loggers import WandbLogger

            loggers.append(WandbLogger(name=run_name, save_dir=str(folder), config=config))
    return loggers
