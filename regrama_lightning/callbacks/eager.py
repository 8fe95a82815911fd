"""Running a ``torch.compile``'d model eagerly on the batches the callbacks trace, probe or hook.

Hooks and the tracer's or probe's op interception would otherwise enter compiled graphs (graph breaks) and
change their guards (recompiles). Several callbacks may hold the eager stance in the same batch: the stance
before the first one is restored when the last one lets go, whatever the order.
"""

from __future__ import annotations

from typing import Any

import torch

_holders: set[int] = set()
_stance: list[Any] = []  # the set_stance object whose exit restores the stance before the first holder


def hold_eager(owner: object) -> None:
    """Run compiled code eagerly until every holder has released it."""
    if not _holders:
        _stance.append(torch.compiler.set_stance("force_eager"))
    _holders.add(id(owner))


def release_eager(owner: object) -> None:
    """Let go of the eager stance (no-op if ``owner`` does not hold it)."""
    if id(owner) not in _holders:
        return
    _holders.discard(id(owner))
    if not _holders:
        _stance.pop().__exit__(None, None, None)
