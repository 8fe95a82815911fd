"""The paper's ReLU MLP and Dohare et al.'s ResNet-18 as class-incremental LightningModules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from .data import EVAL_SETS

OptimizerName = Literal["sgd", "adam"]


def seen_logits(logits: Tensor, seen: int) -> Tensor:
    """The logits of the first ``seen`` classes (labels are positions in the class order).

    The same as masking the unseen classes' logits to ``-inf``: softmax, cross-entropy, its gradient and the
    argmax over all classes are identical, and unseen classes can never be predicted. Slicing is just cheaper.
    """
    return logits[:, :seen]


class IncrementalClassifier(pl.LightningModule):
    """Class-incremental training on the classes seen so far; subclasses set ``self.net``.

    The number of seen classes comes from the datamodule's ``num_seen_classes`` at the start of every training and
    validation epoch (all ``num_classes`` without one). Loss and accuracy are summed on the device and logged once
    per epoch (``train/loss``, ``train/acc``, ``val/acc``, ``test/acc``, ...), so training steps never sync.

    Args:
        num_classes: Outputs of the network (all classes of the run).
        optimizer: ``"sgd"`` (with ``momentum``) or ``"adam"``.
        lr: Learning rate (a per-task schedule is set by a callback, see ``methods.TaskLRSchedule``).
        momentum: SGD momentum.
        weight_decay: L2 weight decay of the optimizer.

    Raises:
        ValueError: On an invalid argument.
    """

    net: nn.Module

    def __init__(
        self,
        num_classes: int = 100,
        optimizer: OptimizerName = "adam",
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"`num_classes` must be a positive integer, got {num_classes!r}.")
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"`optimizer` must be 'sgd' or 'adam', got {optimizer!r}.")
        if not lr > 0:
            raise ValueError(f"`lr` must be > 0, got {lr}.")
        if not 0 <= momentum < 1:
            raise ValueError(f"`momentum` must be in [0, 1), got {momentum}.")
        if not weight_decay >= 0:
            raise ValueError(f"`weight_decay` must be >= 0, got {weight_decay}.")
        self.num_classes = num_classes
        self.optimizer_name = optimizer
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.num_seen_classes = num_classes
        self._sums: dict[str, list[Any]] = {}  # split -> [loss sum (tensor), correct (tensor), count (int)]

    def forward(self, x: Tensor) -> Tensor:
        """Logits of all ``num_classes`` classes."""
        return self.net(x)

    def _follow_datamodule(self) -> None:
        seen = getattr(self.trainer.datamodule, "num_seen_classes", None)
        if seen is not None:
            self.num_seen_classes = int(seen)

    def on_train_epoch_start(self) -> None:
        """Take this epoch's class count."""
        self._follow_datamodule()

    def on_validation_epoch_start(self) -> None:
        """Take this epoch's class count."""
        self._follow_datamodule()

    def _loss(self, batch: tuple[Tensor, Tensor], split: str) -> Tensor:
        x, y = batch
        logits = seen_logits(self(x), self.num_seen_classes)
        loss = F.cross_entropy(logits, y)
        correct = (logits.detach().argmax(1) == y).sum()
        sums = self._sums.get(split)
        if sums is None:
            self._sums[split] = [loss.detach() * len(y), correct, len(y)]
        else:
            sums[0] = sums[0] + loss.detach() * len(y)
            sums[1] = sums[1] + correct
            sums[2] += len(y)
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Cross-entropy over the seen classes."""
        return self._loss(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        """Accuracy on the validation hold-out (loader 0) or the test set (loader 1) of the seen classes."""
        with torch.no_grad():
            self._loss(batch, EVAL_SETS[dataloader_idx])

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Accuracy on the test set of the seen classes."""
        self._loss(batch, "test")

    def _log_sums(self, splits: Sequence[str]) -> None:
        for split in splits:
            sums = self._sums.pop(split, None)
            if sums is not None:  # one host sync per split and epoch
                self.log(f"{split}/loss", sums[0] / sums[2])
                self.log(f"{split}/acc", sums[1].float() / sums[2])

    def on_train_epoch_end(self) -> None:
        """Log the epoch's mean training loss and accuracy."""
        self._log_sums(["train"])

    def on_validation_epoch_end(self) -> None:
        """Log validation and test loss and accuracy."""
        self._log_sums(EVAL_SETS)

    def on_test_epoch_end(self) -> None:
        """Log test loss and accuracy."""
        self._log_sums(["test"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """SGD with momentum or Adam over all parameters, with L2 weight decay."""
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(
                self.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
            )
        return torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


class MLPClassifier(IncrementalClassifier):
    """A fully connected ReLU network on flattened 3x32x32 images (the paper's Sec. 4.2 backbone).

    The paper does not give widths, depth or optimizer; the defaults (3 x 512, Adam 1e-3) are this benchmark's.

    Args:
        widths: Hidden units of each hidden layer (its length is the depth).
        in_features: Input features (3 * 32 * 32 for CIFAR).
        num_classes: Outputs (all classes of the run).
        optimizer: ``"sgd"`` or ``"adam"``.
        lr: Learning rate.
        momentum: SGD momentum.
        weight_decay: L2 weight decay.

    Raises:
        ValueError: On an invalid argument.

    Example:
        >>> model = MLPClassifier(widths=[64, 64], num_classes=10)
        >>> model(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        widths: Sequence[int] = (512, 512, 512),
        in_features: int = 3 * 32 * 32,
        num_classes: int = 100,
        optimizer: OptimizerName = "adam",
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(num_classes, optimizer, lr, momentum, weight_decay)
        if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
            raise ValueError(f"`widths` must be a non-empty list of positive integers, got {widths!r}.")
        self.save_hyperparameters()
        layers: list[nn.Module] = [nn.Flatten()]
        for fan_in, fan_out in zip([in_features, *widths[:-1]], widths, strict=True):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(widths[-1], num_classes))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a ReLU between, added to an (optionally projected) shortcut, then ReLU."""

    def __init__(self, fan_in: int, fan_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(fan_in, fan_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(fan_out)
        self.conv2 = nn.Conv2d(fan_out, fan_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(fan_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or fan_in != fan_out:
            self.shortcut = nn.Sequential(nn.Conv2d(fan_in, fan_out, 1, stride, bias=False), nn.BatchNorm2d(fan_out))

    def forward(self, x: Tensor) -> Tensor:
        """Residual block output."""
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18Classifier(IncrementalClassifier):
    """Dohare et al.'s (2024) CIFAR ResNet-18: 3x3 stride-1 stem, no max-pool, BatchNorm, 4 x 2 basic blocks.

    Args:
        width: Channels of the first stage (64 in ResNet-18; stages have 1, 2, 4, 8 times as many).
        num_classes: Outputs (all classes of the run).
        optimizer: ``"sgd"`` (Dohare et al.) or ``"adam"``.
        lr: Learning rate (Dohare et al.: 0.1, restarted with each task by ``methods.TaskLRSchedule``).
        momentum: SGD momentum (0.9).
        weight_decay: L2 weight decay (5e-4).

    Raises:
        ValueError: On an invalid argument.

    Example:
        >>> model = ResNet18Classifier(width=8, num_classes=10)
        >>> model(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        width: int = 64,
        num_classes: int = 100,
        optimizer: OptimizerName = "sgd",
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
    ) -> None:
        super().__init__(num_classes, optimizer, lr, momentum, weight_decay)
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"`width` must be a positive integer, got {width!r}.")
        self.save_hyperparameters()
        stages: list[nn.Module] = []
        fan_in = width
        for i, fan_out in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 1 if i == 0 else 2
            stages += [BasicBlock(fan_in, fan_out, stride), BasicBlock(fan_out, fan_out, 1)]
            fan_in = fan_out
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            *stages,
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8 * width, num_classes),
        )
