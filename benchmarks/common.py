"""Set-up shared by the benchmark scripts."""

from __future__ import annotations

import logging
import warnings

import torch


def prepare(threads: int) -> None:
    """Fix the number of torch CPU threads; silence banners and warnings that say nothing about the result."""
    torch.set_num_threads(threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*log_every_n_steps.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")  # a deprecation inside Lightning itself
