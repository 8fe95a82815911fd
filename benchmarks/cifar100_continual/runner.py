"""One run (``run_one``: train, checkpoint, resume, summarise) and the cost estimate of a grid.

The command line is :mod:`benchmarks.cifar100_continual.cli`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor
from torch.nn import functional as F  # noqa: N812
from tqdm.auto import tqdm

from ..harness import runs
from ..harness.checkpointing import PeriodicCheckpoint, RandomState, tensorboard_resume_kwargs
from ..harness.hparams import LogHyperparams
from ..harness.loggers import extra_loggers
from ..harness.runs import RunControl
from .config import RunConfig
from .data import EVAL_SETS, Cifar100Arrays, CIFAR100Continual
from .methods import TaskLRSchedule, make_method
from .models import IncrementalClassifier
from .record import EpochRecorder


@dataclass(frozen=True)
class CostEstimate:
    """Predicted cost of one run: batches in the whole schedule times the measured time of one batch."""

    train_steps: int
    eval_batches: int
    step_seconds: float
    eval_seconds: float
    device: str

    @property
    def seconds(self) -> float:
        """Predicted seconds of one run (Lightning's own overhead and the ratio measurements not included)."""
        return self.train_steps * self.step_seconds + self.eval_batches * self.eval_seconds

    def describe(self, runs: int) -> str:
        """A printable summary for a grid of ``runs`` runs."""
        return (
            f"Estimated cost of one run on {self.device}: {self.train_steps:,} training steps x "
            f"{1e3 * self.step_seconds:.2f} ms + {self.eval_batches:,} evaluation batches x "
            f"{1e3 * self.eval_seconds:.2f} ms = {duration(self.seconds)}; {runs} run(s): "
            f"{duration(runs * self.seconds)} (from a few timed batches; Lightning and the ratio measurements add "
            "about 5-10% to an MLP step on a CPU, see perf.py)."
        )


def count_batches(dm: CIFAR100Continual) -> tuple[int, int]:
    """Training steps and evaluation batches of a whole run (needs ``dm`` built)."""
    train = evaluation = 0
    for epoch in range(dm.schedule.total_epochs):
        classes = dm.schedule.classes_at(epoch)
        train += math.ceil(dm.size("train", classes) / dm.batch_size)
        evaluation += sum(math.ceil(dm.size(split, classes) / dm.eval_batch_size) for split in EVAL_SETS)
    return train, evaluation


def estimate_cost(
    model: IncrementalClassifier, dm: CIFAR100Continual, device: torch.device, steps: int = 20, budget_s: float = 10.0
) -> CostEstimate:
    """Time training steps (data pipeline included) and evaluation batches on a copy of ``model``.

    The random state of the run is left untouched.

    Args:
        model: The run's model (copied; the original is not trained).
        dm: The run's datamodule, built on ``device``.
        device: The training device.
        steps: Batches to time of each kind, after warm-up ones.
        budget_s: Stop timing a kind after this many seconds (at least 2 batches are timed): a ResNet on a CPU.

    Returns:
        The estimate for one run.
    """
    net = copy.deepcopy(model).to(device)
    optimizer = net.configure_optimizers()
    last = dm.schedule.total_epochs - 1  # the largest class set: full batches
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(batches: Iterator[tuple[Tensor, Tensor]], train: bool, warmup: int) -> float:
        timed_batches, start = 0, 0.0
        for i in range(warmup + steps):
            if i == warmup:
                sync()
                start = time.perf_counter()
            elif i > warmup + 1 and time.perf_counter() - start > budget_s:
                break
            x, y = next(batches)
            if train:
                loss = F.cross_entropy(net(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            else:
                with torch.no_grad():
                    net(x).argmax(1)
            timed_batches += i >= warmup
        sync()
        return (time.perf_counter() - start) / timed_batches

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        net.train()
        step = timed(_cycle(lambda: dm.train_batches(last)), train=True, warmup=3)
        net.eval()
        x, y = dm.seen("test", dm.schedule.total_classes)
        batches = list(zip(x.split(dm.eval_batch_size), y.split(dm.eval_batch_size), strict=True))
        evaluation = timed(_cycle(lambda: batches), train=False, warmup=1)
    train, eval_batches = count_batches(dm)
    return CostEstimate(train, eval_batches, step, evaluation, str(device))


def _cycle(make: Callable[[], Iterable[tuple[Tensor, Tensor]]]) -> Iterator[tuple[Tensor, Tensor]]:
    while True:
        yield from make()


def duration(seconds: float) -> str:
    """``seconds`` in s, min or h."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def run_settings(cfg: RunConfig, method: str, seed: int, precision: str = "32-true") -> dict[str, Any]:
    """Everything that defines a run's result: the key of its folder (see :mod:`benchmarks.harness.runs`)."""
    return {"config": dataclasses.asdict(cfg), "method": method, "seed": seed, "precision": precision}


def run_hparams(cfg: RunConfig, method: str, seed: int, precision: str) -> dict[str, Any]:
    """The run's hyperparameters as hparams.yaml and TensorBoard show them (method, thresholds, period, network)."""
    reset = "class addition" if cfg.reset_every is None else cfg.reset_every
    hparams = {"method": method, "seed": seed, "precision": precision, **dataclasses.asdict(cfg), "reset_every": reset}
    return runs.canonical(hparams)  # plain YAML: lists, not tuples


def run_one(
    cfg: RunConfig,
    method: str,
    seed: int,
    out: Path,
    source: Cifar100Arrays,
    accelerator: str = "auto",
    precision: str = "32-true",
    progress: bool = True,
    description: str = "",
    extra: dict[str, Any] | None = None,
    control: RunControl | None = None,
    callbacks: Sequence[pl.Callback] = (),
    loggers: Sequence[str] = (),
) -> dict[str, Any]:
    """Train one method with one seed through the whole schedule, checkpointing as it goes, or resume it.

    Writes into ``out``: ``run.json`` (settings and status), ``metrics.csv``, ``hparams.yaml``, ``tensorboard/``,
    ``last.ckpt`` (every ``control.checkpoint_every`` epochs, default 1) and, at the end, ``summary.json``. A
    folder that already holds a run is skipped, resumed or refused as :func:`benchmarks.harness.runs.begin` decides.

    Args:
        cfg: The run settings.
        method: One of :data:`~benchmarks.cifar100_continual.methods.METHODS`.
        seed: Seed of the class order, hold-out, initialisation, batch order, augmentation and re-draws.
        out: Folder for this run's files.
        source: The loaded CIFAR-100 arrays.
        accelerator: Lightning accelerator (``"auto"``, ``"cpu"``, ``"gpu"``, ...).
        precision: Lightning precision (e.g. ``"bf16-mixed"`` on a GPU).
        progress: Show a progress bar over epochs.
        description: Prefix of the progress bar.
        extra: More fields for summary.json.
        control: Resume, overwrite, checkpoint period (epochs); default: none, none, 1.
        callbacks: More callbacks for the Trainer.
        loggers: More loggers (``"wandb"``) besides the CSV and TensorBoard files.

    Returns:
        The summary (also written to ``out/summary.json``).

    Raises:
        benchmarks.harness.runs.RunFolderError: When ``out`` holds another or an incomplete run that ``control`` does
            not allow touching.
    """
    control = control or RunControl()
    start = runs.begin(out, run_settings(cfg, method, seed, precision), control)
    if start.action == "skip":
        return start.summary
    pl.seed_everything(seed, verbose=False)
    dm = cfg.datamodule("", seed, source=source)
    model = cfg.model_instance()
    chosen = make_method(method, dm.schedule, cfg.reset_every, cfg.grama_tau, cfg.redo_tau, cfg.log_every, seed)
    description = description or f"{cfg.model} {method} seed{seed}"
    bar = tqdm(total=dm.schedule.total_epochs, desc=description, unit="epoch", disable=not progress,
               dynamic_ncols=True)  # fmt: skip

    def show(row: dict[str, float]) -> None:
        bar.update(1)
        bar.set_postfix(classes=row["classes"], test=f"{row['test_acc']:.3f}", grama=f"{row['grama_ratio']:.3f}")
        if not progress:  # a run without a bar says how it goes, once per epoch (each epoch ends with a test)
            print(f"{description}: epoch {int(row['epoch']) + 1}/{dm.schedule.total_epochs}, {int(row['classes'])} "
                  f"classes, test acc {row['test_acc']:.3f}, GraMa ratio {row['grama_ratio']:.4f}, "
                  f"{int(row['reset_neurons'])} neurons reset", flush=True)  # fmt: skip

    recorder = EpochRecorder(dm.schedule, out / "metrics.csv", on_row=show)
    method_callbacks: list[pl.Callback] = list(chosen.callbacks)
    if cfg.lr_milestones:
        method_callbacks.append(TaskLRSchedule(dm.schedule, cfg.lr_milestones, cfg.lr_gamma))
    checkpoint = PeriodicCheckpoint(out / runs.CHECKPOINT_FILE, every=control.checkpoint_every or 1)
    hparams = run_hparams(cfg, method, seed, precision)

    def final() -> dict[str, float]:  # TensorBoard's hparams table, written when the fit has finished
        last = recorder.rows[-1]
        mean = _mean([r["test_acc"] for r in recorder.rows])
        return {
            "hp/final_test_acc": last["test_acc"],
            "hp/mean_test_acc": mean,
            "hp/final_grama_ratio": last["grama_ratio"],
        }

    board = TensorBoardLogger(out, name="", version="tensorboard", default_hp_metric=False,
                              **tensorboard_resume_kwargs(start.checkpoint))  # fmt: skip
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_epochs=dm.schedule.total_epochs,
        reload_dataloaders_every_n_epochs=1,  # each epoch gets the class set of its own
        num_sanity_val_steps=0,
        # The recorder after the method's callbacks: it closes rows after their epoch hooks.
        callbacks=[*method_callbacks, recorder, RandomState(), checkpoint, LogHyperparams(hparams, final), *callbacks],
        logger=[recorder.logger, board, *extra_loggers(list(loggers), out, f"cifar100 {method} seed{seed}", hparams)],
        log_every_n_steps=cfg.log_every,  # as the callbacks measure: each measurement is logged in its own step
        enable_checkpointing=True,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    save_hparams_to_yaml(out / "hparams.yaml", hparams)
    with runs.attempt(out):
        trainer.fit(model, datamodule=dm, ckpt_path=start.checkpoint)
    bar.close()
    rows = recorder.rows
    schedule = dm.schedule
    task_ends = [e - 1 for e in schedule.increment_epochs] + [schedule.total_epochs - 1]
    summary = {
        "method": method,
        "seed": seed,
        "config": dataclasses.asdict(cfg),
        "device": str(trainer.strategy.root_device),
        "precision": precision,
        "epochs": len(rows),
        "seconds": sum(r["seconds"] for r in rows),
        "class_order": dm.order,
        "final_test_acc": rows[-1]["test_acc"],
        "final_train_acc": rows[-1]["train_acc"],
        "final_grama_ratio": rows[-1]["grama_ratio"],
        "final_dormant_ratio": rows[-1]["dormant_ratio"],
        "mean_test_acc": _mean([r["test_acc"] for r in rows]),
        "task_end_test_acc": [rows[e]["test_acc"] for e in task_ends if e < len(rows)],
        "reset_neurons": sum(r["reset_neurons"] for r in rows),
        "reset_epochs": [r["epoch"] for r in rows if r["reset_neurons"] > 0],
        **(extra or {}),
    }
    runs.finish(out, summary)
    return runs.read_summary(out)


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan
