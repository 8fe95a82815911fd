"""Class-incremental CIFAR-100 benchmark on tiny data that the tests write in CIFAR-100's on-disk format."""

import csv
import json
import math
import pickle
import re
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import yaml
from helpers import CtrlC, sigint_restored
from lightning.pytorch.loggers import Logger
from torch.nn import functional as F  # noqa: N812

from benchmarks.cifar100_continual import cli, perf, runner
from benchmarks.cifar100_continual.config import RunConfig
from benchmarks.cifar100_continual.data import (
    MEAN,
    STD,
    CIFAR100Continual,
    DeviceBatches,
    augment_batch,
    load_cifar100,
)
from benchmarks.cifar100_continual.methods import METHODS, FreshStart, TaskLRSchedule, make_method
from benchmarks.cifar100_continual.models import MLPClassifier, ResNet18Classifier, seen_logits
from benchmarks.cifar100_continual.plot import draw_results, load_results, plot_results
from benchmarks.cifar100_continual.record import COLUMNS
from benchmarks.cifar100_continual.schedule import ClassSchedule
from benchmarks.harness import runs, style
from benchmarks.harness.methods import METHODS as METHOD_INFO

CLASSES, TRAIN_PER_CLASS, TEST_PER_CLASS = 5, 20, 6


def write_cifar100(root, classes=CLASSES, train_per_class=TRAIN_PER_CLASS, test_per_class=TEST_PER_CLASS, seed=0):
    """Random images in the exact format of cifar-100-python/{train,test,meta}; returns what was written."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    written = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = rng.permutation(np.repeat(np.arange(classes), per_class))
        data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        entry = {
            "filenames": [f"img_{i}.png" for i in range(len(labels))],
            "batch_label": f"{split} batch",
            "fine_labels": labels.tolist(),
            "coarse_labels": (labels // 5).tolist(),
            "data": data,
        }
        with open(folder / split, "wb") as f:
            pickle.dump(entry, f)
        written[split] = (data, labels)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"name{i}" for i in range(classes)], "coarse_label_names": ["c0"]}, f)
    return written


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: two would fight over this machine's two shared cores and run several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cifar(tmp_path):
    written = write_cifar100(tmp_path / "data")
    return tmp_path / "data", written


def tiny_config(**changes):
    """2 classes, +1 every 2 epochs, up to 4: class additions at epochs 2 and 4, 6 epochs; 16 train images/class."""
    base = RunConfig(
        widths=(32, 32),
        initial_classes=2,
        classes_per_increment=1,
        epochs_per_increment=2,
        max_classes=4,
        val_per_class=4,
        batch_size=8,
        eval_batch_size=16,
        grama_tau=0.5,  # high thresholds: some neurons are always flagged, so resets are visible
        redo_tau=0.5,
        log_every=1,
    )
    return base.override(**changes)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def to_uint8(x):
    """Undo the normalisation: back to the CHW bytes of the file."""
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    return (x * std + mean).mul(255).round().to(torch.uint8)


def original_labels(written, split):
    """Map from an image's bytes to its original fine label (images are random, so unique)."""
    data, labels = written[split]
    return {row.tobytes(): int(label) for row, label in zip(data, labels, strict=True)}


# -- schedule ------------------------------------------------------------------------------------------------


def test_schedule_matches_hand_computation():
    s = ClassSchedule(initial_classes=2, classes_per_increment=1, epochs_per_increment=3, total_classes=4)
    assert [s.classes_at(e) for e in range(9)] == [2, 2, 2, 3, 3, 3, 4, 4, 4]
    assert (s.num_increments, s.total_epochs, s.increment_epochs) == (2, 9, [3, 6])
    assert [e for e in range(12) if s.is_increment(e)] == [3, 6]
    assert [s.epoch_in_task(e) for e in range(9)] == [0, 1, 2] * 3
    assert s.classes_at(50) == 4 and s.epoch_in_task(10) == 4  # after the schedule: all classes, counting on

    uneven = ClassSchedule(initial_classes=5, classes_per_increment=5, epochs_per_increment=2, total_classes=12)
    assert [uneven.classes_at(e) for e in range(uneven.total_epochs)] == [5, 5, 10, 10, 12, 12]

    paper = ClassSchedule(5, 1, 15, 100)  # 95 additions of one class, 15 epochs each
    dohare = ClassSchedule(5, 5, 200, 100)  # 20 tasks of 200 epochs (Dohare et al.: 4000 epochs)
    assert (paper.total_epochs, dohare.total_epochs) == (96 * 15, 4000)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(initial_classes=0), "initial_classes"),
        (dict(classes_per_increment=0), "classes_per_increment"),
        (dict(epochs_per_increment=1.5), "epochs_per_increment"),
        (dict(initial_classes=8), "initial_classes"),
    ],
)
def test_schedule_rejects_bad_arguments(kwargs, name):
    args = dict(initial_classes=2, classes_per_increment=1, epochs_per_increment=3, total_classes=4) | kwargs
    with pytest.raises(ValueError, match=name):
        ClassSchedule(**args)


# -- files ---------------------------------------------------------------------------------------------------


def test_files_are_parsed_as_written(cifar):
    root, written = cifar
    arrays = load_cifar100(root, verify_integrity=False)
    for split, images, labels in (
        ("train", arrays.train_images, arrays.train_labels),
        ("test", arrays.test_images, arrays.test_labels),
    ):
        data, expected = written[split]
        assert images.shape == (len(expected), 3, 32, 32) and images.dtype == torch.uint8
        # CHW: the first 1024 bytes of a row are the red plane, row by row.
        assert torch.equal(images[:, 0].reshape(len(expected), -1), torch.from_numpy(data[:, :1024]))
        assert torch.equal(images.reshape(len(expected), -1), torch.from_numpy(data))
        assert labels.tolist() == expected.tolist()
    assert arrays.class_names == [f"name{i}" for i in range(CLASSES)]


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_cifar100(tmp_path / "nowhere")
    message = str(error.value)
    assert str(tmp_path / "nowhere" / "cifar-100-python") in message
    assert "--download" in message and "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz" in message

    dm = CIFAR100Continual(tmp_path / "nowhere")  # the same error from the datamodule, at setup
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        dm.build()


def test_missing_data_on_the_command_line_exits_with_the_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "--data-dir", str(tmp_path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()[-1]  # a usage error (status 2), one line
    assert exit_info.value.code == 2 and "cifar-100-python" in err and "--download" in err
    assert not (tmp_path / "out").exists()


def test_files_not_from_the_official_archive_fail_the_md5_check(cifar):
    root, _ = cifar
    with pytest.raises(RuntimeError, match=r"md5.*verify_integrity=False"):
        load_cifar100(root)  # integrity check on by default


# -- data module ---------------------------------------------------------------------------------------------


def built(root, **kwargs):
    args = dict(
        verify_integrity=False, initial_classes=2, classes_per_increment=1, epochs_per_increment=2, max_classes=4
    )
    dm = CIFAR100Continual(root, **(args | kwargs))
    dm.build()
    return dm


def test_class_order_hold_out_and_cumulative_data(cifar):
    root, written = cifar
    dm = built(root, val_per_class=4, seed=3)
    expected_order = torch.randperm(CLASSES, generator=torch.Generator().manual_seed(3))[:4].tolist()
    assert dm.order == expected_order
    assert built(root, val_per_class=4, seed=3).order == dm.order
    assert built(root, val_per_class=4, seed=4).order != dm.order
    train_lookup, test_lookup = original_labels(written, "train"), original_labels(written, "test")

    def originals(x, lookup):
        return [lookup[img.numpy().reshape(-1).tobytes()] for img in to_uint8(x)]

    for k in range(1, 5):
        x, y = dm.seen("train", k)
        vx, vy = dm.seen("val", k)
        tx, ty = dm.seen("test", k)
        assert (len(y), len(vy), len(ty)) == (16 * k, 4 * k, TEST_PER_CLASS * k)
        for xs, ys, lookup in ((x, y, train_lookup), (vx, vy, train_lookup), (tx, ty, test_lookup)):
            # every image is one of the first k classes of the order, and carries that class's position as label
            assert originals(xs, lookup) == [dm.order[label] for label in ys.tolist()]
    # hold-out and training images are disjoint and together all training images of the kept classes
    train = {img.numpy().tobytes() for img in to_uint8(dm.train_x)}
    val = {img.numpy().tobytes() for img in to_uint8(dm.val_x)}
    kept = {row.tobytes() for row, label in zip(*written["train"], strict=True) if label in dm.order}
    assert not train & val and train | val == kept
    # the hold-out choice depends on the seed
    other = built(root, val_per_class=4, class_order=list(reversed(range(CLASSES))), seed=9)
    same_order = built(root, val_per_class=4, class_order=list(reversed(range(CLASSES))), seed=10)
    assert not torch.equal(other.val_x, same_order.val_x)


def test_loaders_follow_the_epoch(cifar):
    root, _ = cifar
    dm = built(root, val_per_class=4, batch_size=5)
    for epoch, classes in ((0, 2), (1, 2), (2, 3), (4, 4), (9, 4)):
        dm.trainer = SimpleNamespace(current_epoch=epoch, reload_dataloaders_every_n_epochs=1)
        batches = dm.train_dataloader()
        assert dm.num_seen_classes == classes
        ys = torch.cat([y for _, y in batches])
        assert len(batches) == math.ceil(16 * classes / 5) == len(list(batches))
        assert sorted(ys.tolist()) == sorted(list(range(classes)) * 16)  # each seen image exactly once
        val, test = dm.val_dataloader()
        assert sorted(torch.cat([y for _, y in val]).tolist()) == sorted(list(range(classes)) * 4)
        assert sorted(torch.cat([y for _, y in test]).tolist()) == sorted(list(range(classes)) * TEST_PER_CLASS)
    dm.trainer = SimpleNamespace(current_epoch=0, reload_dataloaders_every_n_epochs=0)
    with pytest.raises(ValueError, match="reload_dataloaders_every_n_epochs=1"):
        dm.train_dataloader()


def test_device_batches_shuffle_by_seed_and_cover_every_sample_once():
    x, y = torch.arange(23.0).view(23, 1), torch.arange(23)
    a, b, c = DeviceBatches(x, y, 5, seed=1), DeviceBatches(x, y, 5, seed=1), DeviceBatches(x, y, 5, seed=2)
    order_a = torch.cat([yb for _, yb in a])
    assert len(a) == 5 and [len(yb) for _, yb in a] == [5, 5, 5, 5, 3]
    assert sorted(order_a.tolist()) == list(range(23)) and order_a.tolist() != list(range(23))
    assert torch.equal(order_a, torch.cat([yb for _, yb in b]))
    assert not torch.equal(order_a, torch.cat([yb for _, yb in c]))
    assert all(torch.equal(xb.view(-1), yb.float()) for xb, yb in a)  # inputs stay with their labels
    assert torch.cat([yb for _, yb in DeviceBatches(x, y, 5)]).tolist() == list(range(23))  # unshuffled


def test_augmentation_is_a_padded_crop_and_flip_of_each_image():
    torch.manual_seed(0)
    x = torch.randn(24, 3, 8, 8)
    out = augment_batch(x, torch.Generator().manual_seed(0), padding=2)
    padded = F.pad(x, (2, 2, 2, 2))
    found = []
    for i in range(len(x)):
        matches = [
            (dy, dx, flip)
            for dy in range(5)
            for dx in range(5)
            for flip in (False, True)
            if torch.equal(out[i], (lambda w: w.flip(-1) if flip else w)(padded[i, :, dy : dy + 8, dx : dx + 8]))
        ]
        assert matches, f"image {i} is no crop of its padded input"
        found.append(matches[0])
    assert {f[2] for f in found} == {False, True}  # both flips occur
    assert len({f[:2] for f in found}) > 5  # offsets vary per image
    assert torch.equal(augment_batch(x, torch.Generator(), padding=0, flip=False), x)

    ones = torch.ones(16, 1, 32, 32)
    rotated = augment_batch(ones, torch.Generator().manual_seed(0), padding=0, flip=False, rotation_degrees=15)
    kept = rotated.mean(dim=(1, 2, 3))
    assert rotated.shape == ones.shape
    assert (kept < 1).any() and (kept > 0.8).all()  # corners rotate out, the bulk stays


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(batch_size=0), "batch_size"),
        (dict(val_per_class=-1), "val_per_class"),
        (dict(rotation_degrees=400), "rotation_degrees"),
        (dict(class_order=[0, 1]), "class_order"),
        (dict(max_classes=0), "max_classes"),
        (dict(initial_classes=6, max_classes=5), "initial_classes"),
    ],
)
def test_datamodule_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        CIFAR100Continual(**kwargs)


def test_datamodule_rejects_data_that_does_not_fit(cifar):
    root, _ = cifar
    with pytest.raises(ValueError, match="max_classes=6"):
        built(root, max_classes=6)
    with pytest.raises(ValueError, match="val_per_class"):
        built(root, val_per_class=TRAIN_PER_CLASS)


# -- models --------------------------------------------------------------------------------------------------


class Fixed(torch.nn.Module):
    """A network whose output is given."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits


def test_unseen_classes_are_masked():
    logits = torch.tensor([[1.0, 2.0, 50.0, 0.0], [3.0, -1.0, 9.0, 9.0]])
    y = torch.tensor([1, 0])
    seen = seen_logits(logits, 2)
    assert seen.argmax(1).tolist() == [1, 0]  # the huge unseen logits are never predicted
    hand = -(math.log(math.exp(2) / (math.exp(1) + math.exp(2))) + math.log(math.exp(3) / (math.exp(3) + math.exp(-1))))
    assert F.cross_entropy(seen, y).item() == pytest.approx(hand / 2, rel=1e-6)
    masked = logits.masked_fill(torch.arange(4) >= 2, -math.inf)  # the -inf masking it stands for
    assert F.cross_entropy(masked, y).item() == pytest.approx(hand / 2, rel=1e-6)

    model = MLPClassifier(widths=[4], num_classes=4)
    model.net = Fixed(logits)
    model.num_seen_classes = 2
    loss = model.training_step((torch.zeros(2, 3, 32, 32), y), 0)
    assert loss.item() == pytest.approx(hand / 2, rel=1e-6)
    assert model._sums["train"][1].item() == 2  # both predictions right among the seen classes (wrong among all)


def test_resnet18_matches_torchvision_resnet18_adapted_to_cifar():
    torchvision = pytest.importorskip("torchvision")
    reference = torchvision.models.resnet18(num_classes=100)
    reference.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)  # Dohare et al.: 3x3 stride-1 stem ...
    reference.maxpool = torch.nn.Identity()  # ... and no max-pool
    model = ResNet18Classifier()
    count = sum(p.numel() for p in model.parameters())
    assert count == sum(p.numel() for p in reference.parameters())
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert (len(convs), convs[0].kernel_size, convs[0].stride) == (20, (3, 3), (1, 1))
    assert ResNet18Classifier(width=4, num_classes=7)(torch.zeros(2, 3, 32, 32)).shape == (2, 7)


def test_mlp_has_the_configured_widths():
    model = MLPClassifier(widths=[64, 32, 16], num_classes=10)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(3072, 64), (64, 32), (32, 16), (16, 10)]
    assert sum(isinstance(m, torch.nn.ReLU) for m in model.modules()) == 3


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [(dict(widths=[]), "widths"), (dict(optimizer="rmsprop"), "optimizer"), (dict(lr=0.0), "lr"),
     (dict(momentum=1.0), "momentum"), (dict(num_classes=0), "num_classes")],
)  # fmt: skip
def test_models_reject_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MLPClassifier(**kwargs)


def test_modules_take_typed_command_line_arguments():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(CIFAR100Continual, "data")
    parser.add_class_arguments(MLPClassifier, "model")
    cfg = parser.parse_args(["--data.epochs_per_increment=3", "--data.augment=true", "--model.widths=[64, 32]"])
    objects = parser.instantiate(cfg)
    assert objects.data.schedule.epochs_per_increment == 3 and objects.data.augment
    assert [m.out_features for m in objects.model.modules() if isinstance(m, torch.nn.Linear)] == [64, 32, 100]


# -- methods, end to end -------------------------------------------------------------------------------------


def test_methods_reject_bad_arguments():
    schedule = ClassSchedule(2, 1, 2, 4)
    with pytest.raises(ValueError, match="Unknown method"):
        make_method("shrink-perturb", schedule)
    with pytest.raises(ValueError, match="gamma"):
        TaskLRSchedule(schedule, [2], gamma=0.0)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_through_two_class_additions(cifar, tmp_path, method):
    root, _ = cifar
    out = tmp_path / "out" / method / "seed0"
    summary = runner.run_one(tiny_config(), method, 0, out, load_cifar100(root, verify_integrity=False), "cpu")
    rows = read_csv(out / "metrics.csv")
    assert list(rows[0])[: len(COLUMNS)] == list(COLUMNS)
    assert [int(r["epoch"]) for r in rows] == list(range(6))
    assert [int(r["classes"]) for r in rows] == [2, 2, 3, 3, 4, 4]
    for r in rows:
        assert 0 <= float(r["test_acc"]) <= 1 and 0 <= float(r["val_acc"]) <= 1 and float(r["train_loss"]) > 0
        assert 0 <= float(r["grama_ratio"]) <= 1 and 0 <= float(r["dormant_ratio"]) <= 1  # measured for all
    resets = [float(r["reset_neurons"]) for r in rows]
    if METHOD_INFO[method].resets is not None:  # regrama, redo and regrama combined with L2-init / weight decay
        assert [e for e, n in enumerate(resets) if n > 0] == [2, 4]  # exactly at the class additions
    elif method in ("reborn", "prune-grama", "prune-redo"):  # at class additions, where any neuron qualifies
        assert {e for e, n in enumerate(resets) if n > 0} <= {2, 4}
    elif method != "cbp":  # continual backprop replaces on its own period
        assert resets == [0.0] * 6
    saved = json.loads((out / "summary.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert saved["method"] == method and saved["epochs"] == 6 and len(saved["task_end_test_acc"]) == 3
    assert saved["final_test_acc"] == pytest.approx(float(rows[-1]["test_acc"]))


class StepLog(Logger):
    """Keeps (step, key) of every logged value."""

    def __init__(self):
        super().__init__()
        self.logged = []

    name = "steps"
    version = 0

    def log_hyperparams(self, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.logged += [(step, key, value) for key, value in metrics.items()]


class SeenLabels(pl.Callback):
    """Records the epoch, labels and class count of every training batch."""

    def __init__(self):
        self.batches = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append((trainer.current_epoch, batch[1].clone(), pl_module.num_seen_classes))


def fit(root, callbacks, logger=False, epochs=6, **config):
    cfg = tiny_config(**config)
    pl.seed_everything(0, verbose=False)
    dm = cfg.datamodule(root, 0)
    dm.verify_integrity = False
    model = cfg.model_instance()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        reload_dataloaders_every_n_epochs=1,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        logger=logger,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    return model, dm, trainer


@pytest.mark.parametrize("method", ["regrama", "redo"])
def test_resets_happen_at_the_first_step_of_each_class_addition_only(cifar, method):
    root, _ = cifar
    log, seen = StepLog(), SeenLabels()
    chosen = make_method(method, ClassSchedule(2, 1, 2, 4), grama_tau=0.5, redo_tau=0.5, log_every_n_steps=1)
    fit(root, [*chosen.callbacks, seen], logger=log)
    # 16 training images per class, batch 8: 4 steps per epoch at 2 classes, 6 at 3, 8 at 4.
    steps_per_epoch = [4, 4, 6, 6, 8, 8]
    assert [sum(1 for e, _, _ in seen.batches if e == epoch) for epoch in range(6)] == steps_per_epoch
    # Lightning logs optimizer step k (counted from 1) at step k - 1, as self.log does.
    first_steps = [sum(steps_per_epoch[:epoch]) for epoch in (2, 4)]  # steps 9 and 21 of the run
    assert first_steps == [8, 20]
    assert [step for step, key, value in log.logged if key == "reset/neurons" and value > 0] == first_steps
    assert [step for step, key, _ in log.logged if key == "reset/neurons"] == first_steps  # no other reset step
    # labels and masking follow the schedule: epoch e trains exactly the classes 0..classes_at(e)-1
    for epoch, labels, classes in seen.batches:
        assert classes == ClassSchedule(2, 1, 2, 4).classes_at(epoch) and int(labels.max()) < classes


def test_reset_every_n_steps_replaces_the_class_addition_schedule(cifar):
    root, _ = cifar
    log = StepLog()
    chosen = make_method("regrama", ClassSchedule(2, 1, 2, 4), 5, grama_tau=0.5, log_every_n_steps=1)
    assert not any(type(c).__name__ == "ResetAtClassAdditions" for c in chosen.callbacks)
    fit(root, chosen.callbacks, logger=log)
    assert [step for step, key, _ in log.logged if key == "reset/neurons"] == [4, 9, 14, 19, 24, 29, 34]


class Snapshots(pl.Callback):
    """Parameters at each epoch end and at each epoch's first batch, and whether the optimizer had state then."""

    def __init__(self):
        self.ends, self.starts, self.state = {}, {}, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.starts[trainer.current_epoch] = [p.detach().clone() for p in pl_module.parameters()]
            self.state[trainer.current_epoch] = len(trainer.optimizers[0].state)

    def on_train_epoch_end(self, trainer, pl_module):
        self.ends[trainer.current_epoch] = [p.detach().clone() for p in pl_module.parameters()]


def test_fresh_reinitialises_network_and_optimizer_at_class_additions_only(cifar):
    root, _ = cifar
    snapshots = Snapshots()
    fresh = FreshStart(ClassSchedule(2, 1, 2, 4))
    model, _, _ = fit(root, [fresh, snapshots])
    assert fresh.restarts == 2
    for epoch in range(1, 6):
        same = all(torch.equal(a, b) for a, b in zip(snapshots.ends[epoch - 1], snapshots.starts[epoch], strict=True))
        assert same == (epoch not in (2, 4))
        assert (snapshots.state[epoch] == 0) == (epoch in (2, 4))  # Adam's moments forgotten at the restarts
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    bound = 1 / math.sqrt(first.in_features)  # PyTorch's default Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert snapshots.starts[2][0].abs().max() <= bound + 1e-6


def test_learning_rate_schedule_restarts_with_every_class_set(cifar, tmp_path):
    root, _ = cifar
    cfg = tiny_config(epochs_per_increment=4, lr_milestones=(2, 3), lr_gamma=0.5, optimizer="sgd", lr=0.1)
    runner.run_one(cfg, "vanilla", 0, tmp_path / "run", load_cifar100(root, verify_integrity=False), "cpu")
    lrs = [float(r["lr"]) for r in read_csv(tmp_path / "run" / "metrics.csv")]
    assert lrs == pytest.approx([0.1, 0.1, 0.05, 0.025] * 3)


def test_resnet18_preset_runs_with_augmentation_and_resets(cifar, tmp_path):
    root, _ = cifar
    cfg = tiny_config(model="resnet18", width=4, augment=True, rotation_degrees=15.0, optimizer="sgd", lr=0.1)
    summary = runner.run_one(cfg, "regrama", 0, tmp_path / "run", load_cifar100(root, verify_integrity=False), "cpu")
    assert summary["reset_epochs"] == [2, 4]
    rows = read_csv(tmp_path / "run" / "metrics.csv")
    assert any(key.startswith("grama/net.3.conv1") for key in rows[0])  # conv layers inside the blocks are scored


# -- runner and plot -----------------------------------------------------------------------------------------


TINY_ARGS = ["--max-classes", "4", "--initial-classes", "2", "--epochs-per-increment", "2", "--val-per-class", "4",
             "--batch-size", "8", "--widths", "32", "32", "--log-every", "1", "--no-progress"]  # fmt: skip


def test_command_line_runs_a_grid_and_plots_it(cifar, tmp_path, capsys):
    root, _ = cifar
    out = tmp_path / "results"
    base = ["run", "--data-dir", str(root), "--no-verify-integrity", "--out", str(out), "--accelerator", "cpu"]
    cli.main([*base, *TINY_ARGS, "--methods", "vanilla", "regrama", "--seeds", "0", "1"])
    printed = capsys.readouterr().out
    assert "Estimated cost of one run" in printed and "4 run(s)" in printed
    for method in ("vanilla", "regrama"):
        for seed in (0, 1):
            assert len(read_csv(out / method / f"seed{seed}" / "metrics.csv")) == 6
    # The table over seeds, printed and written next to the runs: with two seeds the percentile bootstrap
    # interval of the mean spans the two values (resampled means are a, (a + b) / 2 or b).
    assert "Over seeds, per method: mean [95% bootstrap interval over seeds]" in printed
    for row in read_csv(out / "seed_table.csv"):
        finals = [json.loads((out / row["method"] / f"seed{s}" / "summary.json").read_text())["final_test_acc"]
                  for s in (0, 1)]  # fmt: skip
        assert row["seeds"] == "2" and float(row["final_test_acc_mean"]) == pytest.approx(sum(finals) / 2)
        assert (float(row["final_test_acc_ci_low"]), float(row["final_test_acc_ci_high"])) == (min(finals), max(finals))
    cli.main([*base, *TINY_ARGS, "--methods", "vanilla", "--seeds", "0"])
    assert "done before with these settings, skipped" in capsys.readouterr().out

    cli.main(["plot", str(out)])
    png = out / "fig5_right.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    # The figure: the methods' colours of every plot, class additions (epochs 2 and 4: 2 classes + 1 every 2
    # epochs) as dotted lines, ReGraMa's reset epochs (its first seed's) as ticks; none for vanilla.
    ax = draw_results(out).axes[0]
    curves = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert sorted(curves) == ["ReGraMa (2 seeds)", "Vanilla (2 seeds)"]
    assert curves["ReGraMa (2 seeds)"].get_color() == style.color("regrama")
    assert curves["Vanilla (2 seeds)"].get_color() == style.color("vanilla")
    additions = [line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert additions == [2, 4]
    ticks = [line for line in ax.get_lines() if line.get_marker() == "|"]
    reset_epochs = json.loads((out / "regrama" / "seed0" / "summary.json").read_text())["reset_epochs"]
    assert reset_epochs and [t.get_xdata().tolist() for t in ticks] == [reset_epochs]
    assert ticks[0].get_color() == style.color("regrama")
    path = plot_results(out, tmp_path / "three.png", metrics=["test_acc", "grama_ratio", "dormant_ratio"], smooth=2)
    assert path.exists()
    with pytest.raises(ValueError, match="Unknown metrics"):
        plot_results(out, metrics=["accuracy"])
    with pytest.raises(FileNotFoundError, match="run the benchmark first"):
        plot_results(tmp_path / "empty")


def test_a_measuring_period_longer_than_an_epoch_still_measures_every_epoch(cifar, tmp_path, capsys):
    root, _ = cifar
    out = tmp_path / "results"
    args = ["run", "--data-dir", str(root), "--no-verify-integrity", "--out", str(out), "--accelerator", "cpu"]
    tiny = [a if a != "1" else "50" for a in TINY_ARGS]  # --log-every 50; the first epochs: 2 x 16 images / 8
    cli.main([*args, *tiny, "--methods", "vanilla"])
    printed = capsys.readouterr().out
    assert "measuring the ratios every 4 steps, not every 50 (--log-every)" in printed
    # --no-progress: a line per epoch instead of a bar.
    epochs = re.findall(r"\[1/1\] mlp vanilla seed0: epoch (\d)/6, (\d) classes, test acc \d\.\d{3}, GraMa ratio "
                        r"\d\.\d{4}, 0 neurons reset", printed)  # fmt: skip
    assert epochs == [("1", "2"), ("2", "2"), ("3", "3"), ("4", "3"), ("5", "4"), ("6", "4")]
    rows = read_csv(out / "vanilla" / "seed0" / "metrics.csv")
    assert len(rows) == 6 and all(math.isfinite(float(r["grama_ratio"])) for r in rows)


def test_estimate_only_counts_the_whole_schedule(cifar, tmp_path, capsys):
    root, _ = cifar
    args = ["run", "--data-dir", str(root), "--no-verify-integrity", "--out", str(tmp_path / "o"), "--estimate-only"]
    cli.main([*args, *TINY_ARGS, "--accelerator", "cpu"])
    # training steps: 2 epochs each at 2, 3, 4 classes of 16 images, batch 8 -> 2*(4+6+8) = 36
    # evaluation: val (4/class) and test (6/class) in batches of 1000: 2 batches per epoch -> 12
    assert "36 training steps" in capsys.readouterr().out and not (tmp_path / "o").exists()
    dm = tiny_config().datamodule(root, 0)
    dm.verify_integrity = False
    dm.build()
    # eval batches of 16: val 8/12/16 images -> 1 each; test 12/18/24 -> 1, 2, 2; two epochs per class count
    assert runner.count_batches(dm) == (36, 2 * ((1 + 1) + (1 + 2) + (1 + 2)))


def test_command_line_rejects_bad_overrides(cifar, tmp_path):
    root, _ = cifar
    with pytest.raises(SystemExit):
        cli.main(["run", "--data-dir", str(root), "--initial-classes", "200"])


def test_perf_script_pairs_every_benchmark_epoch_with_a_plain_one(tmp_path, capsys):
    perf.main(["--classes", "2", "--epochs", "3", "--widths", "16", "--configs", "bare", "monitors",
               "--out", str(tmp_path / "perf.json")])  # fmt: skip
    results = json.loads((tmp_path / "perf.json").read_text())["results"]
    assert [(r["classes"], r["config"]) for r in results] == [(2, "bare"), (2, "monitors")]
    for r in results:
        # 2 synthetic classes of 500 images, 50 held out each: 900 images, 10 batches of 90
        assert (r["train_images"], r["steps_per_epoch"], r["pairs"]) == (900, 10, 2)
        assert r["ratio"] == pytest.approx(r["benchmark_epoch_s"] / r["plain_epoch_s"])
    assert "ratio" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        perf.parse_args(["--epochs", "2"])


# -- interruption, resume, keyed reruns ----------------------------------------------------------------------


def ctrl_c_at(epoch, batch):
    """Ctrl-C before training batch ``batch`` of epoch ``epoch``."""
    return CtrlC(lambda trainer, module, batch_idx: (trainer.current_epoch, batch_idx) == (epoch, batch))


@pytest.fixture
def restore_sigint():
    with sigint_restored():
        yield


def without_times(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.mark.parametrize("method", ["regrama", "fresh"])  # fresh re-draws from the global RNG at class additions
def test_a_run_interrupted_mid_epoch_resumes_to_the_uninterrupted_result(cifar, tmp_path, method, restore_sigint):
    root, _ = cifar
    source = load_cifar100(root, verify_integrity=False)
    cfg = tiny_config(optimizer="sgd", lr=0.05, lr_milestones=(1,), lr_gamma=0.5)  # the per-task schedule too
    full = runner.run_one(cfg, method, 0, tmp_path / "full", source, "cpu", progress=False)

    out = tmp_path / "cut"
    with pytest.raises(SystemExit):  # Lightning's graceful Ctrl-C: on_exception hooks, teardown, exit(1)
        runner.run_one(cfg, method, 0, out, source, "cpu", progress=False, callbacks=[ctrl_c_at(epoch=3, batch=2)])
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    assert len(read_csv(out / "metrics.csv")) == 3  # epochs 0-2 finished; last.ckpt is from the end of epoch 2
    with pytest.raises(runs.RunFolderError, match="--resume to continue it"):
        runner.run_one(cfg, method, 0, out, source, "cpu", progress=False)
    resumed = runner.run_one(cfg, method, 0, out, source, "cpu", progress=False, control=runs.RunControl(resume=True))

    full_rows, resumed_rows = read_csv(tmp_path / "full" / "metrics.csv"), read_csv(out / "metrics.csv")
    assert [int(r["epoch"]) for r in resumed_rows] == list(range(6))
    assert without_times(resumed_rows) == without_times(full_rows)  # losses, accuracies, ratios, resets, lr
    a = torch.load(tmp_path / "full" / "last.ckpt", weights_only=True)
    b = torch.load(out / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 36 and a["epoch"] == b["epoch"]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    same = ("final_test_acc", "mean_test_acc", "task_end_test_acc", "reset_neurons", "reset_epochs", "class_order")
    assert {k: resumed[k] for k in same} == {k: full[k] for k in same}
    assert resumed["resumes"] == 1 and resumed["settings_key"] == full["settings_key"]
    assert runs.is_complete(out)


@pytest.mark.parametrize("method", ["regrama", "redo"])  # the core's re-draw copies no module (core-callbacks)
def test_a_run_resumed_on_an_epoch_that_adds_classes_resets_there_as_the_uninterrupted_run(
    cifar, tmp_path, method, restore_sigint
):
    # The checkpoint is from the end of epoch 1; the resumed attempt starts with epoch 2, which adds a class and
    # so resets on its first step (the schedule of tiny_config: additions at epochs 2 and 4).
    root, _ = cifar
    source = load_cifar100(root, verify_integrity=False)
    cfg = tiny_config()
    full = runner.run_one(cfg, method, 0, tmp_path / "full", source, "cpu", progress=False)
    out = tmp_path / "cut"
    with pytest.raises(SystemExit):
        runner.run_one(cfg, method, 0, out, source, "cpu", progress=False, callbacks=[ctrl_c_at(epoch=2, batch=1)])
    resumed = runner.run_one(cfg, method, 0, out, source, "cpu", progress=False, control=runs.RunControl(resume=True))
    assert without_times(read_csv(out / "metrics.csv")) == without_times(read_csv(tmp_path / "full" / "metrics.csv"))
    assert resumed["reset_epochs"] == full["reset_epochs"] and resumed["reset_neurons"] == full["reset_neurons"]
    assert runs.is_complete(out) and resumed["resumes"] == 1


def test_reruns_are_keyed_on_the_full_settings_and_unfinished_runs_are_not_plotted(
    cifar, tmp_path, capsys, restore_sigint
):
    root, _ = cifar
    out = tmp_path / "results"
    base = ["run", "--data-dir", str(root), "--no-verify-integrity", "--out", str(out), "--accelerator", "cpu"]
    cli.main([*base, *TINY_ARGS, "--methods", "vanilla"])
    cli.main([*base, *TINY_ARGS, "--methods", "vanilla"])
    assert "done before with these settings, skipped" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:  # another setting: refused before anything trains, one line
        cli.main([*base, *TINY_ARGS, "--methods", "vanilla", "--grama-tau", "0.2"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert "config.grama_tau: 0.01 -> 0.2" in err and "--overwrite" in err and "--out" in err
    cli.main([*base, *TINY_ARGS, "--methods", "vanilla", "--grama-tau", "0.2", "--overwrite"])
    assert json.loads((out / "vanilla" / "seed0" / "summary.json").read_text())["config"]["grama_tau"] == 0.2
    assert len(read_csv(out / "vanilla" / "seed0" / "metrics.csv")) == 6  # replaced, not appended to

    cfg = cli.config_from_args(cli.build_parser().parse_args([*base, *TINY_ARGS]))
    with pytest.raises(SystemExit):
        runner.run_one(cfg, "regrama", 0, out / "regrama" / "seed0", load_cifar100(root, verify_integrity=False),
                       "cpu", progress=False, callbacks=[ctrl_c_at(epoch=2, batch=0)])  # fmt: skip
    capsys.readouterr()
    cli.main(["plot", str(out)])
    assert "left out 1 incomplete run(s): regrama/seed0" in capsys.readouterr().err
    complete, incomplete = load_results(out)
    assert list(complete) == ["vanilla"] and incomplete == [out / "regrama" / "seed0"]
    everything, _ = load_results(out, include_incomplete=True)
    assert sorted(everything) == ["regrama", "vanilla"] and len(everything["regrama"][0]["epoch"]) == 2
    legend = draw_results(out, include_incomplete=True).axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["Vanilla (1 seed)", "ReGraMa (1 seed, 1 incomplete)"]


def test_hyperparameters_go_to_hparams_yaml_and_tensorboard(cifar, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    root, _ = cifar
    out = tmp_path / "run"
    summary = runner.run_one(tiny_config(), "regrama", 0, out, load_cifar100(root, verify_integrity=False), "cpu")
    hparams = yaml.safe_load((out / "hparams.yaml").read_text())
    assert (hparams["method"], hparams["grama_tau"], hparams["reset_every"]) == ("regrama", 0.5, "class addition")
    assert (hparams["model"], hparams["widths"], hparams["seed"]) == ("mlp", [32, 32], 0)
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["method"].string_value == "regrama" and start.hparams["grama_tau"].number_value == 0.5
    assert start.hparams["widths"].string_value == "[32, 32]"
    assert events.Scalars("hp/final_test_acc")[-1].value == pytest.approx(summary["final_test_acc"])
    assert [e.step for e in events.Scalars("test/acc")] == sorted({e.step for e in events.Scalars("test/acc")})
