"""The tracer on the architectures users bring: each model's layers checked against a list written by hand.

Readers the tracer cannot map (attention's input projection, a GRU) are recorded, never raised: refusing belongs
to the callback, and only for layers it would reset.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F  # noqa: N812

from regrama_lightning import trace_topology
from regrama_lightning.tracing import ActivationProbe

ATTENTION = "multi_head_attention_forward"


def probe_against_hooks(net, layers, x, hooked: dict[str, nn.Module], by_hand) -> None:
    """ReDo's value as the probe measures it equals ``by_hand(output of the hooked module)``, per layer."""
    seen, outputs = {}, {}
    handles = [m.register_forward_hook(lambda m, i, o, n=n: outputs.update({n: o})) for n, m in hooked.items()]
    with ActivationProbe({n: layers[n] for n in hooked}, lambda n, out, s, c: seen.update({n: s / c})):
        net(x)
    for handle in handles:
        handle.remove()
    assert seen.keys() == hooked.keys()
    for name in hooked:
        torch.testing.assert_close(seen[name], by_hand(outputs[name].detach()), rtol=1e-5, atol=1e-6)


def residual_writers(layers) -> set[str]:
    return {name for name, layer in layers.items() if layer.writes_residual}


def readers(layer) -> list[tuple[str, list[int], list[int]]]:
    return [(c.name, c.columns.tolist(), c.neurons.tolist()) for c in layer.consumers]


class Encoder(nn.Module):
    """``nn.TransformerEncoder`` (two layers) and a Linear head on the mean over positions."""

    def __init__(self, batch_first: bool, norm_first: bool, width: int = 8, hidden: int = 16):
        super().__init__()
        self.batch_first = batch_first
        block = nn.TransformerEncoderLayer(width, 2, hidden, 0.0, batch_first=batch_first, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(block, 2, enable_nested_tensor=False)
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        return self.head(self.encoder(x).mean(1 if self.batch_first else 0))


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_encoder(batch_first, norm_first):
    torch.manual_seed(0)
    net = Encoder(batch_first, norm_first)
    x = torch.randn(2, 5, 8) if batch_first else torch.randn(5, 2, 8)
    layers = trace_topology(net, lambda: net(x))
    blocks = [f"encoder.layers.{i}" for i in range(2)]
    # Attention's output projection and the feed-forward's second Linear add into the stream; the first Linear
    # is a hidden layer whose 16 neurons the second one reads, column j neuron j.
    assert residual_writers(layers) == {f"{b}.{n}" for b in blocks for n in ("self_attn.out_proj", "linear2")}
    for block in blocks:
        hidden = layers[f"{block}.linear1"]
        assert readers(hidden) == [(f"{block}.linear2", list(range(16)), list(range(16)))]
        assert hidden.activation_name == "relu" and not hidden.writes_residual and not hidden.unmapped_readers
    assert "encoder.layers.1.linear1" in layers["encoder.layers.0.linear2"].residual_readers
    assert "head" in layers["encoder.layers.1.linear2"].residual_readers
    # The next block's attention reads the stream through weights the tracer does not map: recorded, not raised.
    for name in ("encoder.layers.0.self_attn.out_proj", "encoder.layers.0.linear2"):
        assert layers[name].unmapped_readers == {("encoder.layers.1.self_attn.in_proj_weight", ATTENTION)}
    assert layers["head"].is_output
    assert all(layer.called and layer.activation.error is None for layer in layers.values())
    hidden = {f"{b}.linear1": net.get_submodule(f"{b}.linear1") for b in blocks}  # relu is a function here
    probe_against_hooks(net, layers, x, hidden, lambda out: F.relu(out).abs().mean((0, 1)))


def test_resnet18():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=5)
    layers = trace_topology(net, lambda: net(torch.randn(2, 3, 32, 32)))
    blocks = [f"layer{stage}.{block}" for stage in range(1, 5) for block in range(2)]
    downsamples = [f"layer{stage}.0.downsample.0" for stage in range(2, 5)]
    # The stem, each block's second conv and each downsampling shortcut write the residual stream.
    assert residual_writers(layers) == {"conv1", *(f"{b}.conv2" for b in blocks), *downsamples}
    for block in blocks:  # each block's first conv: a hidden layer read by the block's second conv
        first = layers[f"{block}.conv1"]
        width = first.size
        assert readers(first) == [(f"{block}.conv2", list(range(width)), list(range(width)))]
        assert [n for n, _ in first.norms] == [f"{block}.bn1"] and first.activation_name == "batch_norm+relu"
        assert [n for n, _ in layers[f"{block}.conv2"].norms] == [f"{block}.bn2"]
    assert [n for n, _ in layers["conv1"].norms] == ["bn1"]
    assert [c.name for c in layers["conv1"].consumers] == ["layer1.0.conv1"]  # read directly, and via the stream
    for shortcut in downsamples:
        assert [n for n, _ in layers[shortcut].norms] == [shortcut[:-1] + "1"]
    assert layers["fc"].is_output
    assert not any(layer.unmapped_readers for layer in layers.values())
    assert all(layer.activation.error is None for layer in layers.values())
    norms = {f"{b}.conv1": net.get_submodule(f"{b}.bn1") for b in blocks}  # conv -> bn -> relu, hooked at bn
    probe_against_hooks(net, layers, torch.randn(2, 3, 32, 32), norms, lambda out: F.relu(out).mean((0, 2, 3)))


def test_mobilenet_v3_small():
    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v3_small(num_classes=5)
    layers = trace_topology(net, lambda: net(torch.randn(2, 3, 32, 32)))
    # torchvision's configuration: squeeze-excitation in blocks 1 and 4-11; a skip connection in 3, 5, 6, 8, 10, 11.
    with_se, with_skip = {1, *range(4, 12)}, {3, 5, 6, 8, 10, 11}
    gates = {"features.1.block.0.0", "features.1.block.1.fc2"}  # block 1 has no expansion conv
    gates |= {f"features.{i}.block.{n}" for i in with_se - {1} for n in ("1.0", "2.fc2")}
    # A block's projection writes the stream when its output is summed: it has a skip, or the next block does.
    projections = {f"features.{i}.block.{3 if i in with_se - {1} else 2}.0" for i in range(1, 12)}
    stream = {p for p in projections if int(p.split(".")[1]) in with_skip | {i - 1 for i in with_skip}}
    assert residual_writers(layers) == gates | stream
    assert layers["features.1.block.1.fc1"].activation_name == "relu"  # the squeeze Linear's ReLU
    assert layers["features.1.block.1.fc2"].activation_name == "hardsigmoid"
    assert readers(layers["classifier.0"]) == [("classifier.3", list(range(1024)), list(range(1024)))]
    assert layers["classifier.3"].is_output
    assert not any(layer.unmapped_readers for layer in layers.values())
    assert all(layer.activation.error is None for layer in layers.values())


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.gru, self.head = nn.Linear(6, 8), nn.GRU(8, 4, batch_first=True), nn.Linear(4, 3)

    def forward(self, x):
        out, _ = self.gru(F.relu(self.inp(x)))
        return self.head(out[:, -1])


def test_gru_encoder_with_a_linear_head():
    torch.manual_seed(0)
    net = Recurrent()
    layers = trace_topology(net, lambda: net(torch.randn(2, 5, 6)))
    assert sorted(layers) == ["head", "inp"]
    # The GRU's input weights read `inp`: a reader the tracer cannot map to columns, recorded for the callback.
    # The head reads the GRU's state, computed by those weights: not a reader of `inp`.
    assert layers["inp"].unmapped_readers == {("gru.weight_ih_l0", "gru")} and not layers["inp"].consumers
    assert layers["inp"].activation_name == "relu" and layers["inp"].activation.error is None
    assert layers["head"].is_output and not layers["head"].unmapped_readers
