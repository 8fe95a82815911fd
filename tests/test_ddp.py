"""Two-process CPU DDP: resets happen, are decided on the union of both ranks' data, and keep the ranks identical.

Starting a fresh process costs many seconds (importing torch and Lightning), so one pair of processes, forked
once per module with ``torch.multiprocessing`` (``spawn`` where ``fork`` is not available), runs every
configuration with ``strategy="ddp"`` (the processes set ``LOCAL_RANK`` etc. themselves, so Lightning launches
nothing) and saves what each rank saw. The workers use one intra-op thread, as DataLoader workers do, which
keeps forking safe.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from helpers import Classifier, mlp, plant_dead_neuron, trainer
from lightning.pytorch.strategies import DDPStrategy
from torch import multiprocessing as mp
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from regrama_lightning import ReDo, ReGraMa

WORLD = 2
RESET_EVERY = 4
MAX_STEPS = 8
DEAD = 0  # neuron of net.0 that is dead on every rank
HALF = 1  # neuron of net.0 that is silent on rank 0's data and active on rank 1's


class RankModule(Classifier):
    """Saves each rank's final weights, first batch and resets to ``out_dir``.

    Its data: feature 0 is -3 on even samples and +3 on odd ones, and a non-shuffling DistributedSampler gives
    rank 0 the even samples and rank 1 the odd ones. Neuron ``HALF`` of ``net.0`` reads only feature 0, so it
    never fires on rank 0 and always fires on rank 1: only scores synced across ranks keep it (and keep the
    ranks equal).
    """

    def __init__(self, out_dir: str) -> None:
        torch.manual_seed(0)
        super().__init__(mlp((6, 16, 16, 3)), lr=1e-2)
        self.out_dir = out_dir
        plant_dead_neuron(self.net[0], DEAD)
        with torch.no_grad():
            self.net[0].weight[HALF] = 0.0
            self.net[0].weight[HALF, 0] = 1.0
            self.net[0].bias[HALF] = 0.0
        self.first_batch = None

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, 6, generator=g)
        x[:, 0] = torch.where(torch.arange(64) % 2 == 0, -3.0, 3.0)
        y = torch.randint(0, 3, (64,), generator=g)
        data = TensorDataset(x, y)
        sampler = DistributedSampler(data, num_replicas=self.trainer.world_size, rank=self.global_rank, shuffle=False)
        return DataLoader(data, batch_size=8, sampler=sampler)

    def on_train_batch_start(self, batch, batch_idx):
        if self.first_batch is None:
            self.first_batch = batch[0].clone()

    def saved_seed(self):
        return self.trainer.callbacks[0].state_dict()["seed"]

    def on_train_end(self):
        recorder = next(c for c in self.trainer.callbacks if isinstance(c, ResetRecorder))
        torch.save(
            {
                "state_dict": {k: v.detach().cpu().clone() for k, v in self.state_dict().items()},
                "first_batch": self.first_batch,
                "resets": recorder.resets,
                "seed": self.saved_seed(),
                "world_size": self.trainer.world_size,
            },
            Path(self.out_dir) / f"rank{self.global_rank}.pt",
        )


class ResetRecorder(pl.Callback):
    """Placed after the reset callback: the number of neurons it reset at each reset step."""

    def __init__(self) -> None:
        self.resets: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % RESET_EVERY == 0:
            self.resets[trainer.global_step] = trainer.callbacks[0].last_metrics["reset/neurons"]


class UnsyncedReDo(ReDo):
    """Control: ReDo whose metrics do not sync across ranks (each rank decides on its own data)."""

    def on_fit_start(self, trainer, pl_module):
        super().on_fit_start(trainer, pl_module)
        for track in self._tracks:
            track.metric.sync_on_compute = False


def make_callback(kind: str) -> pl.Callback:
    if kind == "grama-weight":
        return ReGraMa(tau=0.01, reset_every_n_steps=RESET_EVERY, log_every_n_steps=2)
    if kind == "grama-output":
        return ReGraMa(tau=0.01, reset_every_n_steps=RESET_EVERY, score="output", log_every_n_steps=2)
    if kind == "redo":
        return ReDo(tau=0.1, reset_every_n_steps=RESET_EVERY, log_every_n_steps=2)
    return UnsyncedReDo(tau=0.1, reset_every_n_steps=RESET_EVERY, log_every_n_steps=2)


KINDS = ["grama-weight", "grama-output", "redo", "unsynced-redo"]


def _worker(rank: int, out_dir: str, port: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD), RANK=str(rank), LOCAL_RANK=str(rank)
    )
    os.environ["NODE_RANK"] = "0"
    os.environ.pop("PL_GLOBAL_SEED", None)  # else Lightning's DDP set-up re-seeds every rank alike
    torch.set_num_threads(1)
    for kind in KINDS:
        out = Path(out_dir) / kind
        out.mkdir(parents=True, exist_ok=True)
        model = RankModule(str(out))  # the same initial weights on every rank
        # A different global seed on each rank (nothing else draws from it: no shuffling, no dropout), so the
        # re-draws agree only if the callback's default seed is taken from rank 0.
        torch.manual_seed(1000 + rank)
        # A short collective timeout: a rank stuck in a collective the other never joins fails instead of hanging.
        strategy = DDPStrategy(timeout=timedelta(seconds=120))
        t = trainer([make_callback(kind), ResetRecorder()], max_steps=MAX_STEPS, strategy=strategy, devices=WORLD)
        t.fit(model)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, list[dict]]:
    out_dir = tmp_path_factory.mktemp("ddp")
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(_worker, args=(str(out_dir), _free_port()), nprocs=WORLD, join=True, start_method=method)
    return {
        kind: [torch.load(out_dir / kind / f"rank{r}.pt", weights_only=True) for r in range(WORLD)] for kind in KINDS
    }


@pytest.mark.parametrize("kind", ["grama-weight", "grama-output", "redo"])
def test_ddp_resets_keep_ranks_identical(runs, kind):
    ranks = runs[kind]
    assert [r["world_size"] for r in ranks] == [WORLD, WORLD]
    # Each rank saw different data: rank 0 the even samples, rank 1 the odd ones.
    assert torch.all(ranks[0]["first_batch"][:, 0] == -3.0)
    assert torch.all(ranks[1]["first_batch"][:, 0] == 3.0)

    # The re-draw seed is rank 0's (its global seed), on both ranks.
    assert [r["seed"] for r in ranks] == [1000, 1000]

    # Resets happened, and both ranks reset the same number of neurons at the same steps.
    assert ranks[0]["resets"] == ranks[1]["resets"]
    assert sorted(ranks[0]["resets"]) == [4, 8]
    assert ranks[0]["resets"][4] >= 1

    # The final weights are bitwise identical on both ranks.
    for name, value in ranks[0]["state_dict"].items():
        other = ranks[1]["state_dict"][name]
        assert torch.equal(value, other), f"{name}: max diff {(value - other).abs().max()}"

    final = ranks[0]["state_dict"]
    # The neuron dead everywhere was re-drawn (its planted bias is -10; a fresh one is within 1/sqrt(6)) ...
    assert abs(float(final["net.0.bias"][DEAD])) < 1.0
    assert torch.count_nonzero(final["net.0.weight"][DEAD]) > 0
    # ... while the neuron active only on rank 1 was kept: it is active on the union of the ranks' data.
    assert float(final["net.0.weight"][HALF, 0]) > 0.5


def test_control_unsynced_scores_would_split_the_ranks(runs):
    """The set-up is sensitive to syncing: deciding on each rank's own data resets ``HALF`` on rank 0 only."""
    ranks = runs["unsynced-redo"]
    assert ranks[0]["resets"][4] > ranks[1]["resets"][4]
    assert float(ranks[0]["state_dict"]["net.0.weight"][HALF, 0]) < 0.5  # re-drawn on rank 0
    assert float(ranks[1]["state_dict"]["net.0.weight"][HALF, 0]) > 0.5  # kept on rank 1
    assert not torch.equal(ranks[0]["state_dict"]["net.0.weight"], ranks[1]["state_dict"]["net.0.weight"])
