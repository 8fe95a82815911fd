"""Resuming from a checkpoint continues the reset schedule and re-draws exactly as an uninterrupted run."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from helpers import Classifier, loader, mlp, plant_dead_neuron, trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from regrama_lightning import ReDo, ReGraMa

RESET_EVERY = 3
MAX_STEPS = 11
DEAD = (0, 5)  # (Linear index in the Sequential, neuron) of the neuron made dead before every reset step


class Replanting(Classifier):
    """Kills one neuron at the start of every reset step, so that every reset step really resets it.

    Between two reset steps the re-drawn neuron trains normally, so every re-draw (and every zeroed optimizer
    state entry) leaves its mark on the final weights: a reset at a wrong step or with a wrong seed changes them.
    """

    def on_train_batch_start(self, batch, batch_idx):
        if (self.trainer.global_step + 1) % RESET_EVERY == 0:
            plant_dead_neuron(self.net[DEAD[0]], DEAD[1])


def make_model() -> Classifier:
    return Replanting(mlp((6, 16, 16, 3)), lr=1e-2)


CALLBACKS = {
    "grama-weight": lambda seed: ReGraMa(tau=0.01, reset_every_n_steps=RESET_EVERY, log_every_n_steps=1, seed=seed),
    "grama-output": lambda seed: ReGraMa(
        tau=0.01, reset_every_n_steps=RESET_EVERY, score="output", log_every_n_steps=1, seed=seed
    ),
    "redo": lambda seed: ReDo(tau=0.1, reset_every_n_steps=RESET_EVERY, log_every_n_steps=1, seed=seed),
}


class ResetLog(pl.Callback):
    """Records, after the reset callback, the steps at which the planted neuron's incoming row was re-drawn."""

    def __init__(self) -> None:
        self.redrawn: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        layer = pl_module.net[DEAD[0]]
        # A planted bias is about -10 (Adam may move it a little); a re-drawn one is within 1/sqrt(fan_in).
        if trainer.global_step % RESET_EVERY == 0 and abs(float(layer.bias.detach()[DEAD[1]])) < 1.0:
            self.redrawn.append(trainer.global_step)


def fit(callback, batches_per_epoch, max_steps=MAX_STEPS, ckpt_path=None, checkpoint_every=None, dirpath=None):
    """Train with ``batches_per_epoch`` batches per epoch (no shuffling); return the model and the trainer."""
    model = make_model()
    callbacks = [callback, ResetLog()]
    kwargs = {}
    if checkpoint_every is not None:
        callbacks.append(
            ModelCheckpoint(dirpath=dirpath, filename="{step}", every_n_train_steps=checkpoint_every, save_top_k=-1)
        )
        kwargs["enable_checkpointing"] = True
    t = trainer(callbacks, max_steps=max_steps, **kwargs)
    t.fit(model, loader(n=8 * batches_per_epoch, batch=8), ckpt_path=ckpt_path)
    return model, t


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# A checkpoint at the end of an epoch (Lightning resumes mid-epoch only with resumable data loaders).
# (5, 5): the first batch after resuming (step 6) is a reset step, and the callback traces that very batch.
# (3, 6): the checkpoint is taken right after a reset (step 6); the next reset is step 9.
@pytest.mark.parametrize(("batches_per_epoch", "ckpt_step"), [(5, 5), (3, 6)])
@pytest.mark.parametrize("kind", sorted(CALLBACKS))
def test_resume_matches_uninterrupted_run(tmp_path, kind, batches_per_epoch, ckpt_step):
    pl.seed_everything(0)
    full, full_trainer = fit(
        CALLBACKS[kind](7), batches_per_epoch, checkpoint_every=ckpt_step, dirpath=tmp_path / "ckpt"
    )
    assert full_trainer.global_step == MAX_STEPS
    reference = state(full)
    # Every reset step reset the planted neuron (the schedule the resumed run must reproduce).
    assert full_trainer.callbacks[1].redrawn == [3, 6, 9]
    assert full_trainer.callbacks[0]._steps == [MAX_STEPS]

    ckpt = tmp_path / "ckpt" / f"step={ckpt_step}.ckpt"
    assert ckpt.exists(), sorted(p.name for p in (tmp_path / "ckpt").iterdir())

    pl.seed_everything(0)
    resumed, resumed_trainer = fit(CALLBACKS[kind](7), batches_per_epoch, ckpt_path=str(ckpt))
    assert resumed_trainer.global_step == MAX_STEPS
    assert resumed_trainer.callbacks[0]._steps == [MAX_STEPS]
    assert resumed_trainer.callbacks[1].redrawn == [s for s in (3, 6, 9) if s > ckpt_step]
    assert resumed_trainer.callbacks[0].last_metrics["reset/neurons"] >= 1

    got = state(resumed)
    assert got.keys() == reference.keys()
    for name in reference:
        assert torch.equal(got[name], reference[name]), f"{name}: max diff {(got[name] - reference[name]).abs().max()}"


def test_resume_without_resets_differs_from_a_run_with_resets():
    """Sanity check of the set-up above: the resets do change the final weights."""
    pl.seed_everything(0)
    with_resets, _ = fit(CALLBACKS["grama-weight"](7), 5)
    pl.seed_everything(0)
    measured_only, _ = fit(ReGraMa(tau=0.01, reset_every_n_steps=None, log_every_n_steps=1, seed=7), 5)
    a, b = state(with_resets), state(measured_only)
    assert not torch.equal(a["net.0.weight"], b["net.0.weight"])


def test_resume_restores_the_default_seed(tmp_path):
    """With ``seed=None`` the re-draw seed is taken at the first fit and must come back from the checkpoint.

    The resumed process has a different global seed (nothing else depends on it: the weights come from the
    checkpoint and the data is not shuffled), so only the checkpointed seed can reproduce the re-draws.
    """
    pl.seed_everything(0)
    full, _ = fit(CALLBACKS["grama-weight"](None), 5, checkpoint_every=5, dirpath=tmp_path / "ckpt")
    ckpt = torch.load(tmp_path / "ckpt" / "step=5.ckpt", weights_only=True)
    key = CALLBACKS["grama-weight"](None).state_key
    assert ckpt["callbacks"][key]["seed"] == 0  # torch.initial_seed() after seed_everything(0)

    pl.seed_everything(1)
    resumed, resumed_trainer = fit(CALLBACKS["grama-weight"](None), 5, ckpt_path=str(tmp_path / "ckpt" / "step=5.ckpt"))
    assert resumed_trainer.callbacks[0].state_dict()["seed"] == 0
    reference, got = state(full), state(resumed)
    for name in reference:
        assert torch.equal(got[name], reference[name]), f"{name}: max diff {(got[name] - reference[name]).abs().max()}"


@pytest.mark.parametrize("kind", sorted(CALLBACKS))
def test_callback_state_round_trips_through_a_weights_only_checkpoint(tmp_path, kind):
    pl.seed_everything(0)
    callback = CALLBACKS[kind](11)
    _, t = fit(callback, 5, max_steps=7)
    path = tmp_path / "manual.ckpt"
    t.save_checkpoint(path)

    ckpt = torch.load(path, weights_only=True)  # only tensors and primitives in the whole checkpoint
    saved = ckpt["callbacks"][callback.state_key]
    # 7 optimizer steps; resets at steps 3 and 6 (one optimizer -> one reset each).
    assert saved == {"steps": [7], "seed": 11, "resets": 2, "requested": [], "action": {}}
    assert all(type(v) in (int, float, str, bool, list, dict) for v in saved.values())

    fresh = CALLBACKS[kind](None)
    fresh.load_state_dict(saved)
    assert fresh.state_dict() == saved
    assert fresh._steps == [7]
