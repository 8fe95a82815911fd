"""Checks of the callbacks' constructor arguments: each error names the argument and the fix."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def check_arguments(
    *,
    tau: Any,
    reset_every_n_steps: Any,
    include: Any,
    exclude: Any,
    consumers: Any,
    include_output_layers: Any,
    residual: Any,
    max_reset_fraction: Any,
    reset_optimizer_state: Any,
    zero_outgoing: Any,
    init_fn: Any,
    log_every_n_steps: Any,
    log_per_layer: Any,
    seed: Any,
    eps: Any,
    step_attribute: Any,
    name: Any,
) -> None:
    """Raise ``ValueError`` for the first invalid argument of :class:`~regrama_lightning.callbacks.NeuronReset`."""
    check_number("tau", tau, low=0.0, fix="use 0 to flag only neurons with exactly zero score")
    check_period("reset_every_n_steps", reset_every_n_steps, "use None to measure without resetting")
    check_period("log_every_n_steps", log_every_n_steps, "use None to follow the Trainer's setting")
    for arg, patterns in (("include", include), ("exclude", exclude)):
        if isinstance(patterns, str):
            raise ValueError(f"`{arg}` must be a list of patterns, not a string: use [{patterns!r}].")
        if patterns is not None and not all(isinstance(p, str) for p in patterns):
            raise ValueError(f"`{arg}` must be a list of layer-name patterns (str), got {patterns!r}.")
    _check_consumers(consumers)
    if residual not in ("measure", "reset", "exclude"):
        raise ValueError(f"`residual` must be 'measure', 'reset' or 'exclude', got {residual!r}.")
    if max_reset_fraction is not None:
        check_number("max_reset_fraction", max_reset_fraction, low=0.0, high=1.0, fix="use None for no cap")
        if max_reset_fraction == 0:
            raise ValueError("`max_reset_fraction=0` would never reset: use reset_every_n_steps=None instead.")
    check_number("eps", eps, low=0.0, fix="use a small positive number such as 1e-9")
    if eps == 0:
        raise ValueError("`eps` must be > 0 (it keeps an all-zero layer from dividing by zero), got 0; use 1e-9.")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"`seed` must be an int or None (None: derived from torch's seed), got {seed!r}.")
    if step_attribute is not None and (not isinstance(step_attribute, str) or not step_attribute.isidentifier()):
        raise ValueError(f"`step_attribute` must be an attribute name such as 'env_steps', got {step_attribute!r}.")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"`name` must be a non-empty string (the checkpoint key) or None, got {name!r}.")
    flags = {
        "include_output_layers": include_output_layers,
        "reset_optimizer_state": reset_optimizer_state,
        "zero_outgoing": zero_outgoing,
        "log_per_layer": log_per_layer,
    }
    for arg, flag in flags.items():
        if not isinstance(flag, bool):
            raise ValueError(f"`{arg}` must be True or False, got {flag!r}.")
    if init_fn is not None and not callable(init_fn):
        raise ValueError("`init_fn` must be a callable that re-initialises a module in place, or None.")


def _check_consumers(consumers: Any) -> None:
    if consumers is None:
        return
    if not isinstance(consumers, Mapping):
        raise ValueError(f"`consumers` must map a layer name to a list of reader names, got {consumers!r}.")
    for layer, readers in consumers.items():
        if isinstance(readers, str):
            raise ValueError(
                f"`consumers` must map a layer name to a list of reader names, got {layer!r}: {readers!r}; "
                f"write {{{layer!r}: [{readers!r}]}} for a single reader."
            )
        if (
            not isinstance(layer, str)
            or not isinstance(readers, Sequence)
            or not all(isinstance(r, str) for r in readers)
        ):
            raise ValueError(
                f"`consumers` must map a layer name to a list of reader names, got {layer!r}: {readers!r}."
            )


def check_number(name: str, value: Any, low: float, fix: str, high: float | None = None) -> None:
    """A finite real number in ``[low, high]``."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= low
    if not ok or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"`{name}` must be a finite number {bound}, got {value!r}; {fix}.")


def check_period(name: str, value: Any, fix: str) -> None:
    """A positive integer or ``None``."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer or None, got {value!r}; {fix}.")


def describe_callable(fn: Any) -> str | None:
    """A description of ``fn`` that is the same in every process and differs between distinct functions.

    Module and qualified name; for a lambda or nested function also its source line; a ``functools.partial``
    as its function and the plain-valued arguments (no memory addresses).
    """
    if fn is None:
        return None
    func = getattr(fn, "func", None)
    if func is not None and hasattr(fn, "args"):  # functools.partial
        args = [_plain(a) for a in fn.args] + [f"{k}={_plain(v)}" for k, v in sorted(fn.keywords.items())]
        return f"partial({describe_callable(func)}, {', '.join(args)})"
    target = fn if hasattr(fn, "__qualname__") else type(fn)
    text = f"{getattr(target, '__module__', '')}.{target.__qualname__}"
    code = getattr(fn, "__code__", None)
    if code is not None and ("<lambda>" in text or "<locals>" in text):
        text += f"@{code.co_filename.rsplit('/', 1)[-1]}:{code.co_firstlineno}"
    return text


def _plain(value: Any) -> str:
    if value is None or isinstance(value, bool | int | float | str):
        return repr(value)
    return describe_callable(value) if callable(value) else type(value).__name__


SETTINGS = (
    "tau", "reset_every_n_steps", "include", "exclude", "consumers", "include_output_layers", "residual",
    "max_reset_fraction", "reset_optimizer_state", "zero_outgoing", "init_fn", "log_every_n_steps", "log_per_layer",
    "seed", "eps", "step_attribute",
)  # fmt: skip


def settings(callback: Any) -> dict[str, Any]:
    """Every constructor argument that changes what a callback does (``init_fn`` by a stable description)."""
    values = {name: getattr(callback, name) for name in SETTINGS}
    values["consumers"] = values["consumers"] or None
    values["init_fn"] = describe_callable(values["init_fn"])
    return values
