"""The four architectures every toolkit method is tried on: MLP, CNN with BatchNorm, BRO-net-style residual
network, and SAC's manual optimisation (from test_manual_optimization)."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from helpers import Classifier, loader, mlp
from test_manual_optimization import SAC, replay
from torch import nn


class BroBlock(nn.Module):
    """``x + LN(Linear(ReLU(LN(Linear(x)))))``, BRO-net's residual block."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.inner = nn.Linear(width, width)
        self.inner_norm = nn.LayerNorm(width)
        self.outer = nn.Linear(width, width)
        self.outer_norm = nn.LayerNorm(width)

    def forward(self, x):
        return x + self.outer_norm(self.outer(torch.relu(self.inner_norm(self.inner(x)))))


def bro_net(inputs: int = 6, width: int = 16, classes: int = 3, blocks: int = 2) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(inputs, width), nn.LayerNorm(width), nn.ReLU(), *[BroBlock(width) for _ in range(blocks)],
        nn.Linear(width, classes),
    )  # fmt: skip


def cnn_bn(classes: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1),
        nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes),
    )  # fmt: skip


def architectures() -> dict[str, tuple[pl.LightningModule, object]]:
    """``{name: (module, train dataloader)}``, fresh, seeded."""
    torch.manual_seed(0)
    return {
        "mlp": (Classifier(mlp((6, 16, 16, 3))), loader(n=64)),
        "cnn_bn": (Classifier(cnn_bn()), loader(n=32, shape=(2, 5, 5))),
        "bro": (Classifier(bro_net()), loader(n=64)),
        "sac": (SAC(policy_delay=2), replay(8)),
    }
