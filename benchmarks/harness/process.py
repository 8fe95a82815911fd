"""The process set-up every benchmark command makes before training: thread count, quiet logs."""

from __future__ import annotations

import logging
import warnings


def prepare(threads: int | None) -> None:
    """Fix the number of torch CPU threads; silence banners and warnings that say nothing about the result.

    Args:
        threads: torch intra-op threads; ``None`` keeps torch's choice.
    """
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*log_every_n_steps.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")  # a deprecation inside Lightning itself
    # The run folder holds run.json before the CSV logger starts; harness.runs decides what a folder may hold.
    warnings.filterwarnings("ignore", ".*exists and is not empty.*")
