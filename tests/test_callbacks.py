"""The callbacks inside a Trainer: schedule, exclusions, AMP, gradient accumulation, logging, bad input."""

import types

import pytest
import torch
from helpers import Classifier, loader, mlp, plant_dead_neuron, trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins import MixedPrecision
from lightning.pytorch.strategies import FSDPStrategy
from test_topology import BroNet, SmallCNN
from torch import nn
from torch.nn import functional as F  # noqa: N812

from regrama_lightning import GraMaRatio, ReDo, ReGraMa, weight_grad_magnitude


class Spy(Callback):
    """Records the callback's reset counts and the planted neuron's incoming row at each batch end."""

    def __init__(self, target):
        self.target = target
        self.rows = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rows.append(self.target.weight[2].detach().clone())


@pytest.mark.parametrize(
    "make",
    [
        lambda: ReGraMa(reset_every_n_steps=3),
        lambda: ReGraMa(score="output", reset_every_n_steps=3),
        lambda: ReDo(reset_every_n_steps=3),
    ],
)
def test_resets_only_on_schedule_and_revive_planted_neuron(make):
    torch.manual_seed(0)
    net = mlp((6, 8, 8, 3))
    plant_dead_neuron(net[0], 2)
    callback = make()
    spy = Spy(net[0])
    trainer([callback, spy], max_steps=7).fit(Classifier(net, optimizer="sgd"), loader(n=112))
    changed = [i + 1 for i in range(1, 7) if not torch.equal(spy.rows[i], spy.rows[i - 1])]
    assert spy.rows[0].abs().sum() == 0  # SGD does not move a dead neuron: only a reset does
    assert changed[0] == 3  # first reset at step 3; after that the revived neuron trains normally
    assert callback._resets == 2  # steps 3 and 6
    assert callback.scored == ["net.0", "net.2"]  # the output layer is excluded by default


def test_cnn_layernorm_residual_models_run_with_both_callbacks():
    class Wrap(Classifier):
        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.mse_loss(self(x).squeeze(-1), y.float())

    for net, shape in ((SmallCNN(), (3, 8, 8)), (BroNet(), (5,))):
        for callback in (
            ReGraMa(reset_every_n_steps=2, tau=0.5, residual="reset"),
            ReDo(reset_every_n_steps=2, tau=0.5),
        ):
            model = Wrap(net) if isinstance(net, BroNet) else Classifier(net)
            trainer([callback], max_steps=4).fit(model, loader(n=64, shape=shape, classes=2))
            assert callback.last_metrics[f"{callback.prefix}/ratio"] >= 0
            assert all(torch.isfinite(p).all() for p in net.parameters())


def test_residual_policy_measure_never_resets_stream_writers():
    torch.manual_seed(0)
    net = BroNet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    callback = ReGraMa(tau=10.0, reset_every_n_steps=1, score="weight")  # every neuron "inactive"

    class Frozen(Classifier):
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.mse_loss(self(x).squeeze(-1), y.float())

    trainer([callback], max_steps=2).fit(Frozen(net), loader(n=32, shape=(5,), classes=2))
    assert "net.l2" in callback.scored and callback.layers["net.l2"].writes_residual
    after = net.state_dict()
    # Writers are scored but never re-drawn (l2's columns do get zeroed: they are l1's outgoing weights).
    for key in ("inp.weight", "inp.bias", "l2.bias", "ln2.weight", "ln2.bias"):
        assert torch.equal(after[key], before[key]), key
    assert not torch.equal(after["l1.weight"], before["l1.weight"])
    assert (after["l2.weight"] == 0).all()


def test_amp_scaled_gradients_give_the_same_scores():
    def run(scale):
        torch.manual_seed(0)
        callback = ReGraMa(reset_every_n_steps=None, score="output")
        plugin = MixedPrecision(
            "16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=scale, growth_interval=10**6)
        )
        trainer([callback], max_steps=2, plugins=[plugin]).fit(Classifier(mlp((6, 32, 32, 3))), loader())
        return callback.latest_scores

    scaled, plain = run(2.0**14), run(1.0)
    for name in scaled:
        assert torch.allclose(scaled[name], plain[name], rtol=2e-3, atol=1e-4), name


@pytest.mark.parametrize("make", [lambda: ReGraMa(score="weight"), lambda: ReGraMa(score="output"), lambda: ReDo()])
def test_gradient_accumulation_equals_one_big_batch(make):
    def run(batch, accumulate):
        torch.manual_seed(0)
        callback = make()
        callback.reset_every_n_steps = None
        model = Classifier(mlp((6, 16, 16, 3)), optimizer="sgd")
        trainer([callback], max_steps=2, accumulate_grad_batches=accumulate).fit(model, loader(n=64, batch=batch))
        return callback.latest_scores

    big, accumulated = run(32, 1), run(8, 4)
    for name in big:
        assert torch.allclose(big[name], accumulated[name], rtol=1e-4, atol=1e-6), name


def test_nonfinite_gradients_are_skipped_warned_and_never_reset(recwarn):
    class Poison(Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            for p in pl_module.parameters():
                if trainer.global_step == 1:
                    p.grad.fill_(float("nan"))  # the reset step's gradients overflow ...
                else:
                    return

    class Sanitize(Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            for p in pl_module.parameters():
                p.grad.nan_to_num_(0.0)  # ... and are dropped before the optimizer sees them (as GradScaler does)

    torch.manual_seed(0)
    net = mlp()
    plant_dead_neuron(net[0], 2)
    callback = ReGraMa(reset_every_n_steps=2)
    trainer([Poison(), callback, Sanitize()], max_steps=2).fit(Classifier(net, optimizer="sgd"), loader())
    assert callback.last_metrics["reset/neurons"] == 0
    assert net[0].weight[2].abs().sum() == 0  # the dead neuron was not reset on NaN scores
    assert any("non-finite" in str(w.message) for w in recwarn)


def test_logs_to_loggers_and_output_layers_opt_in(tmp_path):
    torch.manual_seed(0)
    callback = ReGraMa(reset_every_n_steps=4, include_output_layers=True, log_every_n_steps=2)
    logger = CSVLogger(tmp_path, name="run")
    trainer([callback], max_steps=4, logger=logger).fit(Classifier(mlp()), loader())
    header = (tmp_path / "run" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"grama/ratio", "grama/net.0", "grama/net.2", "grama/net.4", "reset/neurons"} <= set(header)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="`tau` must be"):
        ReGraMa(tau=-0.1)
    with pytest.raises(ValueError, match="`reset_every_n_steps` must be a positive integer or None"):
        ReGraMa(reset_every_n_steps=0)
    with pytest.raises(ValueError, match="`score` must be"):
        ReGraMa(score="grad")
    with pytest.raises(ValueError, match="`max_reset_fraction`"):
        ReDo(max_reset_fraction=1.5)
    with pytest.raises(ValueError, match="`residual` must be"):
        ReDo(residual="skip")
    with pytest.raises(ValueError, match="list of patterns"):
        ReDo(include="net.0")


def test_bad_models_raise_at_setup_or_first_batch():
    with pytest.raises(ValueError, match="matches no Linear/Conv layer"):
        trainer([ReGraMa(include=["encoder.*"])], max_steps=1).fit(Classifier(mlp()), loader())

    class NoLayers(Classifier):
        def __init__(self):
            super().__init__(nn.Sequential(nn.Flatten()))
            self.w = nn.Parameter(torch.zeros(6, 3))

        def forward(self, x):
            return x @ self.w

    with pytest.raises(ValueError, match="no Linear or Conv"):
        trainer([ReGraMa()], max_steps=1).fit(NoLayers(), loader())
    with pytest.raises(ValueError, match="found no eligible layer"):
        trainer([ReGraMa()], max_steps=1).fit(Classifier(nn.Linear(6, 3)), loader())

    class Unmappable(Classifier):
        def forward(self, x):
            return self.net[2](torch.softmax(self.net[1](self.net[0](x)), -1).cumsum(-1))

    with pytest.raises(ValueError, match="consumers="):
        trainer([ReGraMa()], max_steps=1).fit(Unmappable(mlp((6, 8, 3))), loader())
    # A measuring callback scores such a layer; a requested reset of it raises the same error.
    measuring = ReGraMa(reset_every_n_steps=None)
    with pytest.raises(ValueError, match="consumers="):
        trainer([ResetAtBatches(measuring, {1}), measuring], max_steps=2).fit(Unmappable(mlp((6, 8, 3))), loader())
    assert measuring.scored == ["net.0"]
    # Naming the readers by hand makes the same model usable.
    callback = ReGraMa(consumers={"net.0": ["net.2"]}, reset_every_n_steps=1)
    trainer([callback], max_steps=1).fit(Unmappable(mlp((6, 8, 3))), loader())
    assert callback.scored == ["net.0"]


def test_sharded_strategies_are_refused():
    strategy = FSDPStrategy.__new__(FSDPStrategy)
    fake = types.SimpleNamespace(strategy=strategy)
    with pytest.raises(ValueError, match="does not support FSDPStrategy"):
        ReGraMa().setup(fake, Classifier(mlp()), "fit")


def test_redo_and_grama_monitor_side_by_side():
    torch.manual_seed(0)
    net = mlp((6, 16, 16, 3))
    plant_dead_neuron(net[0], 4)
    redo = ReDo(reset_every_n_steps=None, tau=0.0)
    grama = ReGraMa(reset_every_n_steps=None, tau=0.0, score="output")
    trainer([redo, grama], max_steps=3).fit(Classifier(net, optimizer="sgd"), loader())
    # Theorem 1 in a trainer: the planted ReLU neuron is dormant and has zero gradient, and nothing else is.
    assert redo.last_metrics["dormant/net.0"] == grama.last_metrics["grama/net.0"] == 1 / 16
    assert redo.latest_scores["net.0"][4] == 0 and grama.latest_scores["net.0"][4] == 0


class HandRatio(Callback):
    """GraMa ratio of each step computed independently from the gradients, in plain torch."""

    def __init__(self, layers, tau):
        self.layers, self.tau, self.ratios = layers, tau, []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        inactive = total = 0
        for layer in self.layers:
            magnitude = layer.weight.grad.abs().mean(dim=1)
            inactive += int((magnitude / (magnitude.mean() + 1e-9) <= self.tau).sum())
            total += magnitude.numel()
        self.ratios.append(inactive / total)


@pytest.mark.parametrize("trainer_log_every", [1, 5])
def test_every_step_is_logged_with_the_right_value_whether_read_at_once_or_in_batches(tmp_path, trainer_log_every):
    # The callback reads its device-side measurements about as often as the Trainer logs (here every step or
    # every 5 steps): each step's row must still reach the logger, at its own step, with its own value.
    torch.manual_seed(0)
    net = mlp((6, 16, 16, 3))
    plant_dead_neuron(net[0], 1)
    callback = ReGraMa(tau=0.5, reset_every_n_steps=None, log_every_n_steps=1, log_per_layer=False)
    hand = HandRatio([net[0], net[2]], tau=0.5)
    logger = CSVLogger(tmp_path, name="run")
    run = trainer([callback, hand], max_steps=12, logger=logger, log_every_n_steps=trainer_log_every)
    run.fit(Classifier(net), loader(n=192))
    rows = (tmp_path / "run" / "version_0" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    logged = {}
    for line in rows[1:]:
        values = dict(zip(header, line.split(","), strict=True))
        if values.get("grama/ratio"):
            logged[int(values["step"])] = float(values["grama/ratio"])
    assert sorted(logged) == list(range(12))
    assert [logged[s] for s in range(12)] == pytest.approx(hand.ratios, abs=1e-6)
    assert min(hand.ratios) > 0  # the planted neuron at least: the comparison is not between zeros
    assert float(run.callback_metrics["grama/ratio"]) == pytest.approx(hand.ratios[-1], abs=1e-6)


def test_metric_logged_from_a_users_own_module_without_the_callback(tmp_path):
    # GraMaRatio as any torchmetrics Metric: updated in a hook of the user's module, logged per epoch by Lightning.
    class Module(Classifier):
        def __init__(self):
            super().__init__(mlp((6, 16, 16, 3)))
            plant_dead_neuron(self.net[0], 3)
            self.grama = GraMaRatio({"net.0": 16, "net.2": 16}, tau=0.3)
            self.by_hand = {"net.0": torch.zeros(16), "net.2": torch.zeros(16)}

        def on_before_optimizer_step(self, optimizer):
            sums = {n: weight_grad_magnitude(self.get_submodule(n)) for n in self.by_hand}
            self.grama.update(sums)
            for n, s in sums.items():
                self.by_hand[n] += s.detach()
            self.log("train/grama", self.grama, on_step=False, on_epoch=True)

    torch.manual_seed(0)
    module = Module()
    logger = CSVLogger(tmp_path, name="run")
    trainer([], max_steps=4, logger=logger, max_epochs=1).fit(module, loader(n=64))
    rows = (tmp_path / "run" / "version_0" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    logged = [
        float(v) for line in rows[1:] for k, v in zip(header, line.split(","), strict=True) if k == "train/grama" and v
    ]
    # Independently: the epoch's summed magnitudes, normalised per layer, thresholded.
    inactive = sum(int((m / (m.mean() + 1e-9) <= 0.3).sum()) for m in module.by_hand.values())
    assert logged == [pytest.approx(inactive / 32, abs=1e-6)]
    assert inactive >= 1  # the planted neuron


class ResetAtBatches(Callback):
    """Requests a reset before chosen batches, as a continual benchmark does at a task change."""

    def __init__(self, target, batches):
        self.target, self.batches = target, batches

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx in self.batches:
            self.target.request_reset()


def test_requested_resets_happen_at_the_requested_steps_only():
    torch.manual_seed(0)
    net = mlp((6, 8, 8, 3))
    plant_dead_neuron(net[0], 2)
    callback = ReGraMa(reset_every_n_steps=None)
    spy = Spy(net[0])
    trainer([ResetAtBatches(callback, {4}), callback, spy], max_steps=7).fit(
        Classifier(net, optimizer="sgd"), loader(n=112)
    )
    changed = [i for i in range(1, 7) if not torch.equal(spy.rows[i], spy.rows[i - 1])]
    assert spy.rows[3].abs().sum() == 0  # untouched before the request (SGD cannot move a dead row)
    assert changed[0] == 4  # reset at the end of the requested batch, then it trains
    assert callback._resets == 1
    with pytest.raises(RuntimeError, match="on_fit_start"):
        ReGraMa().request_reset()
    with pytest.raises(ValueError, match="`optimizer_index` must be one of"):
        callback.request_reset(3)


class EnvSteps(Classifier):
    """Counts 10 'environment steps' per batch, the x-axis an RL agent logs against."""

    env_steps = 0

    def on_train_batch_start(self, batch, batch_idx):
        self.env_steps += 10


def test_logs_against_a_module_attribute_when_asked(tmp_path):
    torch.manual_seed(0)
    callback = ReGraMa(reset_every_n_steps=None, log_every_n_steps=2, step_attribute="env_steps")
    logger = CSVLogger(tmp_path, name="run")
    trainer([callback], max_steps=6, logger=logger).fit(EnvSteps(mlp()), loader())
    lines = (tmp_path / "run" / "version_0" / "metrics.csv").read_text().splitlines()
    column = lines[0].split(",").index("step")
    assert sorted({int(line.split(",")[column]) for line in lines[1:]}) == [20, 40, 60]
    with pytest.raises(ValueError, match="no int attribute"):
        trainer([ReGraMa(step_attribute="env_steps")], max_steps=1).fit(Classifier(mlp()), loader())
    with pytest.raises(ValueError, match="`step_attribute` must be"):
        ReGraMa(step_attribute="env steps")


@pytest.mark.parametrize("zero_outgoing", [True, False])
def test_outgoing_weights_are_zeroed_or_kept_as_asked(zero_outgoing):
    torch.manual_seed(0)
    net = mlp((6, 8, 8, 3))
    plant_dead_neuron(net[0], 2)
    column = net[2].weight[:, 2].detach().clone()  # a dead ReLU neuron's column gets no gradient until its reset

    class Column(Callback):
        def __init__(self):
            self.at_end = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.at_end.append(net[2].weight[:, 2].detach().clone())

    spy = Column()
    callback = ReGraMa(reset_every_n_steps=3, zero_outgoing=zero_outgoing, include=["net.0"])  # net.2's rows stay
    trainer([callback, spy], max_steps=3).fit(Classifier(net, optimizer="sgd"), loader())
    assert torch.equal(spy.at_end[1], column)
    if zero_outgoing:
        assert spy.at_end[2].abs().sum() == 0
    else:
        assert torch.equal(spy.at_end[2], column)
    assert net[0].weight[2].abs().sum() > 0  # the incoming weights were re-drawn either way
    with pytest.raises(ValueError, match="`zero_outgoing` must be True or False"):
        ReDo(zero_outgoing="no")
