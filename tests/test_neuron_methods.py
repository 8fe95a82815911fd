"""ReBorn and ContinualBackprop: their math against hand computations, then the callbacks on four architectures."""

from __future__ import annotations

import pytest
import torch
from helpers import Classifier, loader, mlp, trainer
from plasticity_models import architectures
from torch import nn

from regrama_lightning import ContinualBackprop, ReBorn, trace_topology
from regrama_lightning.methods import plan_transfer, transfer_
from regrama_lightning.methods.continual_backprop import lowest_utility, running_average
from regrama_lightning.methods.outgoing import absorb_mean_input, outgoing_abs_mean


def _plant(net_layer: nn.Module, dormant: list[int], overactive: int) -> None:
    with torch.no_grad():
        for i in dormant:  # silent for any input: zero weights, negative bias
            net_layer.weight[i] = 0.0
            net_layer.bias[i] = -1.0
        net_layer.weight[overactive] *= 20.0
        net_layer.bias[overactive] = 5.0


def test_plan_pairs_at_most_max_per_source_and_shares_sum_to_one():
    dormant = torch.zeros(12, dtype=torch.bool)
    dormant[:7] = True
    overactive = torch.zeros(12, dtype=torch.bool)
    overactive[10] = True
    plan = plan_transfer(dormant, overactive, seed=3, max_per_source=5)
    assert plan.reborn.sum() == 5 and plan.reborn[:5].all()  # 7 dormant, 5 slots
    assert (plan.source[plan.reborn] == 10).all() and (
        plan.source[~plan.reborn] == torch.arange(12)[~plan.reborn]
    ).all()
    assert ((plan.scale[plan.reborn] >= 0.3) & (plan.scale[plan.reborn] <= 0.8)).all()
    group = plan.reborn | (torch.arange(12) == 10)
    assert plan.share[group].sum().item() == pytest.approx(1.0) and (plan.share[~group] == 1).all()


@pytest.mark.parametrize("kind", ["mlp", "conv_flatten", "conv_bn"])
def test_reborn_keeps_a_relu_networks_outputs(kind):
    torch.manual_seed(0)
    if kind == "mlp":
        net = nn.Sequential(nn.Linear(5, 10), nn.ReLU(), nn.Linear(10, 3)).double()
        x = torch.randn(64, 5, dtype=torch.float64)
    elif kind == "conv_flatten":
        net = nn.Sequential(nn.Conv2d(2, 10, 3), nn.ReLU(), nn.Flatten(), nn.Linear(10 * 4, 3)).double()
        x = torch.randn(16, 2, 4, 4, dtype=torch.float64)
    else:
        # The norm undoes the scale d up to its eps: a tiny eps makes it exact.
        net = nn.Sequential(nn.Conv2d(2, 10, 3), nn.BatchNorm2d(10, eps=1e-14), nn.ReLU(), nn.Conv2d(10, 3, 2)).double()
        x = torch.randn(16, 2, 4, 4, dtype=torch.float64)
        net(x)  # running statistics for eval mode
    _plant(net[0], dormant=[1, 2, 7], overactive=4)
    if kind == "conv_bn":
        with torch.no_grad():  # dormant channels: silent after the norm too
            net[1].bias[[1, 2, 7]] = -100.0
    layer = trace_topology(net, lambda: net(x))["0"]
    dormant = torch.zeros(10, dtype=torch.bool)
    dormant[[1, 2, 7]] = True
    overactive = torch.zeros(10, dtype=torch.bool)
    overactive[4] = True
    net.eval()
    before = net(x)
    plan = plan_transfer(dormant, overactive, seed=0, dtype=torch.float64)
    transfer_(layer, plan)
    torch.testing.assert_close(net(x), before, rtol=1e-10, atol=1e-10)
    # Hand check of the incoming weights: d * those of neuron 4.
    for i in (1, 2, 7):
        torch.testing.assert_close(net[0].weight[i], plan.scale[i].double() * net[0].weight[4])
    assert plan.reborn.sum() == 3


@pytest.mark.parametrize("conv", [False, True])
def test_outgoing_abs_mean_and_bias_absorption_keep_the_readers_mean_output(conv):
    torch.manual_seed(0)
    if conv:  # no padding: every position of the reader reads the neuron's mean
        net = nn.Sequential(nn.Conv2d(3, 6, 1), nn.ReLU(), nn.Conv2d(6, 4, 3)).double()
        x, shape = torch.randn(2, 3, 5, 5, dtype=torch.float64), (1, 6, 5, 5)
    else:
        net = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 4)).double()
        x, shape = torch.randn(2, 3, dtype=torch.float64), (1, 6)
    reader = net[2]
    layer = trace_topology(net, lambda: net(x))["0"]
    rows = reader.weight.detach().abs().transpose(0, 1).reshape(6, -1)
    torch.testing.assert_close(outgoing_abs_mean(layer.consumers, 6), rows.mean(1).float())
    mean = torch.rand(6, dtype=torch.float64) + 0.5
    mask = torch.tensor([False, True, False, True, False, False])
    h = mean.view(1, 6, *([1] * (len(shape) - 2))).expand(shape).clone()  # each neuron at its mean
    before = reader(h)
    absorb_mean_input(layer.consumers[0], mask, mean)
    with torch.no_grad():
        reader.weight[:, mask] = 0.0
    torch.testing.assert_close(reader(h), before)


def test_utility_helpers_by_hand():
    u = running_average(torch.tensor([2.0]), torch.tensor([[4.0], [0.0], [8.0]]), 0.5)
    assert u.item() == pytest.approx(((2 * 0.5 + 2) * 0.5 + 0) * 0.5 + 4)
    utility = torch.tensor([0.9, 0.05, 0.01, 0.3])
    age = torch.tensor([500, 500, 20, 500])  # neuron 2 has the lowest utility but is not mature
    mask = lowest_utility(utility, torch.full((4,), 100.0), age, 0.99, 100, count=1)
    assert mask.tolist() == [False, True, False, False]


def test_cbp_replaces_the_planted_low_utility_neuron():
    torch.manual_seed(0)
    model = Classifier(mlp((6, 16, 16, 3)))
    with torch.no_grad():
        model.net[0].bias.fill_(1.0)  # every neuron fires: utility comes from the outgoing weights
        model.net[2].weight[:, 3] = 0.0  # neuron 3 contributes nothing: utility 0
    planted = model.net[0].weight[3].detach().clone()
    # 16 mature neurons per layer * rate 1/32 * period 2 = one replacement per layer at step 2.
    callback = ContinualBackprop(replacement_rate=1 / 32, maturity_threshold=0, replace_every_n_steps=2, seed=0)
    trainer([callback], max_steps=2).fit(model, loader())
    assert not torch.equal(model.net[0].weight[3], planted)  # re-drawn
    assert callback.states["net.0"].updates[3] == 0 and (callback.states["net.0"].updates > 0).sum() == 15
    assert callback.last_metrics["reset/neurons"] == 2.0  # one in each hidden layer


def _count_acted(callback) -> list:
    """Record the number of neurons of each action call."""
    acted, apply = [], callback.action.apply

    def counting(mask, context):
        acted.append(apply(mask, context))
        return acted[-1]

    callback.action.apply = counting
    return acted


@pytest.mark.parametrize("name", ["mlp", "cnn_bn", "bro", "sac"])
def test_cbp_and_reborn_run_on_every_architecture(name):
    for make in (
        lambda: ContinualBackprop(replacement_rate=0.1, maturity_threshold=1, replace_every_n_steps=3, seed=0),
        lambda: ReBorn(tau=0.9, beta=1.1, reset_every_n_steps=3, seed=0),  # loose: tiny nets have few outliers
    ):
        model, data = architectures()[name]
        if name == "cnn_bn":  # BatchNorm evens out the channels: plant a dormant and an over-active one
            with torch.no_grad():
                model.net[1].bias[0], model.net[1].weight[1] = -10.0, 8.0
        callback = make()
        acted = _count_acted(callback)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        trainer([callback], max_steps=12 if name == "sac" else 6).fit(model, data)  # SAC: both optimizers' steps
        assert callback.resets >= 2 and sum(int(n) for n in acted) >= 1, type(callback).__name__
        assert all(torch.isfinite(p).all() for p in model.parameters())
        assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="replacement_rate"):
        ContinualBackprop(replacement_rate=2.0)
    with pytest.raises(ValueError, match="decay_rate"):
        ContinualBackprop(decay_rate=1.0)
    with pytest.raises(ValueError, match="beta"):
        ReBorn(tau=0.5, beta=0.2)
    with pytest.raises(ValueError, match="max_per_source"):
        ReBorn(max_per_source=0)


def test_cbp_resume_restores_utility_age_and_carry(tmp_path):
    torch.manual_seed(0)
    model = Classifier(mlp((6, 16, 16, 3)))
    first = ContinualBackprop(replacement_rate=0.01, maturity_threshold=1, replace_every_n_steps=2, name="cbp")
    t = trainer([first], max_steps=3)
    t.fit(model, loader(n=48))
    t.save_checkpoint(tmp_path / "c.ckpt")
    resumed = ContinualBackprop(replacement_rate=0.01, maturity_threshold=1, replace_every_n_steps=2, name="cbp")
    resumed.load_state_dict(
        torch.load(tmp_path / "c.ckpt", weights_only=False)["callbacks"]["ContinualBackprop[name=cbp]"]
    )
    for name, state in first.states.items():
        for key, value in vars(state).items():
            assert torch.equal(getattr(resumed.states[name], key), value.cpu()), (name, key)
    assert resumed.carry == first.carry and any(v > 0 for v in first.carry.values())


def test_reborn_refuses_at_the_first_batch_a_layer_whose_readers_cannot_be_split():
    class Sliced(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.head = nn.Linear(6, 8), nn.Linear(4, 3)

        def forward(self, x):
            return self.head(torch.relu(self.a(x))[:, :4])  # neurons 4-7 are read by nothing

    with pytest.raises(ValueError, match=r"cannot split the outgoing weights of layers \['net.a'\]"):
        trainer([ReBorn(reset_every_n_steps=2)], max_steps=2).fit(Classifier(Sliced()), loader())
    with pytest.raises(ValueError, match="residual='reset'"):
        ReBorn(residual="reset")
