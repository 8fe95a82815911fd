"""Defects of the callback machinery, each checked against a computation of its own (issue: every architecture)."""

from __future__ import annotations

import functools
import math
import subprocess
import sys

import lightning.pytorch as pl
import pytest
import torch
from helpers import Classifier, loader, mlp, plant_dead_neuron, trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from test_manual_optimization import SAC, replay
from torch import nn
from torch.nn import functional as F  # noqa: N812

from regrama_lightning import ReDo, ReGraMa, orthogonal_init, reset_neurons, trace_topology, weight_grad_magnitude


class Frozen(Classifier):
    """SGD with lr 0: parameters only change by resets, so scores and resets can be recomputed by hand."""

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def normalized(magnitude: torch.Tensor) -> torch.Tensor:
    return magnitude / (magnitude.mean() + 1e-9)


# -- 1. measure-only layers need no readers; a refusal offers every fix that works ------------------------------
class ResidualIntoGRU(nn.Module):
    """``inp`` and ``fc2`` write a residual stream read by a GRU (unmapped) and ``out``; ``fc2`` alone reads ``fc1``."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 8)
        self.gru, self.head, self.out = nn.GRU(8, 4, batch_first=True), nn.Linear(4, 3), nn.Linear(8, 3)

    def forward(self, x):
        h = self.inp(x)
        h = h + self.fc2(F.relu(self.fc1(h)))
        return self.head(self.gru(h.unsqueeze(1))[0][:, -1]) + self.out(h)


def test_residual_writers_with_unmapped_readers_are_measured_and_the_rest_reset():
    torch.manual_seed(0)
    model = Frozen(ResidualIntoGRU())
    plant_dead_neuron(model.net.fc1, 2)
    callback = ReGraMa(reset_every_n_steps=2, log_every_n_steps=1)  # defaults otherwise: residual="measure"
    data = loader(n=48)
    trainer([callback], max_steps=3).fit(model, data)
    assert {"net.inp", "net.fc1", "net.fc2"} <= set(callback.scored)
    assert callback.layers["net.fc2"].writes_residual and callback.layers["net.fc2"].unmapped_readers
    # fc1's dead neuron was reset: fresh incoming row, zero outgoing column in fc2 (lr 0 keeps both as reset).
    assert abs(model.net.fc1.bias[2].item()) < 1 / math.sqrt(8) and model.net.fc1.weight[2].abs().sum() > 0
    assert torch.equal(model.net.fc2.weight[:, 2], torch.zeros(8))
    # The measure-only layer's score is |W.grad| of the last batch (after the reset), normalised (by hand).
    x, y = list(data)[2]
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    torch.testing.assert_close(callback.latest_scores["net.fc2"], normalized(weight_grad_magnitude(model.net.fc2)))


class EncoderGRU(Classifier):
    def __init__(self) -> None:
        super().__init__(nn.Identity())
        self.enc, self.gru, self.head = nn.Linear(6, 8), nn.GRU(8, 4, batch_first=True), nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.gru(F.relu(self.enc(x)).unsqueeze(1))[0][:, -1])


def test_a_refused_reset_offers_every_fix_and_each_one_works():
    with pytest.raises(ValueError, match="Cannot tell which weights read layers") as error:
        trainer([ReGraMa(reset_every_n_steps=1)], max_steps=1).fit(EncoderGRU(), loader())
    message = str(error.value)
    assert "Either" not in message
    fixes = {
        "exclude=": {"exclude": ["enc"], "include_output_layers": True},
        "zero_outgoing=False": {"zero_outgoing": False},
        "reset_every_n_steps=None": {"reset_every_n_steps": None},
    }
    for text, arguments in fixes.items():
        assert text in message
        callback = ReGraMa(**{"reset_every_n_steps": 1, **arguments})
        trainer([callback], max_steps=2).fit(EncoderGRU(), loader())
        assert callback.scored, text
    assert 'residual="measure"' not in message  # enc writes no residual stream: that would not help


def test_a_residual_writer_reset_under_residual_reset_is_offered_residual_measure():
    with pytest.raises(ValueError, match='residual="measure"'):
        trainer([ReGraMa(reset_every_n_steps=1, residual="reset")], max_steps=1).fit(
            Frozen(ResidualIntoGRU()), loader()
        )


# -- 7. lazy modules --------------------------------------------------------------------------------------------
def test_lazy_linear_is_scored_once_materialised():
    torch.manual_seed(0)
    model = Frozen(nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.Linear(8, 3)))
    callback = ReGraMa(reset_every_n_steps=None, log_every_n_steps=1)
    data = loader(n=48)
    trainer([callback], max_steps=3).fit(model, data)
    assert callback.scored == ["net.0"]
    x, y = list(data)[2]
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    torch.testing.assert_close(callback.latest_scores["net.0"], normalized(weight_grad_magnitude(model.net[0])))


# -- 9. re-draws differ between layers and optimizers -----------------------------------------------------------
class TwinCritics(pl.LightningModule):
    """Two identical critics, each with its own optimizer, each with the same neuron planted dead."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        torch.manual_seed(0)
        self.q1 = mlp((6, 8, 1))
        self.q2 = mlp((6, 8, 1))
        self.q2.load_state_dict(self.q1.state_dict())
        for q in (self.q1, self.q2):
            plant_dead_neuron(q[0], 3)

    def training_step(self, batch, batch_idx):
        x, y = batch
        for q, opt in zip((self.q1, self.q2), self.optimizers(), strict=True):
            opt.zero_grad()
            self.manual_backward(F.mse_loss(q(x).squeeze(-1), y.float()))
            opt.step()

    def configure_optimizers(self):
        return [torch.optim.SGD(self.q1.parameters(), lr=0.0), torch.optim.SGD(self.q2.parameters(), lr=0.0)]


def _twin_rows(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    model = TwinCritics()
    callback = ReGraMa(reset_every_n_steps=1, include_output_layers=False, seed=seed)
    trainer([callback], max_steps=-1, max_epochs=1).fit(model, loader(n=16))
    assert callback.resets == 2  # one per optimizer
    return model.q1[0].weight[3].detach().clone(), model.q2[0].weight[3].detach().clone()


def test_twin_critics_get_independent_redraws_the_same_in_every_run():
    q1, q2 = _twin_rows(seed=5)
    assert q1.abs().sum() > 0 and q2.abs().sum() > 0  # both re-drawn from zero
    assert not torch.equal(q1, q2)
    again = _twin_rows(seed=5)
    assert torch.equal(again[0], q1) and torch.equal(again[1], q2)


# -- 10. a resumed run resets exactly what the uninterrupted run resets ------------------------------------------
def _sac_fit(epochs: int, ckpt_path=None, dirpath=None, signal: str = "weight"):
    torch.manual_seed(0)
    model = SAC(policy_delay=2, first_actor_step=2)  # the actor runs in the second batch of each epoch only
    callback = (
        ReDo(tau=0.5, reset_every_n_steps=3, log_every_n_steps=1, seed=1)
        if signal == "activation"
        else ReGraMa(tau=0.5, reset_every_n_steps=3, log_every_n_steps=1, seed=1, score=signal)
    )
    callbacks = [callback]
    if dirpath is not None:
        callbacks.append(ModelCheckpoint(dirpath=dirpath, every_n_epochs=1, save_top_k=-1, filename="{epoch}"))
    t = trainer(callbacks, max_steps=-1, max_epochs=epochs, enable_checkpointing=dirpath is not None)
    t.fit(model, replay(n_batches=2), ckpt_path=ckpt_path)
    return model, callback


@pytest.mark.parametrize("signal", ["weight", "activation"])
def test_resume_resets_a_delayed_actor_as_the_uninterrupted_run(tmp_path, signal):
    full, callback = _sac_fit(4, signal=signal)
    assert callback._steps == [8, 4] and callback.resets == 2 + 1  # critic steps 3, 6; actor step 3
    _sac_fit(2, dirpath=tmp_path, signal=signal)  # critic steps 4, actor 2: between resets
    resumed, again = _sac_fit(4, ckpt_path=str(tmp_path / "epoch=1.ckpt"), signal=signal)
    assert again._steps == [8, 4]
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


# -- 11. a second fit counts its own steps ----------------------------------------------------------------------
def test_a_second_fit_of_the_same_callback_starts_its_schedule_afresh():
    callback = ReGraMa(reset_every_n_steps=2, log_every_n_steps=1, seed=0)
    trainer([callback], max_steps=3).fit(Classifier(mlp()), loader())
    assert callback._steps == [3] and callback.resets == 1
    model = Frozen(mlp((6, 8, 8, 3)))
    plant_dead_neuron(model.net[0], 4)
    redrawn = []

    class Watch(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if model.net[0].weight[4].abs().sum() > 0:
                redrawn.append(batch_idx + 1)

    trainer([callback, Watch()], max_steps=3).fit(model, loader())
    assert callback._steps == [3] and callback.resets == 1
    assert redrawn[0] == 2  # this fit's own step 2 (a continued count would have reset at its step 1)


# -- 12. stable, distinct checkpoint keys ----------------------------------------------------------------------
def _init_a(module):
    orthogonal_init(module, gain=1.0)


def test_state_keys_are_distinct_for_lambdas_and_free_of_addresses():
    first = ReGraMa(init_fn=lambda m: orthogonal_init(m))
    second = ReGraMa(init_fn=lambda m: _init_a(m))  # another lambda, on another line
    assert first.state_key != second.state_key
    trainer([first, second], max_steps=1)  # Lightning refuses duplicate keys at construction
    partial = ReGraMa(init_fn=functools.partial(orthogonal_init, gain=1.0)).state_key
    assert "0x" not in partial and "orthogonal_init" in partial
    named = ReGraMa(init_fn=lambda m: None, name="critic-resets")
    assert named.state_key == "ReGraMa[name=critic-resets]"
    with pytest.raises(ValueError, match="`name`"):
        ReGraMa(name="")


def test_state_key_is_the_same_in_another_process():
    code = (
        "import functools; from regrama_lightning import ReGraMa, orthogonal_init;"
        "print(ReGraMa(init_fn=functools.partial(orthogonal_init, gain=1.0)).state_key)"
    )
    keys = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout}
    here = ReGraMa(init_fn=functools.partial(orthogonal_init, gain=1.0)).state_key
    assert keys == {here + "\n"}


# -- issue 17.1: the re-draw copies no user module --------------------------------------------------------------
class GeneratorLinear(nn.Linear):
    """A layer holding something that cannot be deep-copied."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.stream = (i for i in range(3))


def test_a_layer_holding_a_generator_is_reset_from_its_own_initialisation():
    torch.manual_seed(0)
    net = nn.Sequential(GeneratorLinear(5, 6), nn.ReLU(), nn.Linear(6, 2))
    layer = trace_topology(net, lambda: net(torch.randn(4, 5)))["0"]
    before = net[0].weight.detach().clone()
    stream = net[0].stream
    mask = torch.zeros(6, dtype=torch.bool)
    mask[1] = True
    assert int(reset_neurons(layer, mask, seed=9)) == 1
    reference = nn.Linear(5, 6)
    torch.manual_seed(9)
    reference.reset_parameters()  # the same draw, on a plain layer of the same shape
    torch.testing.assert_close(net[0].weight[1], reference.weight[1], rtol=0, atol=0)
    torch.testing.assert_close(net[0].bias[1], reference.bias[1], rtol=0, atol=0)
    assert torch.equal(net[0].weight[mask.logical_not()], before[mask.logical_not()])
    assert net[0].stream is stream and next(stream) == 0
    assert torch.equal(net[2].weight[:, 1], torch.zeros(2))


# -- 13. torch.compile: the callback's machinery stays out of compiled graphs ------------------------------------
def test_a_compiled_model_compiles_once_without_graph_breaks_and_scores_as_eager():
    from torch._dynamo.utils import counters

    def fit(compiled: bool):
        torch.manual_seed(0)
        net = mlp((6, 16, 16, 3))
        model = Frozen(torch.compile(net) if compiled else net)
        callbacks = [
            ReGraMa(score="output", reset_every_n_steps=None, log_every_n_steps=2),
            ReDo(reset_every_n_steps=None, log_every_n_steps=2),
        ]
        trainer(callbacks, max_steps=6).fit(model, loader(n=96))
        return [c.latest_scores for c in callbacks]

    torch._dynamo.reset()
    counters.clear()
    compiled = fit(compiled=True)
    assert dict(counters["graph_break"]) == {}
    assert counters["frames"]["total"] == 1  # the model's forward, compiled once: no recompile
    for got, expected in zip(compiled, fit(compiled=False), strict=True):
        assert got.keys() == expected.keys() == {"net.0", "net.2"}
        for name in got:
            torch.testing.assert_close(got[name], expected[name])
