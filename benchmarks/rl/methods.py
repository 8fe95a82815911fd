"""The compared methods as callback lists: every run measures both GraMa and ReDo ratios; at most one resets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from benchmarks.common import method_monitors
from regrama_lightning import NeuronReset

Method = Literal["vanilla", "regrama", "redo"]
METHODS: tuple[str, ...] = ("vanilla", "regrama", "redo")


def method_callbacks(
    method: Method,
    networks: Sequence[str] = ("critic",),
    reset_every: int = 1000,
    grama_tau: float = 0.01,
    redo_tau: float = 0.02,
    max_reset_fraction: float | None = None,
    seed: int | None = None,
    zero_outgoing: bool = True,
) -> list[NeuronReset]:
    """Callbacks for one method; all log against the agent's ``env_steps``.

    Args:
        method: ``"vanilla"`` (measure only), ``"regrama"`` (reset GraMa-inactive neurons) or ``"redo"`` (reset
            dormant neurons).
        networks: Attribute names of the networks to score and reset (``"critic"``, ``"actor"``); both critics of
            a twin critic are covered by ``"critic"``. Target networks are never trained, so never scored.
        reset_every: Reset period in updates of the network's own optimizer (paper: 1000).
        grama_tau: GraMa threshold (paper: 0.01).
        redo_tau: ReDo threshold (paper: 0.02).
        max_reset_fraction: Cap on the fraction of a layer reset at once (paper, SAC on Humanoid: 0.05).
        seed: Seed of the re-draws.
        zero_outgoing: Zero reset neurons' outgoing weights (the paper); ``False`` keeps them (authors' code).

    Returns:
        ``[ReGraMa, ReDo]``, the one named by ``method`` resetting and the other measuring.

    Raises:
        ValueError: On an unknown method or an empty network list.
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}.")
    if not networks:
        raise ValueError("`networks` must name at least one network, e.g. ['critic'].")
    include = [f"{name}.*" for name in networks]
    return list(
        method_monitors(
            method,
            reset_every,
            grama_tau,
            redo_tau,
            include=include,
            step_attribute="env_steps",
            seed=seed,
            max_reset_fraction=max_reset_fraction,
            zero_outgoing=zero_outgoing,
        )
    )
