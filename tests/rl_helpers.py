"""Build RL agents from flat keyword arguments in tests: the loop settings go into the agent's LoopConfig."""

from __future__ import annotations

import dataclasses

from benchmarks.rl.config import LoopConfig

LOOP_FIELDS = {f.name for f in dataclasses.fields(LoopConfig)}


def make(cls, env_id="Pendulum-v1", **kwargs):
    """``cls(env_id, LoopConfig(<loop kwargs>, the agent's defaults otherwise), **<other kwargs>)``."""
    loop = {k: kwargs.pop(k) for k in list(kwargs) if k in LOOP_FIELDS}
    return cls(env_id, cls.LOOP.replace(**loop), **kwargs)
