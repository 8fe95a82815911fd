"""Two-process CPU DDP with the toolkit's callbacks: what they change stays identical across ranks.

Each rank sees other data (test_ddp's RankModule) and has another global seed, so the ranks agree only if the
decisions come from synced measurements and the random draws from rank 0's seed.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy
from test_ddp import WORLD, RankModule, ResetRecorder, _free_port, trainer
from torch import multiprocessing as mp

from regrama_lightning import ContinualBackprop, L2Init, NeuronPruning, ReBorn, ShrinkPerturb

KINDS = {
    "cbp": lambda: ContinualBackprop(replacement_rate=0.05, maturity_threshold=1, replace_every_n_steps=4),
    "reborn": lambda: ReBorn(tau=0.5, beta=1.5, reset_every_n_steps=4, log_every_n_steps=2),
    "prune": lambda: NeuronPruning(tau=0.3, reset_every_n_steps=4, log_every_n_steps=2),
    "snp": lambda: ShrinkPerturb(shrink=0.99, sigma=0.01),
    "l2init": lambda: L2Init(strength=0.1),
}


class ToolkitRankModule(RankModule):
    """test_ddp's module, saving what every toolkit callback has (not all keep a seed)."""

    def saved_seed(self):
        return getattr(self.trainer.callbacks[0], "_seed", None)


class Recorder(ResetRecorder):
    """Neurons acted on at each step the callback logged some (none for the parameter-level methods)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        acted = getattr(trainer.callbacks[0], "last_metrics", {}).get("reset/neurons")
        if acted is not None:
            self.resets[trainer.global_step] = acted


def _worker(rank: int, out_dir: str, port: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD), RANK=str(rank), LOCAL_RANK=str(rank)
    )
    os.environ["NODE_RANK"] = "0"
    os.environ.pop("PL_GLOBAL_SEED", None)
    torch.set_num_threads(1)
    for kind, make in KINDS.items():
        out = Path(out_dir) / kind
        out.mkdir(parents=True, exist_ok=True)
        model = ToolkitRankModule(str(out))
        torch.manual_seed(1000 + rank)
        callback = make()
        strategy = DDPStrategy(timeout=timedelta(seconds=120))
        trainer([callback, Recorder()], max_steps=8, strategy=strategy, devices=WORLD).fit(model)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, list[dict]]:
    out_dir = tmp_path_factory.mktemp("toolkit_ddp")
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(_worker, args=(str(out_dir), _free_port()), nprocs=WORLD, join=True, start_method=method)
    return {
        kind: [torch.load(out_dir / kind / f"rank{r}.pt", weights_only=True) for r in range(WORLD)] for kind in KINDS
    }


@pytest.mark.parametrize("kind", list(KINDS))
def test_toolkit_changes_keep_ranks_identical(runs, kind):
    ranks = runs[kind]
    assert torch.all(ranks[0]["first_batch"][:, 0] == -3.0) and torch.all(ranks[1]["first_batch"][:, 0] == 3.0)
    for name, value in ranks[0]["state_dict"].items():
        other = ranks[1]["state_dict"][name]
        assert torch.equal(value, other), f"{name}: max diff {(value - other).abs().max()}"
    if kind in ("cbp", "reborn", "prune"):
        assert sum(ranks[0]["resets"].values()) >= 1, "the callback never acted"
    if kind == "snp":
        assert [r["seed"] for r in ranks] == [1000, 1000]  # rank 0's seed on both ranks
