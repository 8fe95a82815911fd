"""Resets change exactly the planted neuron's entries, in the weights and in the optimizer state."""

import copy

import pytest
import torch
from helpers import mlp, plant_dead_neuron
from test_topology import SmallCNN
from torch import nn
from torch.nn import functional as F  # noqa: N812

from regrama_lightning import reset_neurons, select_neurons, trace_topology


def _trained(optimizer_name):
    torch.manual_seed(0)
    net = mlp((6, 8, 8, 3))
    plant_dead_neuron(net[0], 5)
    opt = {
        "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
        "amsgrad": lambda p: torch.optim.AdamW(p, lr=1e-2, amsgrad=True),
        "sgd": lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9),
    }[optimizer_name](net.parameters())
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        # give the dead neuron's entries non-zero optimizer state so that clearing them is observable
        for p in (net[0].weight, net[0].bias, net[2].weight):
            p.grad += 0.1
        opt.step()
    layers = trace_topology(net, lambda: net(x))
    return net, opt, layers


@pytest.mark.parametrize("optimizer_name", ["adam", "amsgrad", "sgd"])
def test_reset_touches_exactly_the_planted_neuron(optimizer_name):
    net, opt, layers = _trained(optimizer_name)
    before = copy.deepcopy(net.state_dict())
    state_before = {id(p): {k: v.clone() for k, v in opt.state[p].items()} for p in net.parameters()}
    mask = torch.zeros(8, dtype=torch.bool)
    mask[5] = True
    count = reset_neurons(layers["0"], mask, seed=7, optimizers=[opt])
    assert count == 1
    after = net.state_dict()
    # Incoming row and bias of neuron 5 re-drawn from the layer's init; other rows untouched.
    bound = 1 / 6**0.5  # nn.Linear default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias
    assert not torch.equal(after["0.weight"][5], before["0.weight"][5])
    assert after["0.weight"][5].abs().max() <= bound and after["0.bias"][5].abs() <= bound
    others = torch.arange(8) != 5
    assert torch.equal(after["0.weight"][others], before["0.weight"][others])
    assert torch.equal(after["0.bias"][others], before["0.bias"][others])
    # Outgoing column 5 of the consumer zeroed, the rest untouched; later layers untouched.
    assert (after["2.weight"][:, 5] == 0).all()
    assert torch.equal(after["2.weight"][:, others], before["2.weight"][:, others])
    for key in ("2.bias", "4.weight", "4.bias"):
        assert torch.equal(after[key], before[key])
    # Optimizer state: exactly the touched entries zeroed, step counts kept.
    touched = {
        id(net[0].weight): torch.zeros(8, 6, dtype=torch.bool).index_fill_(0, torch.tensor([5]), True),
        id(net[0].bias): mask,
        id(net[2].weight): torch.zeros(8, 8, dtype=torch.bool).index_fill_(1, torch.tensor([5]), True),
    }
    for p in net.parameters():
        for key, value in opt.state[p].items():
            old = state_before[id(p)][key]
            if key == "step":
                assert torch.equal(value, old)
                continue
            t = touched.get(id(p), torch.zeros_like(value, dtype=torch.bool))
            assert (value[t] == 0).all(), key
            assert torch.equal(value[~t], old[~t]), key
            assert id(p) not in touched or (old[t] != 0).all(), (
                f"{key}: test needs non-zero state on the touched entries"
            )


def test_reset_is_seeded_and_leaves_global_rng_alone():
    net_a, _, layers_a = _trained("adam")
    net_b, _, layers_b = _trained("adam")
    mask = torch.zeros(8, dtype=torch.bool)
    mask[[1, 5]] = True
    torch.manual_seed(123)
    reset_neurons(layers_a["0"], mask, seed=3)
    after_a = torch.rand(1)
    torch.manual_seed(123)
    reset_neurons(layers_b["0"], mask, seed=3)
    after_b = torch.rand(1)
    assert torch.equal(net_a[0].weight, net_b[0].weight)
    torch.manual_seed(123)
    assert torch.equal(after_a, torch.rand(1)) and torch.equal(after_a, after_b)


def test_conv_reset_zeroes_flattened_columns_and_restores_batchnorm():
    torch.manual_seed(0)
    net = SmallCNN()
    x = torch.randn(4, 3, 8, 8)
    for _ in range(3):
        net(x)  # move BN running statistics away from their init
    layers = trace_topology(net, lambda: net(x))
    mask = torch.tensor([False, True, False, False])
    conv2_before = net.conv2.weight.clone()
    bn_mean = net.bn.running_mean.clone()
    reset_neurons(layers["conv1"], mask, seed=0)
    assert (net.conv2.weight[:, 1] == 0).all()
    assert torch.equal(net.conv2.weight[:, [0, 2, 3]], conv2_before[:, [0, 2, 3]])
    assert net.bn.running_mean[1] == 0 and net.bn.running_var[1] == 1
    assert torch.equal(net.bn.running_mean[[0, 2, 3]], bn_mean[[0, 2, 3]])

    fc_before = net.fc.weight.clone()
    reset_neurons(layers["conv2"], torch.tensor([False, False, True, False, False, False]), seed=0)
    read = torch.zeros(96, dtype=torch.bool)
    read[32:48] = True  # channel 2 of a (6, 4, 4) feature map, flattened
    assert (net.fc.weight[:, read] == 0).all()
    assert torch.equal(net.fc.weight[:, ~read], fc_before[:, ~read])


def test_grouped_conv_consumer_zeroes_only_its_group():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 1), nn.ReLU(), nn.Conv2d(4, 6, 1, groups=2))
    layers = trace_topology(net, lambda: net(torch.randn(1, 2, 3, 3)))
    before = net[2].weight.clone()  # (6, 2, 1, 1): out 0-2 read in 0-1, out 3-5 read in 2-3
    reset_neurons(layers["0"], torch.tensor([False, False, False, True]), seed=0)
    changed = (net[2].weight != before).squeeze()
    expected = torch.zeros(6, 2, dtype=torch.bool)
    expected[3:, 1] = True
    assert torch.equal(changed | (net[2].weight.squeeze() == 0) & expected, expected | changed)
    assert (net[2].weight[3:, 1] == 0).all() and torch.equal(net[2].weight[:3], before[:3])


def test_custom_init_fn_and_max_fraction():
    torch.manual_seed(0)
    net = mlp((6, 8, 8, 3))
    layers = trace_topology(net, lambda: net(torch.randn(2, 6)))
    mask = select_neurons(torch.tensor([0.0, 0.001, 0.002, 1, 1, 1, 1, 1]), tau=0.01, max_fraction=0.25)
    assert mask.tolist() == [True, True] + [False] * 6

    def orthogonal(module):
        nn.init.orthogonal_(module.weight)
        nn.init.zeros_(module.bias)

    reset_neurons(layers["2"], mask, seed=0, init_fn=orthogonal)
    assert (net[2].bias[:2] == 0).all()
    rows = net[2].weight[:2].detach()
    assert torch.allclose(rows @ rows.T, torch.eye(2), atol=1e-5)  # rows of an orthogonal draw
