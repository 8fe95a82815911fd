"""Run settings and the two presets: the paper's MLP (Sec. 4.2) and Dohare et al.'s ResNet-18.

Light to import (no torch): the command line builds its parser from it before loading any training code.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from ..harness.methods import method_names

if TYPE_CHECKING:
    from .data import Cifar100Arrays, CIFAR100Continual
    from .models import IncrementalClassifier

METHODS = method_names("cifar100_continual")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run except the method and the seed.

    The paper gives only the schedule (a class every 15 epochs, cumulative data, after Dohare et al.) and the
    thresholds; widths, optimizer and batch size of the ``paper`` preset are this benchmark's choices.
    """

    model: Literal["mlp", "resnet18"] = "mlp"
    widths: tuple[int, ...] = (512, 512, 512)  # MLP hidden layers
    width: int = 64  # ResNet first-stage channels
    initial_classes: int = 5
    classes_per_increment: int = 1
    epochs_per_increment: int = 15
    max_classes: int = 100
    val_per_class: int = 50
    batch_size: int = 90
    eval_batch_size: int = 1000
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_milestones: tuple[int, ...] = ()  # within each task; the rate is multiplied by lr_gamma at each
    lr_gamma: float = 0.2
    augment: bool = False
    rotation_degrees: float = 0.0
    grama_tau: float = 0.01
    redo_tau: float = 0.02
    reset_every: int | None = None  # None: reset at each class addition (the paper)
    log_every: int = 10  # measure the ratios every N steps

    def datamodule(self, data_dir: str, seed: int, source: Cifar100Arrays | None = None) -> CIFAR100Continual:
        """The run's datamodule (``source``: arrays already loaded, shared by the runs of a grid)."""
        from .data import CIFAR100Continual

        return CIFAR100Continual(
            data_dir,
            seed=seed,
            initial_classes=self.initial_classes,
            classes_per_increment=self.classes_per_increment,
            epochs_per_increment=self.epochs_per_increment,
            max_classes=self.max_classes,
            val_per_class=self.val_per_class,
            batch_size=self.batch_size,
            eval_batch_size=self.eval_batch_size,
            augment=self.augment,
            rotation_degrees=self.rotation_degrees,
            source=source,
        )

    def model_instance(self) -> IncrementalClassifier:
        """A freshly initialised model (uses the global RNG: seed it first)."""
        from .models import MLPClassifier, ResNet18Classifier

        common = dict(
            num_classes=self.max_classes,
            optimizer=self.optimizer,
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
        )
        if self.model == "resnet18":
            return ResNet18Classifier(width=self.width, **common)
        return MLPClassifier(widths=list(self.widths), **common)

    def override(self, **changes: Any) -> RunConfig:
        """A copy with the given fields changed (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


PRESETS: dict[str, RunConfig] = {
    # Sec. 4.2 / Fig. 5 right: ReLU MLP, one class added every 15 epochs; starts, like Dohare et al., with 5.
    "paper": RunConfig(),
    # Dohare et al. (2024): ResNet-18, 5 classes then 5 more every 200 epochs (4000 epochs), SGD with a per-task
    # step schedule, weight decay, crop/flip/rotation augmentation, batch 90, 450 + 50 images per class.
    "dohare": RunConfig(
        model="resnet18",
        classes_per_increment=5,
        epochs_per_increment=200,
        optimizer="sgd",
        lr=0.1,
        weight_decay=5e-4,
        lr_milestones=(60, 120, 160),
        augment=True,
        rotation_degrees=15.0,
        log_every=50,
    ),
}
