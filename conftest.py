"""Doctest namespace for the package's examples."""

import pytest
import torch
from torch import nn

# The tests' models are tiny: one thread is as fast, and it avoids OpenMP threads spin-waiting for a core that an
# environment (or another test process) holds, which slowed RL tests tenfold on a shared 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace: dict) -> None:
    doctest_namespace["torch"] = torch
    doctest_namespace["nn"] = nn
