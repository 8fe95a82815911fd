"""The toolkit's methods in the benchmarks: SAC on a real gymnasium environment, and the random-label probe."""

from __future__ import annotations

import csv

import pytest
import torch
from test_rl_agent import fit, tiny_sac

from benchmarks.harness.methods import METHODS, method_names
from benchmarks.rl.methods import method_callbacks, monitors
from regrama_lightning import NeuronPruning, PlasticityMetrics, ReBorn

TOOLKIT = [m for m in method_names("rl") if METHODS[m].extras]


def test_the_table_holds_every_toolkit_method():
    assert set(TOOLKIT) == {
        "cbp", "reborn", "snp", "l2init", "prune-grama", "prune-redo", "regrama+l2init", "regrama+wd",
        "regrama+l2init+wd",
    }  # fmt: skip


@pytest.mark.parametrize("method", TOOLKIT)
def test_sac_trains_with_each_toolkit_method_and_logs_the_plasticity_metrics(method):
    torch.manual_seed(0)
    agent = tiny_sac(total_steps=160, learning_starts=50)
    callbacks = method_callbacks(method, networks=("critic", "actor"), reset_every=50, grama_tau=0.05)
    metrics = next(c for c in callbacks if isinstance(c, PlasticityMetrics))
    metrics.every_n_steps = 50  # the benchmark's 1000 is past this tiny run
    fit(agent, callbacks)
    assert all(torch.isfinite(p).all() for p in agent.parameters())
    assert "plasticity/effective_rank" in metrics.last_metrics
    for callback in callbacks:  # scheduled by the agent's updates, like the monitors' resets
        if isinstance(callback, ReBorn | NeuronPruning):
            assert callback.resets == 4  # critic at updates 50 and 100, the actor in the next ones
    grama, _ = monitors(callbacks)
    assert grama.resets == (4 if METHODS[method].resets == "grama" else 0)


def test_random_labels_rows_carry_the_effective_rank_and_plot(tmp_path):
    from test_benchmarks import TINY

    from benchmarks.random_labels import cli as random_labels

    random_labels.main([*TINY, "--methods", "vanilla", "cbp", "snp", "--out", str(tmp_path / "r.csv")])
    with (tmp_path / "r.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(float(r["rank"]) >= 1.0 for r in rows)
    assert (tmp_path / "r.png").stat().st_size > 0  # the figure (with its effective-rank panel) is written by default
