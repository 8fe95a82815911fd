"""The traced structure: consumers, flatten mapping, norms, residual streams, control flow."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from regrama_lightning import trace_topology
from regrama_lightning.tracing.selection import explicit_consumers, select_layers


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 10)
        self.head = nn.Linear(10, 2)

    def forward(self, x):
        x = F.relu(self.bn(self.conv1(x)))
        x = F.max_pool2d(F.leaky_relu(self.conv2(x), 0.1), 2)
        return self.head(F.gelu(self.fc(torch.flatten(x, 1))))


class BroNet(nn.Module):
    """Input layer -> LN -> ReLU, then x + LN(Linear(ReLU(LN(Linear(x))))), then a head."""

    def __init__(self, width=8):
        super().__init__()
        self.inp, self.ln0 = nn.Linear(5, width), nn.LayerNorm(width)
        self.l1, self.ln1 = nn.Linear(width, width), nn.LayerNorm(width)
        self.l2, self.ln2 = nn.Linear(width, width), nn.LayerNorm(width)
        self.head = nn.Linear(width, 1)

    def forward(self, x):
        h = F.relu(self.ln0(self.inp(x)))
        h = h + self.ln2(self.l2(F.relu(self.ln1(self.l1(h)))))
        return self.head(h)


def test_conv_to_linear_flatten_mapping_is_channel_major():
    net = SmallCNN()
    layers = trace_topology(net, lambda: net(torch.randn(2, 3, 8, 8)))
    (reader,) = layers["conv2"].consumers
    assert reader.name == "fc"
    assert reader.columns.tolist() == list(range(96))
    # torch.flatten of (C=6, 4, 4): column j reads channel j // 16.
    assert reader.neurons.tolist() == [j // 16 for j in range(96)]
    assert [(c.name, c.neurons.tolist()) for c in layers["conv1"].consumers] == [("conv2", [0, 1, 2, 3])]
    assert [n for n, _ in layers["conv1"].norms] == ["bn"]
    assert layers["conv1"].activation_name == "batch_norm+relu"
    assert layers["conv2"].activation_name == "leaky_relu"
    assert layers["fc"].activation_name == "gelu"
    assert layers["head"].is_output and not layers["fc"].is_output


def test_residual_writers_and_layernorm_ownership():
    net = BroNet()
    layers = trace_topology(net, lambda: net(torch.randn(3, 5)))
    assert layers["inp"].writes_residual and layers["l2"].writes_residual
    assert not layers["l1"].writes_residual
    assert [c.name for c in layers["inp"].consumers] == ["l1"]  # its direct reader; the head reads the mixed sum
    assert layers["l2"].consumers == []
    assert [n for n, _ in layers["l1"].norms] == ["ln1"]
    assert [n for n, _ in layers["l2"].norms] == ["ln2"]
    assert layers["l2"].activation_name == "layer_norm"  # no nonlinearity before the stream: ReDo sees LN output
    assert layers["head"].is_output


def test_concatenation_offsets_and_python_control_flow():
    class Critic(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.out = nn.Linear(3, 4), nn.Linear(3, 2), nn.Linear(7, 1)

        def forward(self, x, flag):
            ha = F.relu(self.a(x))
            hb = torch.tanh(self.b(x)) if flag else F.relu(self.b(x))
            extra = torch.ones(x.shape[0], 1)
            return self.out(torch.cat([hb, extra, ha], dim=1))

    net = Critic()
    layers = trace_topology(net, lambda: net(torch.randn(4, 3), flag=True))
    assert layers["b"].consumers[0].columns.tolist() == [0, 1]
    assert layers["a"].consumers[0].columns.tolist() == [3, 4, 5, 6]
    assert layers["a"].consumers[0].neurons.tolist() == [0, 1, 2, 3]
    assert layers["b"].activation_name == "tanh"


def test_sampling_heads_are_outputs_not_residual():
    class Actor(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.mu, self.log_std = nn.Linear(4, 8), nn.Linear(8, 2), nn.Linear(8, 2)

        def forward(self, x):
            h = F.relu(self.fc(x))
            dist = torch.distributions.Normal(self.mu(h), self.log_std(h).exp())
            return torch.tanh(dist.rsample())

    net = Actor()
    layers = trace_topology(net, lambda: net(torch.randn(5, 4)))
    assert layers["mu"].is_output and layers["log_std"].is_output
    assert sorted(c.name for c in layers["fc"].consumers) == ["log_std", "mu"]


def test_unmapped_reader_is_reported():
    class Weird(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            h = F.relu(self.a(x))
            return self.b(torch.softmax(h, dim=-1).cumsum(-1))

    net = Weird()
    layers = trace_topology(net, lambda: net(torch.randn(2, 4)))
    assert layers["a"].unmapped_readers and not layers["a"].is_output
    fixed = explicit_consumers(layers["a"], ["b"], {"a": net.a, "b": net.b})
    assert fixed[0].neurons.tolist() == [0, 1, 2, 3]


def test_select_layers_patterns():
    net = SmallCNN()
    layers = {n: m for n, m in net.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)}
    assert list(select_layers(layers, ["conv*"], None)) == ["conv1", "conv2"]
    assert list(select_layers(layers, None, ["head"])) == ["conv1", "conv2", "fc"]
    with pytest.raises(ValueError, match="matches no Linear/Conv layer"):
        select_layers(layers, ["encoder.*"], None)


def test_index_tensors_select_the_right_columns():
    class Pick(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(2, 1)

        def forward(self, x):
            return self.b(F.relu(self.a(x))[:, torch.tensor([3, 1])])

    net = Pick()
    layers = trace_topology(net, lambda: net(torch.randn(2, 3)))
    (reader,) = layers["a"].consumers
    assert reader.columns.tolist() == [0, 1] and reader.neurons.tolist() == [3, 1]


def test_property_access_and_hooks_do_not_hide_the_activation():
    class Peek(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = self.a(x)
            if h.requires_grad:  # a property read (and a hook) between the layer and its activation
                h.register_hook(lambda g: None)
            return self.b(F.relu(h).T.T)

    net = Peek()
    layers = trace_topology(net, lambda: net(torch.randn(2, 3)))
    assert layers["a"].activation_name == "relu"
    assert [c.name for c in layers["a"].consumers] == ["b"]
