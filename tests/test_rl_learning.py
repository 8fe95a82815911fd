"""A learning check: SAC with CleanRL's settings solves Pendulum-v1 within 6,000 environment steps.

The smallest budget that still shows learning with a margin: with seed 0 the evaluation return was -1490 at
2,000 steps, -190 at 4,000 and -121 at 6,000 (-97 at 7,000), against about -1200 for a random policy.
"""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
from helpers import trainer

from benchmarks.rl.config import LoopConfig
from benchmarks.rl.evaluation import Evaluation
from benchmarks.rl.methods import method_callbacks
from benchmarks.rl.sac import SAC


@pytest.mark.slow
def test_sac_reaches_minus_300_on_pendulum_within_6k_steps():
    pl.seed_everything(0, verbose=False)
    agent = SAC("Pendulum-v1", LoopConfig(total_steps=6_000, learning_starts=1_000, seed=0))
    evaluation = Evaluation(every_n_env_steps=2_000, episodes=10)
    trainer([*method_callbacks("regrama"), evaluation], max_steps=-1, log_every_n_steps=500).fit(agent)
    steps = [s for s, _, _ in evaluation.history]
    returns = [r for _, r, _ in evaluation.history]
    assert steps == [2_000, 4_000, 6_000]
    assert returns[0] < -600  # barely trained: Pendulum's random policy scores about -1200
    assert returns[-1] > -300, f"evaluation returns {returns}"
