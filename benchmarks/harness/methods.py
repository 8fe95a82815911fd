"""The compared methods, one table for every benchmark: names, what each resets, where it runs.

Light (no torch): the command lines take their ``--methods`` choices from here. The callbacks of a method are
built by :func:`benchmarks.harness.monitors.method_monitors` (the GraMa and ReDo monitors every run carries) and
by each benchmark's own schedule (``rl.methods``: every N agent updates; ``cifar100_continual.methods``: at class
additions; ``random_labels.fit``: every N steps).

To add a method: add a :class:`MethodInfo` to :data:`METHODS` naming the benchmarks that run it; callbacks it
needs besides the two monitors go in ``extras``, each built by a factory of :data:`~benchmarks.harness.monitors.
EXTRAS` (every benchmark appends :func:`~benchmarks.harness.monitors.extra_callbacks` to its run's callbacks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Benchmark = Literal["rl", "cifar100_continual", "random_labels"]
BENCHMARKS: tuple[Benchmark, ...] = ("rl", "cifar100_continual", "random_labels")


@dataclass(frozen=True)
class MethodInfo:
    """One compared method.

    Args:
        name: The command-line name.
        resets: The monitor that resets (``"grama"``: ReGraMa, ``"redo"``: ReDo); ``None``: both only measure.
        summary: One line for ``--help`` and the docs.
        benchmarks: The benchmarks that run it.
        extras: Names of further callbacks every run of the method carries, built by
            :data:`benchmarks.harness.monitors.EXTRAS` (e.g. a toolkit intervention next to the monitors).
    """

    name: str
    resets: Literal["grama", "redo"] | None
    summary: str
    benchmarks: tuple[Benchmark, ...] = BENCHMARKS
    extras: tuple[str, ...] = ()


METHODS: dict[str, MethodInfo] = {
    m.name: m
    for m in (
        MethodInfo("vanilla", None, "no intervention; GraMa and ReDo only measure"),
        MethodInfo("regrama", "grama", "reset GraMa-inactive neurons (gradient magnitude <= tau x layer mean)"),
        MethodInfo("redo", "redo", "reset dormant neurons (activation magnitude <= tau x layer mean)"),
        MethodInfo(
            "fresh", None, "a new network at every class addition (an upper reference)", ("cifar100_continual",)
        ),
    )
}


def method_names(benchmark: Benchmark) -> tuple[str, ...]:
    """The methods ``benchmark`` runs, in the table's order.

    Example:
        >>> method_names("rl")
        ('vanilla', 'regrama', 'redo')
    """
    return tuple(name for name, m in METHODS.items() if benchmark in m.benchmarks)


def check_method(name: str, benchmark: Benchmark) -> MethodInfo:
    """The method named ``name``.

    Raises:
        ValueError: If ``benchmark`` does not run it; the message lists those it runs.
    """
    if name not in method_names(benchmark):
        raise ValueError(f"`method` must be one of {list(method_names(benchmark))}, got {name!r}.")
    return METHODS[name]
