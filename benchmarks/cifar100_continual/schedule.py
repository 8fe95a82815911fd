"""Which classes are in the training set at which epoch: a pure, independently testable schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ClassSchedule:
    """How many classes are seen at each epoch of a class-incremental run.

    ``initial_classes`` at epoch 0, ``classes_per_increment`` more every ``epochs_per_increment`` epochs until
    ``total_classes`` are seen, then one last period on all of them.

    Classes are counted in the benchmark's (seeded) class order, so "the first ``k`` classes" are the ones seen.
    The last addition may add fewer classes than ``classes_per_increment`` when the total is not reached evenly.

    Args:
        initial_classes: Classes seen from epoch 0 (paper preset: 5; Dohare et al.: 5).
        classes_per_increment: Classes added at each addition (paper: 1; Dohare et al.: 5).
        epochs_per_increment: Epochs between two additions, and after the last one (paper: 15; Dohare et al.: 200).
        total_classes: Classes seen at the end (100 for all of CIFAR-100; fewer for a quick run).

    Raises:
        ValueError: On a count below 1 or ``initial_classes > total_classes``.

    Example:
        >>> s = ClassSchedule(initial_classes=2, classes_per_increment=1, epochs_per_increment=3, total_classes=4)
        >>> [s.classes_at(e) for e in range(s.total_epochs)]
        [2, 2, 2, 3, 3, 3, 4, 4, 4]
        >>> s.increment_epochs
        [3, 6]
    """

    initial_classes: int
    classes_per_increment: int
    epochs_per_increment: int
    total_classes: int = 100

    def __post_init__(self) -> None:
        for name in ("initial_classes", "classes_per_increment", "epochs_per_increment", "total_classes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if self.initial_classes > self.total_classes:
            raise ValueError(
                f"`initial_classes={self.initial_classes}` exceeds `total_classes={self.total_classes}`; "
                "lower `initial_classes` or raise `total_classes`."
            )

    @property
    def num_increments(self) -> int:
        """Number of class additions after epoch 0."""
        return math.ceil((self.total_classes - self.initial_classes) / self.classes_per_increment)

    @property
    def total_epochs(self) -> int:
        """Epochs of a full run: one period per class set, the last one on all classes."""
        return (self.num_increments + 1) * self.epochs_per_increment

    @property
    def increment_epochs(self) -> list[int]:
        """The epochs at whose start classes are added."""
        return [self.epochs_per_increment * (i + 1) for i in range(self.num_increments)]

    def task(self, epoch: int) -> int:
        """Index of the class set trained at ``epoch`` (0 for the initial classes); constant after the last."""
        self._check_epoch(epoch)
        return min(epoch // self.epochs_per_increment, self.num_increments)

    def classes_at(self, epoch: int) -> int:
        """Number of classes seen (trained, tested, not masked) at ``epoch``."""
        return min(self.initial_classes + self.task(epoch) * self.classes_per_increment, self.total_classes)

    def is_increment(self, epoch: int) -> bool:
        """Whether classes are added at the start of ``epoch``."""
        return epoch > 0 and self.task(epoch) != self.task(epoch - 1)

    def epoch_in_task(self, epoch: int) -> int:
        """Epochs since the current class set started (restarts at every addition; keeps counting after the last)."""
        return epoch - self.task(epoch) * self.epochs_per_increment

    def _check_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"`epoch` must be >= 0, got {epoch}.")
