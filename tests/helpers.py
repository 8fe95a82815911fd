"""Small models and modules shared by the tests."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal

import lightning.pytorch as pl
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812
from torch.utils.data import DataLoader, TensorDataset


def mlp(widths=(6, 8, 8, 3), activation=nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def plant_dead_neuron(linear: nn.Linear, neuron: int) -> None:
    """Make ``neuron`` output <= 0 for any input of a ReLU layer: zero weights, very negative bias."""
    with torch.no_grad():
        linear.weight[neuron] = 0.0
        linear.bias[neuron] = -10.0


class Classifier(pl.LightningModule):
    def __init__(self, net: nn.Module, lr: float = 1e-2, optimizer: str = "adam") -> None:
        super().__init__()
        self.net = net
        self.lr = lr
        self.optimizer_name = optimizer

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
        if self.optimizer_name == "amsgrad":
            return torch.optim.Adam(self.parameters(), lr=self.lr, amsgrad=True)
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def loader(n=64, dim=6, classes=3, batch=16, seed=0, shape=None) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *(shape or (dim,)), generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False)


def trainer(callbacks, max_steps=8, **kwargs) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    defaults.update(kwargs)
    return pl.Trainer(callbacks=callbacks, max_steps=max_steps, **defaults)


class CtrlC(pl.Callback):
    """Presses Ctrl-C (a real SIGINT to this process) before the first training batch at which ``when`` holds.

    Args:
        when: ``when(trainer, pl_module, batch_idx) -> bool``.
    """

    def __init__(self, when):
        self.when, self.fired = when, False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if not self.fired and self.when(trainer, pl_module, batch_idx):
            self.fired = True
            os.kill(os.getpid(), signal.SIGINT)


@contextlib.contextmanager
def sigint_restored():
    """Python's Ctrl-C handler inside, whatever the process had, and the process's own handler back after.

    Lightning ignores SIGINT after a Ctrl-C (so that a second one cannot break its shutdown), and a test process
    started in the background by a non-interactive shell ignores it from the start.
    """
    handler = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)
