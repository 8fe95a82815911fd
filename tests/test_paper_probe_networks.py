"""The random-labels probe's networks (for the paper's probe-architectures experiment)."""

import torch
from torch import nn

from benchmarks.random_labels.fit import MLP


def test_networks_have_the_documented_layers():
    kinds = {n: [type(m).__name__ for m in MLP(4, 8, 2, 3, 1e-3, n).net] for n in ("relu", "leaky_relu", "layer_norm")}
    assert kinds["relu"] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert kinds["leaky_relu"] == ["Linear", "LeakyReLU", "Linear", "LeakyReLU", "Linear"]
    assert kinds["layer_norm"] == ["Linear", "LayerNorm", "ReLU"] * 2 + ["Linear"]


def test_bro_network_is_residual_layer_norm_blocks():
    torch.manual_seed(0)
    model = MLP(4, 8, 2, 3, 1e-3, "bro")
    x = torch.randn(5, 4)
    # By hand: stem Linear-LN-ReLU, then h + LN(Linear(ReLU(LN(Linear(h))))) per block, then the head.
    stem, ln0, block1, block2, head = model.net[0], model.net[1], model.net[3], model.net[4], model.net[5]
    h = torch.relu(ln0(stem(x)))
    for block in (block1, block2):
        lin1, ln1, _, lin2, ln2 = block.body
        h = h + ln2(lin2(torch.relu(ln1(lin1(h)))))
    torch.testing.assert_close(model(x), head(h))
    assert sum(isinstance(m, nn.LayerNorm) for m in model.modules()) == 5
