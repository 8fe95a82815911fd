"""``ReGraMa()`` and ``ReDo()`` at their defaults on the architectures users bring (a reset every 2 steps).

Each model has one neuron of a layer whose readers are mapped planted dead (zero incoming weights; Linear: bias
-10 before a ReLU; Conv: a constant channel that its BatchNorm turns into 0 before a ReLU). At the reset step the
callback must re-draw it and zero the weights that read it, which are named here from the architecture, not
from the tracer; the layers that write a residual stream must be scored (measure-only under the defaults).
"""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from helpers import Classifier, trainer
from torch import nn
from torch.nn import functional as F  # noqa: N812
from torch.utils.data import DataLoader, TensorDataset

from regrama_lightning import ReDo, ReGraMa

NEURON = 5


class Encoder(nn.Module):
    def __init__(self, norm_first: bool) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True, norm_first=norm_first)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.enc(self.inp(x)).mean(1))


class Recurrent(nn.Module):
    """A GRU encoder, a residual MLP block and a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(6, 16, batch_first=True)
        self.proj, self.fc1, self.fc2 = nn.Linear(16, 16), nn.Linear(16, 32), nn.Linear(32, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = self.proj(self.gru(x)[0][:, -1])
        return self.head(h + self.fc2(F.relu(self.fc1(h))))


def plant_linear(layer: nn.Linear) -> None:
    with torch.no_grad():
        layer.weight[NEURON] = 0.0
        layer.bias[NEURON] = -10.0


def plant_conv(conv: nn.Conv2d) -> None:
    with torch.no_grad():
        conv.weight[NEURON] = 0.0


def transformer(norm_first: bool):
    net = Encoder(norm_first)
    block = net.enc.layers[0]
    plant_linear(block.linear1)
    return net, (5, 6), "enc.layers.0.linear1", [block.linear2.weight[:, NEURON]], None, "enc.layers.0.linear2"


def resnet18():
    net = torchvision.models.resnet18(num_classes=3)
    block = net.layer1[0]
    plant_conv(block.conv1)
    return net, (3, 32, 32), "layer1.0.conv1", [block.conv2.weight[:, NEURON]], block.bn1, "layer1.0.conv2"


def mobilenet_v3_small():
    net = torchvision.models.mobilenet_v3_small(num_classes=3)
    depthwise, project = net.features[2].block[1], net.features[2].block[2]
    plant_conv(depthwise[0])  # a depthwise conv: channel c reads input channel c only
    readers = [project[0].weight[:, NEURON]]
    return net, (3, 32, 32), "features.2.block.1.0", readers, depthwise[1], "features.1.block.0.0"


def recurrent():
    net = Recurrent()
    plant_linear(net.fc1)
    return net, (5, 6), "fc1", [net.fc2.weight[:, NEURON]], None, "proj"


MODELS = {
    "transformer-post-ln": lambda: transformer(norm_first=False),
    "transformer-pre-ln": lambda: transformer(norm_first=True),
    "resnet18": resnet18,
    "mobilenet_v3_small": mobilenet_v3_small,
    "gru-encoder": recurrent,
}


def batches(shape: tuple[int, ...]) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, *shape, generator=g), torch.randint(0, 3, (8,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=4)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_defaults_score_every_layer_they_can_and_reset_a_mappable_one(model):
    for make in (lambda: ReGraMa(reset_every_n_steps=2), lambda: ReDo(reset_every_n_steps=2)):
        torch.manual_seed(0)
        net, shape, planted, readers, norm, measured_only = MODELS[model]()
        callback = make()
        trainer([callback], max_steps=2).fit(Classifier(net), batches(shape))
        name = type(callback).__name__
        layer = f"net.{planted}"
        assert layer in callback.scored and not callback.layers[layer].writes_residual, name
        assert callback.resets == 1 and callback.last_metrics["reset/neurons"] >= 1, name
        module = net.get_submodule(planted)
        assert module.weight[NEURON].abs().sum() > 0, f"{name}: the dead neuron was not re-drawn"
        if module.bias is not None:
            assert abs(module.bias[NEURON].item()) <= 1 / math.sqrt(module.weight[0].numel()), name
        for columns in readers:
            assert torch.equal(columns, torch.zeros_like(columns)), f"{name}: a reader still reads it"
        if norm is not None:  # its own BatchNorm entry is back at its initial values
            assert (norm.weight[NEURON].item(), norm.bias[NEURON].item()) == (1.0, 0.0), name
            assert (norm.running_mean[NEURON].item(), norm.running_var[NEURON].item()) == (0.0, 1.0), name
        writer = f"net.{measured_only}"
        assert writer in callback.scored and callback.layers[writer].writes_residual, name
        assert callback.latest_scores[writer].isfinite().all(), name
