"""Models beyond MLP/CNN/residual: every score and reset checked against an independent computation.

One test (or parametrized group) per case of the tracer's known gaps: activations behind non-elementwise ops,
taint where paths meet, readers that are not Linear/Conv, readers of other optimizers or frozen, attention,
layers that first run later, LBFGS, in-place zero_grad, state keys, argument checks, non-finite logging.
"""

from __future__ import annotations

import logging
import math

import lightning.pytorch as pl
import pytest
import torch
from helpers import Classifier, loader, mlp, plant_dead_neuron, trainer
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.nn import functional as F  # noqa: N812
from torch.utils.data import DataLoader, TensorDataset

from regrama_lightning import ReDo, ReGraMa, trace_topology, weight_grad_magnitude
from regrama_lightning.tracing import ActivationProbe

EPS = 1e-9


def normalized(magnitude: torch.Tensor) -> torch.Tensor:
    return magnitude / (magnitude.mean() + EPS)


class Frozen(Classifier):
    """SGD with lr 0: parameters never move, so a score can be recomputed by hand from the same weights."""

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def redo_scores(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    callback = ReDo(tau=0.1, reset_every_n_steps=None, log_every_n_steps=1)
    twice = DataLoader(TensorDataset(torch.cat([x, x]), torch.cat([y, y])), batch_size=len(x))
    trainer([callback], max_steps=2).fit(Frozen(net), twice)  # batch 2 is measured by the probe, not the tracer
    return callback.latest_scores


# -- 1. ReDo follows the activation through pooling, transposes, adds and products --------------------------
class PoolThenRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(torch.flatten(F.relu(F.max_pool2d(self.conv(x), 2)), 1))

    def by_hand(self, x):
        return {"net.conv": F.relu(F.max_pool2d(self.conv(x), 2)).abs().mean((0, 2, 3))}


class TransposeThenRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv1d(3, 4, 3, padding=1), nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(F.relu(self.conv(x).transpose(1, 2)).mean(1))

    def by_hand(self, x):
        return {"net.conv": F.relu(self.conv(x).transpose(1, 2)).abs().mean((0, 1))}


class PositionalThenRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.fc = nn.Linear(3, 4), nn.Linear(4, 3)
        self.pos = nn.Parameter(torch.randn(8, 4) * 3)

    def forward(self, x):
        return self.fc(F.relu(self.inp(x.transpose(1, 2)) + self.pos).mean(1))

    def by_hand(self, x):
        return {"net.inp": F.relu(self.inp(x.transpose(1, 2)) + self.pos).abs().mean((0, 1))}


class HandSwish(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.fc = nn.Linear(24, 4), nn.Linear(4, 3)

    def forward(self, x):
        h = self.inp(x.flatten(1))
        return self.fc(h * torch.sigmoid(h))

    def by_hand(self, x):
        h = self.inp(x.flatten(1))
        return {"net.inp": (h * torch.sigmoid(h)).abs().mean(0)}


@pytest.mark.parametrize("make", [PoolThenRelu, TransposeThenRelu, PositionalThenRelu, HandSwish])
def test_redo_measures_the_activation_behind_any_mapped_op(make):
    torch.manual_seed(0)
    net = make()
    neuron_layer = net.conv if hasattr(net, "conv") else net.inp
    plant_dead_neuron(neuron_layer, 1) if isinstance(neuron_layer, nn.Linear) else _plant_dead_channel(neuron_layer, 1)
    x = torch.randn(16, 3, 8) if not isinstance(net, PoolThenRelu) else torch.randn(16, 3, 8, 8)
    y = torch.randint(0, 3, (16,))
    scores = redo_scores(net, x, y)
    with torch.no_grad():
        expected = {k: normalized(v) for k, v in net.by_hand(x).items()}
    for name, want in expected.items():
        torch.testing.assert_close(scores[name], want, rtol=1e-5, atol=1e-6)
    if not isinstance(net, HandSwish):  # relu: the planted neuron is dead (swish(-10) is small, not zero)
        assert scores[next(iter(expected))][1] == 0


def _plant_dead_channel(conv: nn.Module, channel: int) -> None:
    with torch.no_grad():
        conv.weight[channel] = 0.0
        conv.bias[channel] = -10.0


def test_redo_refuses_an_activation_it_cannot_split_per_neuron():
    class FlattenThenRelu(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 8 * 8, 3)

        def forward(self, x):
            return self.fc(F.relu(torch.flatten(self.conv(x), 1)))

    layers = trace_topology(net := FlattenThenRelu(), lambda: net(torch.randn(2, 3, 8, 8)))
    assert "no dimension holds each neuron once" in layers["conv"].activation.error
    with pytest.raises(ValueError, match=r"ReDo cannot measure the activations of layers \['net.conv'\]"):
        trainer([ReDo()], max_steps=1).fit(Classifier(FlattenThenRelu()), loader(shape=(3, 8, 8)))
    # ReGraMa does not need the activation: the same model is fine there.
    callback = ReGraMa(reset_every_n_steps=1)
    trainer([callback], max_steps=1).fit(Classifier(FlattenThenRelu()), loader(shape=(3, 8, 8)))
    assert callback.scored == ["net.conv"]


# -- 2. Taint survives the meeting of an unmapped and a mapped path -----------------------------------------
class AttentionAndSkip(nn.Module):
    def __init__(self, meet: str):
        super().__init__()
        self.meet = meet
        self.a = nn.Linear(6, 8)
        self.b = nn.Linear(16 if meet == "cat" else 8, 3)

    def forward(self, x):
        h = F.relu(self.a(x))
        attended = torch.softmax(h @ h.T, -1) @ h  # an op the tracer cannot map to columns
        return self.b(torch.cat([attended, h], -1) if self.meet == "cat" else h + attended)


@pytest.mark.parametrize("meet", ["cat", "add"])
def test_unmapped_reader_survives_a_mapped_path(meet):
    net = AttentionAndSkip(meet)
    layers = trace_topology(net, lambda: net(torch.randn(5, 6)))
    assert ("b", "matmul") in layers["a"].unmapped_readers
    with pytest.raises(ValueError, match=r"Cannot tell which weights read layers \['net.a'\]"):
        trainer([ReGraMa(reset_every_n_steps=1)], max_steps=1).fit(Classifier(AttentionAndSkip(meet)), loader())


# -- 3. Readers that are not Linear/Conv ----------------------------------------------------------------------
class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(3, 4, 3, padding=1)
        self.dec = nn.ConvTranspose2d(4, 2, 2, stride=2)
        self.proj = nn.Linear(6, 5)
        self.w_at = nn.Parameter(torch.randn(5, 3))  # read as h @ W
        self.w_lin = nn.Parameter(torch.randn(3, 5))  # read as F.linear(h, W)

    def forward(self, x):
        image = self.dec(F.relu(self.enc(x)))
        h = F.relu(self.proj(image.mean((2, 3)).repeat(1, 3)))
        return h @ self.w_at + F.linear(h, self.w_lin)


def test_convtranspose_and_bare_weights_are_mapped_readers():
    net = Decoder()
    layers = trace_topology(net, lambda: net(torch.randn(2, 3, 4, 4)))
    (dec,) = layers["enc"].consumers
    assert (dec.name, dec.axis, dec.columns.tolist(), dec.neurons.tolist()) == ("dec", 0, [0, 1, 2, 3], [0, 1, 2, 3])
    assert not layers["enc"].is_output and not layers["proj"].is_output
    readers = {c.name: c for c in layers["proj"].consumers}
    assert sorted(readers) == ["w_at", "w_lin"] and readers["w_at"].axis == 0 and readers["w_lin"].axis == 1

    torch.manual_seed(0)
    net = Decoder()
    _plant_dead_channel(net.enc, 2)
    plant_dead_neuron(net.proj, 4)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    callback = ReGraMa(reset_every_n_steps=1, tau=0.0, score="output")
    trainer([callback], max_steps=1).fit(Frozen(net), loader(n=16, shape=(3, 4, 4)))
    after = net.state_dict()
    for layer, planted, rows in (("net.enc", 2, [("dec.weight", 0)]), ("net.proj", 4, [("w_at", 0), ("w_lin", 1)])):
        reset = callback.latest_scores[layer] <= 0.0  # the measurement the reset used
        assert reset[planted]
        for key, axis in rows:  # exactly the reset neurons' rows (ConvTranspose, h @ W) or columns (F.linear)
            zeroed = (after[key] == 0).flatten(1).all(1) if axis == 0 else (after[key] == 0).all(0)
            assert torch.equal(zeroed, reset), key
            kept = ~reset
            assert torch.equal(
                after[key].index_select(axis, kept.nonzero().flatten()),
                before[key].index_select(axis, kept.nonzero().flatten()),
            ), key


# -- 4. Readers owned by another optimizer, or frozen -------------------------------------------------------
class FrozenHead(Classifier):
    def __init__(self):
        torch.manual_seed(0)
        super().__init__(mlp((6, 8, 3)))
        self.net[2].requires_grad_(False)

    def configure_optimizers(self):
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.1)


def test_frozen_reader_is_a_reader_and_its_columns_are_zeroed():
    model = FrozenHead()
    plant_dead_neuron(model.net[0], 3)
    head = model.net[2].weight.detach().clone()
    callback = ReGraMa(reset_every_n_steps=1)
    trainer([callback], max_steps=1).fit(model, loader())
    assert callback.scored == ["net.0"]  # before: "no eligible layer" (the head's columns were dropped)
    assert (model.net[2].weight[:, 3] == 0).all()
    assert torch.equal(model.net[2].weight[:, [0, 1, 2, 4, 5, 6, 7]], head[:, [0, 1, 2, 4, 5, 6, 7]])


# -- 5. nn.MultiheadAttention.out_proj ------------------------------------------------------------------------
class Attention(Classifier):
    def __init__(self):
        torch.manual_seed(0)
        super().__init__(nn.Identity())
        self.inp = nn.Linear(6, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)
        self.kept: dict[str, torch.Tensor] = {}

    def forward(self, x):
        h = self.inp(x).view(x.shape[0], 2, 4).repeat(1, 1, 2)
        out, _ = self.attn(h, h, h)
        if out.requires_grad:
            out.retain_grad()
            self.kept["out"] = out
        return self.head(out.mean(1))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.parametrize("score", ["weight", "output"])
def test_attention_out_proj_is_scored(score, recwarn):
    model = Attention()
    callback = ReGraMa(reset_every_n_steps=None, score=score, log_every_n_steps=1)
    trainer([callback], max_steps=1).fit(model, loader(n=16))
    assert "attn.out_proj" in callback.scored
    assert not any("did not run" in str(w.message) for w in recwarn)
    if score == "weight":
        expected = normalized(weight_grad_magnitude(model.attn.out_proj))
    else:  # Eq. 2 by hand: per-sample |dL/dh| of the attention output, averaged over samples and positions
        expected = normalized(model.kept["out"].grad.abs().mean((0, 1)))
    torch.testing.assert_close(callback.latest_scores["attn.out_proj"], expected, rtol=1e-5, atol=1e-7)
    # Its input projection is no Linear: the layer feeding attention has an unmapped reader.
    assert any(op == "multi_head_attention_forward" for _, op in callback.layers["inp"].unmapped_readers)


# -- 6. A layer that first runs on a later batch ----------------------------------------------------------------
class LateBranch(Classifier):
    """``extra`` runs from the third batch on (a LayerDrop block or a routed expert coming into use)."""

    def __init__(self):
        torch.manual_seed(0)
        super().__init__(nn.Identity())
        self.a, self.extra, self.head = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3)
        self.batches = 0

    def on_train_batch_start(self, batch, batch_idx):
        self.batches += 1

    def forward(self, x):
        h = F.relu(self.a(x))
        if self.batches >= 3:
            h = F.relu(self.extra(h))
        return self.head(h)


def test_a_layer_first_run_later_is_traced_then(caplog):
    model = LateBranch()
    callback = ReGraMa(reset_every_n_steps=None, log_every_n_steps=1)
    with caplog.at_level(logging.INFO, logger="lightning.pytorch"):  # a benchmark test may have quietened it
        trainer([callback], max_steps=5).fit(model, loader(n=80))
    assert callback.scored == ["a", "extra"]
    # What is measured, said in words: first the layers found, then the one that joined when it first ran.
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ReGraMa ")]
    assert said == [
        "ReGraMa measures 1 layer (8 neurons): a; not run yet, measured once they run: extra",
        "ReGraMa now also measures 1 layer (8 neurons) that ran for the first time: extra",
    ]
    assert sorted(c.name for c in callback.layers["a"].consumers) == ["extra", "head"]
    assert [c.name for c in callback.layers["extra"].consumers] == ["head"]
    # Its score is the independent |W.grad| one of the last step.
    torch.testing.assert_close(
        callback.latest_scores["extra"], normalized(weight_grad_magnitude(model.extra)), rtol=1e-5, atol=1e-7
    )


# -- 7. LBFGS: one step per optimizer.step(), however many closure calls -------------------------------------
class LBFGSClassifier(Classifier):
    def configure_optimizers(self):
        return torch.optim.LBFGS(self.parameters(), lr=0.1, max_iter=5)


@pytest.mark.parametrize("make", [lambda: ReGraMa(reset_every_n_steps=2), lambda: ReDo(reset_every_n_steps=2)])
def test_lbfgs_counts_one_step_per_step_and_measures_its_last_closure(make):
    torch.manual_seed(0)
    callback = make()
    callback.log_every_n_steps = 1
    closures = []

    class CountClosures(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.x = batch[0]

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            with torch.no_grad():  # the closure's forward, by hand, with the parameters it ran with
                post = F.relu(pl_module.net[0](self.x)).abs().mean(0)
            closures.append((pl_module.net[0].weight.grad.abs().mean(1), post))

    model = LBFGSClassifier(mlp())
    t = trainer([CountClosures(), callback], max_steps=3)
    t.fit(model, loader())
    assert len(closures) > 3  # LBFGS evaluated its closure several times per step
    assert callback._steps == [3] and callback.resets == 1  # reset at step 2 only
    expected = closures[-1][0 if callback.signal == "weight" else 1]
    torch.testing.assert_close(callback.latest_scores["net.0"], normalized(expected), rtol=1e-5, atol=1e-7)


# -- 8. zero_grad(set_to_none=False) closes the gather window -------------------------------------------------
@pytest.mark.parametrize("make", [lambda: ReGraMa(score="output"), lambda: ReDo()])
def test_in_place_zero_grad_starts_a_new_window(make):
    class TwoLosses(Classifier):
        """A loss stepped by the optimizer, then a second backward after the step (as a SAC actor loss)."""

        def __init__(self):
            torch.manual_seed(0)
            super().__init__(mlp((6, 8, 3)))
            self.automatic_optimization = False
            self.kept = []

        def training_step(self, batch, batch_idx):
            opt = self.optimizers()
            x, y = batch
            opt.zero_grad(set_to_none=False)
            h = self.net[0](x)
            h.retain_grad()
            self.manual_backward(F.cross_entropy(self.net[2](self.net[1](h)), y))
            self.kept.append((h.grad.clone(), F.relu(h.detach())))
            opt.step()
            self.manual_backward(self.net(x * 3).pow(2).mean())  # after the step: the next zero_grad drops it

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    callback = make()
    callback.reset_every_n_steps, callback.log_every_n_steps = None, 1
    model = TwoLosses()
    trainer([callback], max_steps=3).fit(model, loader())
    grad, post = model.kept[-1]
    expected = grad.abs().mean(0) if callback.signal == "output" else post.abs().mean(0)
    torch.testing.assert_close(callback.latest_scores["net.0"], normalized(expected), rtol=1e-5, atol=1e-7)


# -- 9. state keys -----------------------------------------------------------------------------------------------
def test_callbacks_differing_only_in_other_options_have_distinct_state_keys():
    first, second = ReGraMa(exclude=["net.2"]), ReGraMa(exclude=["net.0"])
    third = ReGraMa(residual="reset")
    assert len({first.state_key, second.state_key, third.state_key, ReGraMa().state_key}) == 4
    pl.Trainer(callbacks=[first, second, third], logger=False)  # raised before: duplicate state keys


# -- 10. Argument checks ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eps": math.nan}, "`eps` must be a finite number"),
        ({"eps": math.inf}, "`eps` must be a finite number"),
        ({"eps": "1e-9"}, "`eps` must be a finite number"),
        ({"eps": 0.0}, "`eps` must be > 0"),
        ({"seed": "1"}, "`seed` must be an int or None"),
        ({"seed": True}, "`seed` must be an int or None"),
        ({"include_output_layers": 1}, "`include_output_layers` must be True or False"),
        ({"log_per_layer": "yes"}, "`log_per_layer` must be True or False"),
        ({"consumers": {"net.0": "net.2"}}, r"write \{'net.0': \['net.2'\]\}"),
        ({"consumers": [("net.0", ["net.2"])]}, "`consumers` must map a layer name"),
        ({"include": [0]}, "`include` must be a list of layer-name patterns"),
        ({"exclude": ["net.0", None]}, "`exclude` must be a list of layer-name patterns"),
    ],
)
def test_bad_arguments_are_refused_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ReGraMa(**kwargs)


def test_trainer_without_a_logging_period_is_refused_at_setup():
    with pytest.raises(ValueError, match=r"Trainer\(log_every_n_steps=0\).*ReGraMa\(log_every_n_steps=N\)"):
        trainer([ReGraMa()], max_steps=1, log_every_n_steps=0).fit(Classifier(mlp()), loader())
    callback = ReGraMa(log_every_n_steps=1)  # a period of its own is enough
    trainer([callback], max_steps=1, log_every_n_steps=0).fit(Classifier(mlp()), loader())
    assert "grama/ratio" in callback.last_metrics


def test_a_reader_with_weights_of_another_kind_suggests_only_what_is_right():
    class Recurrent(Classifier):
        def __init__(self):
            super().__init__(nn.Identity())
            self.enc, self.gru, self.head = nn.Linear(6, 8), nn.GRU(8, 4, batch_first=True), nn.Linear(4, 3)

        def forward(self, x):
            return self.head(self.gru(F.relu(self.enc(x)).unsqueeze(1))[0][:, -1])

    with pytest.raises(ValueError, match="Cannot tell which weights read layers") as error:
        trainer([ReGraMa(reset_every_n_steps=1)], max_steps=1).fit(Recurrent(), loader())
    assert "gru" in str(error.value) and "exclude=" in str(error.value) and "consumers=" not in str(error.value)


# -- 11. Non-finite measurements are marked, not stale ---------------------------------------------------------
def test_a_skipped_measurement_logs_nan_and_its_count():
    class PoisonStep(Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            if trainer.global_step == 2:
                pl_module.net[0].weight.grad.fill_(float("nan"))

    class Record(Callback):
        def __init__(self, target):
            self.target, self.seen = target, []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            metrics = dict(self.target.last_metrics)
            self.seen.append(
                (metrics["grama/ratio"], metrics["grama/skipped"], trainer.callback_metrics["grama/ratio"])
            )

    class Sanitize(Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            pl_module.net[0].weight.grad.nan_to_num_(0.0)  # the optimizer steps on clean gradients

    callback = ReGraMa(reset_every_n_steps=None, log_every_n_steps=1)  # read at every step (capacity 1)
    record = Record(callback)
    trainer([PoisonStep(), callback, Sanitize(), record], max_steps=5).fit(
        Classifier(mlp(), optimizer="sgd"), loader(n=80)
    )
    ratios = [r for r, _, _ in record.seen]
    skipped = [s for _, s, _ in record.seen]
    assert skipped == [0, 0, 1, 0, 0]
    assert math.isnan(ratios[2]) and math.isnan(float(record.seen[2][2]))
    assert all(math.isfinite(r) for i, r in enumerate(ratios) if i != 2)


# -- 12. The op table ---------------------------------------------------------------------------------------------
from regrama_lightning import TracingError, register_op, unregister_op  # noqa: E402


class Probe(nn.Module):
    """a -> op -> b, to see how an op of the table carries a's neuron ids into b's columns."""

    def __init__(self, op, width_in=4, width_b=4, conv=False):
        super().__init__()
        self.op = op
        self.a = nn.Conv2d(2, 4, 1) if conv else nn.Linear(3, 4)
        self.b = nn.Linear(width_b, 2)

    def forward(self, x):
        return self.b(self.op(self.a(x)))


KIND_CASES = {
    "activation": (lambda h: F.gelu(h), False, [0, 1, 2, 3], "gelu"),
    "elementwise": (lambda h: h.abs().clamp(max=3.0), False, [0, 1, 2, 3], "abs+clamp"),
    "norm": (lambda h: F.layer_norm(h, (4,)), False, [0, 1, 2, 3], "layer_norm"),
    # Data joined in (ones(4): no parameter of the model) ends ReDo's value; the ids still flow through.
    "binary": (lambda h: h * 2.0 + torch.ones(4), False, [0, 1, 2, 3], "mul"),
    "identity": (lambda h: h.clone().contiguous(), False, [0, 1, 2, 3], "identity"),
    "dropout": (lambda h: F.dropout(h, 0.5), False, [0, 1, 2, 3], "identity"),
    "layout": (lambda h: h.flip(-1), False, [3, 2, 1, 0], "identity"),
    "pool": (lambda h: F.adaptive_avg_pool2d(h, 1).flatten(1), True, [0, 1, 2, 3], "identity"),
    "reduction": (lambda h: h.mean((2, 3)), True, [0, 1, 2, 3], "identity"),
}


@pytest.mark.parametrize("kind", sorted(KIND_CASES))
def test_each_op_kind_maps_neurons_as_documented(kind):
    op, conv, neurons, activation = KIND_CASES[kind]
    net = Probe(op, conv=conv)
    x = torch.randn(5, 2, 3, 3) if conv else torch.randn(5, 3)
    layers = trace_topology(net, lambda: net(x))
    (reader,) = layers["a"].consumers
    assert reader.columns.tolist() == [0, 1, 2, 3] and reader.neurons.tolist() == neurons
    assert layers["a"].activation_name == activation
    assert not layers["a"].unmapped_readers


def test_ignore_kind_carries_nothing():
    net = Probe(lambda h: h + torch.zeros_like(h) * h.size(-1))  # zeros_like: a fresh tensor of h's shape
    layers = trace_topology(net, lambda: net(torch.randn(5, 3)))
    assert layers["a"].consumers[0].neurons.tolist() == [0, 1, 2, 3] and not layers["a"].unmapped_readers


def test_registered_ops_and_failing_rules():
    def cummax_values(h):
        return torch.cummax(h, -1).values  # cummax: not in the table

    net = Probe(cummax_values)
    layers = trace_topology(net, lambda: net(torch.randn(5, 3)))
    assert ("b", "cummax") in layers["a"].unmapped_readers
    register_op("cummax", lambda call: call.ids(call.args[0]).view(7, 7))  # a wrong rule: it raises
    try:
        with pytest.raises(TracingError, match="rule for op 'cummax' failed"):
            trace_topology(net, lambda: net(torch.randn(5, 3)))  # returns a named tuple, not a tensor's ids
        register_op("cummax", lambda call: (call.ids(call.args[0]), call.ids(call.args[0])))
        layers = trace_topology(net, lambda: net(torch.randn(5, 3)))
        assert not layers["a"].unmapped_readers and layers["a"].consumers[0].neurons.tolist() == [0, 1, 2, 3]
        with pytest.raises(ValueError, match="`rule` must be one of"):
            register_op("cummax", "elementwize")
    finally:
        unregister_op("cummax")
    assert ("b", "cummax") in trace_topology(net, lambda: net(torch.randn(5, 3)))["a"].unmapped_readers


def test_probe_reports_the_same_values_as_the_trace():
    torch.manual_seed(0)
    net = HandSwish()
    x = torch.randn(4, 3, 8)
    traced, probed = {}, {}
    from regrama_lightning.tracing import TopologyTracer

    tracer = TopologyTracer(net, on_activation=lambda n, out, total, count: traced.update({n: (total, count)}))
    with tracer:
        net(x)
    layers = tracer.topology()
    with ActivationProbe(layers, lambda n, out, total, count: probed.update({n: (total, count)})):
        net(x)
    assert traced.keys() == probed.keys() == {"inp", "fc"}
    for name in traced:
        torch.testing.assert_close(traced[name][0], probed[name][0])
        assert traced[name][1] == probed[name][1]
