"""Class-incremental CIFAR-100: the files, the on-device tensors, batched augmentation and the LightningDataModule.

The whole (kept part of the) dataset is normalised once and lives on the training device as one tensor sorted
by class position, so the data of the first ``k`` classes of the seeded class order is a contiguous prefix. Each
epoch's batches are index-selected from it and augmented batch-wise on the device: no per-image Python work, no
worker processes, no collate.
"""

from __future__ import annotations

import math
import pickle
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812
from torchvision.datasets import CIFAR100
from torchvision.datasets.utils import check_integrity

from .schedule import ClassSchedule

# Per-channel statistics of the CIFAR-100 training set, as Dohare et al. normalise with.
MEAN = (0.5071, 0.4865, 0.4409)
STD = (0.2673, 0.2564, 0.2762)
FOLDER = CIFAR100.base_folder  # "cifar-100-python"
FILES = ("train", "test", "meta")

Transform = Callable[[Tensor, torch.Generator], Tensor]


@dataclass(frozen=True)
class Cifar100Arrays:
    """CIFAR-100 as read from its files: uint8 images ``N x 3 x 32 x 32`` (CHW) and fine labels."""

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    class_names: list[str]


def read_split(folder: Path, split: str) -> tuple[Tensor, Tensor]:
    """Read one split file of the extracted archive exactly as torchvision does (pickle, ``latin1``).

    Args:
        folder: The ``cifar-100-python`` folder.
        split: ``"train"`` or ``"test"``.

    Returns:
        uint8 images ``N x 3 x 32 x 32`` and int64 fine labels ``N``.
    """
    with open(folder / split, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    images = torch.as_tensor(entry["data"], dtype=torch.uint8).reshape(-1, 3, 32, 32)
    labels = torch.as_tensor(entry["fine_labels"], dtype=torch.long)
    if len(images) != len(labels):
        raise ValueError(f"{folder / split}: {len(images)} images but {len(labels)} labels.")
    return images, labels


def _download(root: Path) -> None:
    """Torchvision's download, extraction and md5 check; a failed download leaves nothing it made behind.

    Raises:
        RuntimeError: When the archive cannot be fetched (offline, a proxy, a server error), naming the URL.
    """
    made = [p for p in (root, *root.parents) if not p.exists()]
    before = set(root.iterdir()) if root.exists() else set()
    try:
        CIFAR100(str(root), train=True, download=True)
    except OSError as error:  # URLError, connection and socket errors are OSErrors
        for path in set(root.iterdir()) - before if root.exists() else ():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        for path in made:  # innermost first: the folders this attempt created
            if path.exists() and not any(path.iterdir()):
                path.rmdir()
        reason = getattr(error, "reason", error)
        raise RuntimeError(
            f"--download could not fetch {CIFAR100.url} ({reason}). On a machine without internet access, download "
            f"it elsewhere and extract it into --data-dir {root} so that {root / FOLDER}/train exists."
        ) from None


def load_cifar100(data_dir: str | Path, download: bool = False, verify_integrity: bool = True) -> Cifar100Arrays:
    """Load CIFAR-100 from ``<data_dir>/cifar-100-python/``.

    Args:
        data_dir: Folder that holds (or will hold, with ``download``) the extracted ``cifar-100-python`` folder.
        download: Download and extract the archive with torchvision first (needs internet; skipped when the files
            are already there and intact).
        verify_integrity: Check the files against torchvision's md5 sums. Keep it on for real data; turn it off
            only for files you wrote yourself in the same format (tests, synthetic timing data).

    Returns:
        The arrays and the fine class names.

    Raises:
        FileNotFoundError: When a file is missing, naming the expected path and how to get the data.
        RuntimeError: When a file fails the md5 check, or the download fails.
    """
    root = Path(data_dir).expanduser()
    folder = root / FOLDER
    if download:
        _download(root)
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-100 not found: expected the files {list(FILES)} in {folder}/ (missing: {missing}). Pass "
            f"--download (download=True) on a machine with internet access, or download {CIFAR100.url} elsewhere "
            f"and extract it into {root}/ so that {folder}/train exists."
        )
    if verify_integrity:
        expected = [*CIFAR100.train_list, *CIFAR100.test_list, [CIFAR100.meta["filename"], CIFAR100.meta["md5"]]]
        for name, md5 in expected:
            if not check_integrity(str(folder / name), md5):
                raise RuntimeError(
                    f"{folder / name} fails torchvision's md5 check: it is corrupted or not the official CIFAR-100 "
                    "file. Delete the folder and download it again; for files you made yourself in the same format "
                    "pass verify_integrity=False (--no-verify-integrity)."
                )
    train_images, train_labels = read_split(folder, "train")
    test_images, test_labels = read_split(folder, "test")
    with open(folder / "meta", "rb") as f:
        class_names = list(pickle.load(f, encoding="latin1")["fine_label_names"])
    return Cifar100Arrays(train_images, train_labels, test_images, test_labels, class_names)


def augment_batch(
    x: Tensor, generator: torch.Generator, padding: int = 4, flip: bool = True, rotation_degrees: float = 0.0
) -> Tensor:
    """Random crop with zero padding, horizontal flip and rotation of a whole batch, in a few tensor ops.

    The padding is zero in normalised space (the mean colour). Crop and flip are one gather; rotation, by an angle
    drawn uniformly from ``[0, rotation_degrees]`` (Dohare et al.'s range), is one bilinear ``grid_sample``.

    Args:
        x: Images ``B x C x H x W`` (on any device).
        generator: Random generator on ``x``'s device.
        padding: Pixels of padding on each side before a crop back to ``H x W``; 0 for no crop.
        flip: Flip each image horizontally with probability 1/2.
        rotation_degrees: Upper end of the rotation angle; 0 for no rotation.

    Returns:
        The augmented batch, same shape as ``x``.
    """
    b, c, h, w = x.shape
    device = x.device
    rows = torch.arange(h, device=device).expand(b, h)
    cols = torch.arange(w, device=device).expand(b, w)
    if flip:
        flipped = torch.rand(b, 1, generator=generator, device=device) < 0.5
        cols = torch.where(flipped, w - 1 - cols, cols)
    if padding:
        x = F.pad(x, (padding, padding, padding, padding))
        offsets = torch.randint(0, 2 * padding + 1, (2, b, 1), generator=generator, device=device)
        rows, cols = rows + offsets[0], cols + offsets[1]
    index = (rows[:, :, None] * x.shape[-1] + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    out = x.flatten(2).gather(2, index).view(b, c, h, w)
    if rotation_degrees > 0:
        angle = torch.rand(b, generator=generator, device=device) * math.radians(rotation_degrees)
        cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        grid = F.affine_grid(theta, list(out.shape), align_corners=False)
        out = F.grid_sample(out, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out


class DeviceBatches:
    """Mini-batches index-selected from tensors that already live on the training device.

    Lightning takes any iterable with a length as a dataloader; this one yields whole batches, so there is no
    per-sample indexing, collate or worker process.

    Args:
        x: Inputs, first dimension the samples.
        y: Labels.
        batch_size: Samples per batch (the last batch may be smaller).
        seed: Seed of the shuffle and of the augmentation; ``None`` keeps the order and skips ``transform``.
        transform: Batch augmentation ``(x, generator) -> x``, applied to shuffled batches only.
    """

    def __init__(
        self, x: Tensor, y: Tensor, batch_size: int, seed: int | None = None, transform: Transform | None = None
    ) -> None:
        self.x, self.y, self.batch_size, self.seed, self.transform = x, y, batch_size, seed, transform

    def __len__(self) -> int:
        return math.ceil(len(self.y) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        if self.seed is None:
            for start in range(0, len(self.y), self.batch_size):
                yield self.x[start : start + self.batch_size], self.y[start : start + self.batch_size]
            return
        generator = torch.Generator(device=self.x.device).manual_seed(self.seed)
        order = torch.randperm(len(self.y), generator=generator, device=self.x.device)
        for index in order.split(self.batch_size):
            x = self.x.index_select(0, index)
            yield (self.transform(x, generator) if self.transform else x), self.y.index_select(0, index)


class CIFAR100Continual(pl.LightningDataModule):
    """Class-incremental CIFAR-100 on cumulative data: train on every class seen so far, test on them too.

    The class order is a permutation drawn from ``seed`` (or given); labels are renumbered to their position in
    that order, so at ``k`` seen classes the labels are ``0..k-1`` and a model masks its logits to the first
    ``k`` (the attribute ``num_seen_classes``, updated with every dataloader, tells it ``k``). Per class,
    ``val_per_class`` training images (a seeded choice) are held out as a validation set (Dohare et al.: 450
    train + 50 val). The test set is the official test images of the seen classes. Needs
    ``Trainer(reload_dataloaders_every_n_epochs=1)`` so that each epoch gets its class set.

    Args:
        data_dir: Folder with the extracted ``cifar-100-python/`` (see :func:`load_cifar100`).
        download: Download the archive with torchvision first (needs internet).
        verify_integrity: torchvision's md5 check of the files; ``False`` only for files you made yourself.
        seed: Seed of the class order, the hold-out choice, the batch order and the augmentation.
        initial_classes: Classes seen from epoch 0.
        classes_per_increment: Classes added at each addition.
        epochs_per_increment: Epochs between additions.
        max_classes: Classes in the whole run (100 for all of CIFAR-100); only these are loaded to the device.
        val_per_class: Training images per class held out for validation (0 for none).
        batch_size: Training batch size.
        eval_batch_size: Batch size of validation and test.
        augment: Random crop (``crop_padding``), horizontal flip and rotation (``rotation_degrees``) of each
            training batch, on the device.
        crop_padding: Padding of the random crop, in pixels.
        rotation_degrees: Rotation angles are drawn from ``[0, rotation_degrees]``; 0 for none.
        class_order: An explicit class order (a permutation of the class indices) instead of the seeded one.
        source: Arrays already in memory (e.g. synthetic data for timing) instead of the files.

    Raises:
        ValueError: On an invalid argument, naming it and the fix.

    Example:
        >>> dm = CIFAR100Continual("~/data", initial_classes=5, classes_per_increment=1, epochs_per_increment=15)
        >>> dm.schedule.total_epochs
        1440
    """

    def __init__(
        self,
        data_dir: str | Path = "data",
        download: bool = False,
        verify_integrity: bool = True,
        seed: int = 0,
        initial_classes: int = 5,
        classes_per_increment: int = 1,
        epochs_per_increment: int = 15,
        max_classes: int = 100,
        val_per_class: int = 50,
        batch_size: int = 90,
        eval_batch_size: int = 1000,
        augment: bool = False,
        crop_padding: int = 4,
        rotation_degrees: float = 0.0,
        class_order: Sequence[int] | None = None,
        source: Cifar100Arrays | None = None,
    ) -> None:
        super().__init__()
        if isinstance(max_classes, bool) or not isinstance(max_classes, int) or not 1 <= max_classes <= 100:
            raise ValueError(f"`max_classes` must be an integer in [1, 100], got {max_classes!r}.")
        self.schedule = ClassSchedule(initial_classes, classes_per_increment, epochs_per_increment, max_classes)
        for name, value, low in (
            ("batch_size", batch_size, 1),
            ("eval_batch_size", eval_batch_size, 1),
            ("val_per_class", val_per_class, 0),
            ("crop_padding", crop_padding, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")
        if not 0 <= rotation_degrees <= 180:
            raise ValueError(f"`rotation_degrees` must be in [0, 180], got {rotation_degrees}; 0 turns it off.")
        if class_order is not None and len(class_order) < max_classes:
            raise ValueError(
                f"`class_order` has {len(class_order)} classes but max_classes={max_classes}; give at least that many."
            )
        self.data_dir = Path(data_dir).expanduser()
        self.download = download
        self.verify_integrity = verify_integrity
        self.seed = seed
        self.val_per_class = val_per_class
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.augment = augment
        self.crop_padding = crop_padding
        self.rotation_degrees = float(rotation_degrees)
        self.class_order = list(class_order) if class_order is not None else None
        self.source = source
        self.order: list[int] = []  # original class index of each position, for the kept classes
        self.class_names: list[str] = []
        self.num_seen_classes = initial_classes  # updated whenever a dataloader is made
        self.train_x = self.train_y = self.val_x = self.val_y = self.test_x = self.test_y = torch.empty(0)
        self._ends: dict[str, list[int]] = {}  # per split: samples of the first k classes, k = 0..max_classes

    def prepare_data(self) -> None:
        """Download once per node when asked (Lightning calls this on one process only)."""
        if self.download and self.source is None:
            CIFAR100(str(self.data_dir), train=True, download=True)

    def setup(self, stage: str | None = None) -> None:
        """Load, renumber, split, normalise and move the kept classes to the training device (once)."""
        if self._ends:
            return
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        self.build(device)

    def build(self, device: torch.device | str = "cpu") -> None:
        """What :meth:`setup` does, for use without a Trainer.

        Args:
            device: Where the tensors live (the training device).

        Raises:
            ValueError: When the data has fewer classes than ``max_classes`` or a class has too few images
                for ``val_per_class``, or ``class_order`` is not a permutation of the data's classes.
        """
        download = self.download and self.trainer is None  # with a Trainer, prepare_data() downloaded
        data = self.source or load_cifar100(self.data_dir, download, self.verify_integrity)
        num_classes = len(data.class_names)
        kept = self.schedule.total_classes
        if kept > num_classes:
            raise ValueError(f"`max_classes={kept}` but the data has only {num_classes} classes.")
        if self.class_order is not None:
            if sorted(self.class_order) != list(range(num_classes)):
                raise ValueError(f"`class_order` must be a permutation of 0..{num_classes - 1}.")
            order = torch.tensor(self.class_order)
        else:
            order = torch.randperm(num_classes, generator=torch.Generator().manual_seed(self.seed))
        self.order = order[:kept].tolist()
        self.class_names = [data.class_names[c] for c in self.order]
        position = torch.full((num_classes,), -1, dtype=torch.long)
        position[order[:kept]] = torch.arange(kept)

        labels = position[data.train_labels]
        counts = torch.bincount(labels[labels >= 0], minlength=kept)
        if int(counts.min()) <= self.val_per_class:
            short = int(counts.argmin())
            raise ValueError(
                f"`val_per_class={self.val_per_class}` holds out every training image of class {self.order[short]} "
                f"(it has {int(counts[short])}); lower `val_per_class` below the smallest class's count."
            )
        # Sort by (class position, seeded random key): each class's images are then a block in random order,
        # and the first val_per_class of each block are its hold-out.
        key = torch.rand(len(labels), generator=torch.Generator().manual_seed(self.seed + 1), dtype=torch.float64)
        index = torch.argsort(torch.where(labels >= 0, labels.double() + key, math.inf))[: int(counts.sum())]
        sorted_labels = labels[index]
        starts = torch.cumsum(counts, 0) - counts
        held_out = torch.arange(len(index)) - starts[sorted_labels] < self.val_per_class
        test_labels = position[data.test_labels]
        test_index = torch.argsort(torch.where(test_labels >= 0, test_labels, kept), stable=True)
        test_index = test_index[: int((test_labels >= 0).sum())]

        splits = (
            ("train", data.train_images, labels, index[~held_out]),
            ("val", data.train_images, labels, index[held_out]),
            ("test", data.test_images, test_labels, test_index),
        )
        for split, images, split_labels, idx in splits:
            setattr(self, f"{split}_x", _normalise(images[idx].to(device)))
            setattr(self, f"{split}_y", split_labels[idx].to(device))
            self._ends[split] = _class_ends(split_labels[idx], kept)

    def size(self, split: str, classes: int) -> int:
        """Number of samples of ``split`` (``"train"``, ``"val"``, ``"test"``) in the first ``classes`` classes."""
        return self._ends[split][classes]

    def seen(self, split: str, classes: int) -> tuple[Tensor, Tensor]:
        """The inputs and labels of ``split`` for the first ``classes`` classes.

        Returns:
            Views (no copy) of the on-device tensors.
        """
        end = self.size(split, classes)
        return getattr(self, f"{split}_x")[:end], getattr(self, f"{split}_y")[:end]

    def train_batches(self, epoch: int) -> DeviceBatches:
        """Epoch ``epoch``'s training batches: shuffled and augmented (if asked) by a seed of its own."""
        x, y = self.seen("train", self.schedule.classes_at(epoch))
        transform = self._augment if self.augment else None
        return DeviceBatches(x, y, self.batch_size, seed=self.seed * 1_000_003 + epoch, transform=transform)

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def train_dataloader(self) -> DeviceBatches:
        """The batches of every class seen at the current epoch.

        Raises:
            ValueError: When the Trainer would not ask again at the next epoch, so classes could not be added.
        """
        if self.trainer is not None and self.trainer.reload_dataloaders_every_n_epochs != 1:
            raise ValueError(
                "CIFAR100Continual changes its data every epoch: use Trainer(reload_dataloaders_every_n_epochs=1)."
            )
        epoch = self._current_epoch()
        self.num_seen_classes = self.schedule.classes_at(epoch)
        return self.train_batches(epoch)

    def val_dataloader(self) -> list[DeviceBatches]:
        """Two loaders, in this order: the validation hold-out and the test set, both of the seen classes."""
        self.num_seen_classes = self.schedule.classes_at(self._current_epoch())
        return [DeviceBatches(*self.seen(split, self.num_seen_classes), self.eval_batch_size) for split in EVAL_SETS]

    def test_dataloader(self) -> DeviceBatches:
        """The test set of the classes seen at the current epoch."""
        self.num_seen_classes = self.schedule.classes_at(self._current_epoch())
        return DeviceBatches(*self.seen("test", self.num_seen_classes), self.eval_batch_size)

    def _augment(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return augment_batch(x, generator, self.crop_padding, flip=True, rotation_degrees=self.rotation_degrees)


EVAL_SETS = ("val", "test")  # names of the val_dataloader() loaders, by dataloader index


def _normalise(images: Tensor) -> Tensor:
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1)
    return images.float().div_(255).sub_(mean).div_(std)


def _class_ends(labels: Tensor, classes: int) -> list[int]:
    """``ends[k]`` = number of samples of classes ``0..k-1`` in label-sorted ``labels``."""
    return [0, *torch.cumsum(torch.bincount(labels, minlength=classes), 0).tolist()]
