"""Check a run's ``--accelerator``/``--devices`` before anything is written, as a usage error."""

from __future__ import annotations


def check_accelerator(accelerator: str, devices: int = 1) -> None:
    """Raise a one-line ``ValueError`` if Lightning cannot run on ``accelerator`` with ``devices`` here.

    Builds (and drops) a bare ``Trainer`` with those settings: what the run's Trainer would refuse, this
    refuses first, before a run folder is touched.

    Args:
        accelerator: Lightning's accelerator name (``auto``, ``cpu``, ``gpu``, ``cuda``, ``mps``, ...).
        devices: Devices per run.

    Raises:
        ValueError: Naming ``--accelerator`` and the fix.
    """
    import logging

    import lightning.pytorch as pl
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    quiet = logging.getLogger("lightning.pytorch")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # the Trainer's banner ("GPU available: ...") belongs to the run, not the check
    try:
        pl.Trainer(
            accelerator=accelerator,
            devices=devices,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
    except (MisconfigurationException, ValueError, RuntimeError) as error:
        reason = " ".join(str(error).split())
        raise ValueError(
            f"--accelerator {accelerator} with --devices {devices} cannot run on this machine ({reason}); use "
            "--accelerator cpu, or auto (a GPU if there is one)."
        ) from None
    finally:
        quiet.setLevel(level)
