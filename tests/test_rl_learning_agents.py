"""Learning checks of BRO-net and DACER on Pendulum-v1 (about a minute each on one core), with ReGraMa resetting
critic and actor every 1000 updates."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
from helpers import trainer

from benchmarks.rl.bro import BRO, bro_net
from benchmarks.rl.config import LoopConfig
from benchmarks.rl.dacer import DACER
from benchmarks.rl.evaluation import Evaluation
from benchmarks.rl.methods import method_callbacks
from benchmarks.rl.networks import NetworkConfig


def _learn(agent, every: int) -> list[float]:
    evaluation = Evaluation(every_n_env_steps=every, episodes=5)
    callbacks = [*method_callbacks("regrama", networks=("critic", "actor")), evaluation]
    trainer(callbacks, max_steps=-1, log_every_n_steps=500).fit(agent)
    return [r for _, r, _ in evaluation.history]


@pytest.mark.slow
def test_bro_learns_pendulum():
    pl.seed_everything(0, verbose=False)
    # The paper's BRO-net shape (one actor block, two critic blocks, replay ratio 2, batch 128) at width 64 and 10
    # quantiles: 100 quantiles cost 100 x 100 Huber terms per sample, too slow for one CPU core in CI.
    actor, critic = bro_net(1, 64), bro_net(2, 64)
    loop = BRO.LOOP.replace(total_steps=3_000, learning_starts=500)
    agent = BRO("Pendulum-v1", loop, actor_net=actor, critic_net=critic, n_quantiles=10)
    returns = _learn(agent, 1_500)
    assert returns[-1] > -400, f"evaluation returns {returns}"


@pytest.mark.slow
def test_dacer_learns_pendulum():
    pl.seed_everything(0, verbose=False)
    net = NetworkConfig(width=64, depth=2)  # Table 4's networks at width 64, 5 diffusion steps (CPU budget)
    loop = LoopConfig(total_steps=5_000, learning_starts=1_000, batch_size=128)
    agent = DACER("Pendulum-v1", loop, actor_net=net, critic_net=net, diffusion_steps=5, alpha_every=1_000)
    returns = _learn(agent, 2_500)
    # Measured (seed 0): -1730 at 2,500 steps, -952 at 5,000: learning, not solved at this scale (width 128 and
    # 10 diffusion steps reached -410, at 2.5x the cost).
    assert returns[-1] > -1_100 and returns[-1] > returns[0] + 500, f"evaluation returns {returns}"
