"""Arguments of NeuronReset that a toolkit method does not use: refused by name, never silently ignored."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any

from regrama_lightning.callbacks.base import NeuronReset

_DEFAULTS = {n: p.default for n, p in inspect.signature(NeuronReset.__init__).parameters.items()}


def refuse_unused(owner: str, kwargs: Mapping[str, Any], unused: Iterable[str], why: str) -> dict[str, Any]:
    """``kwargs`` without the arguments the method does not use; raise if one is set to other than its default.

    LightningCLI passes every argument of the signature, defaults included: those are dropped, not refused.

    Returns:
        The other arguments, to pass on to :class:`~regrama_lightning.callbacks.NeuronReset`.

    Raises:
        ValueError: Naming the arguments and why the method has no use for them.

    Example:
        >>> refuse_unused("NeuronPruning", {"tau": 0.1, "init_fn": None}, ["init_fn"], "nothing is re-drawn")
        {'tau': 0.1}
    """
    unused = set(unused)
    given = sorted(n for n in set(kwargs) & unused if not _is_default(n, kwargs[n]))
    if given:
        raise ValueError(f"{owner} does not take {given}: {why}. Leave them out.")
    return {n: v for n, v in kwargs.items() if n not in unused}


def _is_default(name: str, value: Any) -> bool:
    default = _DEFAULTS.get(name, inspect.Parameter.empty)
    return value is default or (type(value) is type(default) and value == default)
