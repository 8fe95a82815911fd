"""The training side of ``python -m benchmarks.random_labels`` (see ``cli.py``): data, model, runs, tables."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import Logger
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from regrama_lightning import NeuronReset, PlasticityMetrics

from ..harness.monitors import extra_callbacks, method_monitors, plasticity_metrics

__all__ = ["PhaseRow", "format_table", "run_method", "summary"]


class RandomLabelData(pl.LightningDataModule):
    """Fixed synthetic Gaussian inputs whose labels are re-drawn in place at every phase.

    Args:
        samples: Number of inputs.
        input_dim: Dimension of each input.
        classes: Number of label classes.
        batch_size: Training batch size.
        seed: Seed of the inputs and of every phase's labels (independent of the global RNG, so every method
            sees exactly the same tasks).
    """

    def __init__(self, samples: int, input_dim: int, classes: int, batch_size: int, seed: int) -> None:
        super().__init__()
        self.classes = classes
        self.batch_size = batch_size
        self.seed = seed
        self.inputs = torch.randn(samples, input_dim, generator=torch.Generator().manual_seed(seed))
        self.labels = torch.zeros(samples, dtype=torch.long)

    def redraw(self, phase: int) -> None:
        """Draw phase ``phase``'s labels; in place, so the live DataLoader serves them from its next batch."""
        gen = torch.Generator().manual_seed(self.seed * 10_007 + phase + 1)
        self.labels.copy_(torch.randint(self.classes, self.labels.shape, generator=gen))

    def train_dataloader(self) -> DataLoader:
        """Shuffled mini-batches over the whole set (single process: the tensors are tiny)."""
        return DataLoader(TensorDataset(self.inputs, self.labels), batch_size=self.batch_size, shuffle=True)


class MLP(pl.LightningModule):
    """A plain ReLU MLP classifier trained with Adam.

    Args:
        input_dim: Input features.
        width: Hidden units per layer.
        depth: Number of hidden layers.
        classes: Output classes.
        lr: Adam learning rate.
        network: ``relu`` (plain MLP), ``leaky_relu``, ``layer_norm`` (Linear, LayerNorm, ReLU) or ``bro``
            (BRO-net style: Linear, LayerNorm, ReLU, then ``depth`` blocks ``x + LN(Linear(ReLU(LN(Linear(x)))))``).
    """

    def __init__(self, input_dim: int, width: int, depth: int, classes: int, lr: float, network: str = "relu") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if network == "bro":
            layers += [nn.Linear(input_dim, width), nn.LayerNorm(width), nn.ReLU()]
            layers += [BroBlock(width) for _ in range(depth)]
        for i in range(depth if network != "bro" else 0):
            layers.append(nn.Linear(input_dim if i == 0 else width, width))
            layers += [nn.LayerNorm(width)] if network == "layer_norm" else []
            layers.append(nn.LeakyReLU() if network == "leaky_relu" else nn.ReLU())
        self.net = nn.Sequential(*layers, nn.Linear(width, classes))
        self.lr = lr

    def forward(self, x: Tensor) -> Tensor:
        """Class logits."""
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Cross-entropy on the current phase's labels."""
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """One Adam for the whole run: its moments carry over from phase to phase, as in Lyle et al."""
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class BroBlock(nn.Module):
    """BRO-net's residual block (its appendix A Table 1): ``x + LN(Linear(ReLU(LN(Linear(x)))))``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(width, width), nn.LayerNorm(width), nn.ReLU(), nn.Linear(width, width), nn.LayerNorm(width)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Residual sum."""
        return x + self.body(x)


@dataclass
class PhaseRow:
    """What a method reached at the end of one phase."""

    method: str
    phase: int
    accuracy: float
    grama: float
    dormant: float
    reset: int
    rank: float
    seed: int = 0


class MemoryLogger(Logger):
    """Keeps the callbacks' logged values in memory: the reset counts of every reset step, summed per phase."""

    def __init__(self) -> None:
        super().__init__()
        self.reset_neurons = 0.0

    @property
    def name(self) -> str:
        """Logger name."""
        return "memory"

    @property
    def version(self) -> int:
        """Logger version."""
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Nothing to keep."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Add up the neurons reset since the last phase end."""
        self.reset_neurons += metrics.get("reset/neurons", 0.0)


class Phases(pl.Callback):
    """Re-draws the labels at each phase start and records accuracy and neuron ratios at each phase end.

    Must come before the reset callback in ``callbacks`` so that the end-of-phase accuracy is read before
    that callback's reset of the same step.

    Args:
        data: The data module whose labels to re-draw.
        epochs_per_phase: Epochs of training on each phase's labels.
        method: Name written into the rows.
        grama: Callback whose ``grama/ratio`` to record.
        dormant: Callback whose ``dormant/ratio`` to record.
        memory: Logger that counts the reset neurons.
    """

    def __init__(
        self,
        data: RandomLabelData,
        epochs_per_phase: int,
        method: str,
        grama: NeuronReset,
        dormant: NeuronReset,
        memory: MemoryLogger,
    ) -> None:
        self.data = data
        self.epochs_per_phase = epochs_per_phase
        self.method = method
        self.grama = grama
        self.dormant = dormant
        self.memory = memory
        self.rows: list[PhaseRow] = []
        self._accuracy = float("nan")

    def _phase_end(self, trainer: pl.Trainer) -> bool:
        return (trainer.current_epoch + 1) % self.epochs_per_phase == 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """New phase: new labels."""
        if trainer.current_epoch % self.epochs_per_phase == 0:
            self.data.redraw(trainer.current_epoch // self.epochs_per_phase)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """After the phase's last optimizer step (and before any reset of that step): full-set accuracy."""
        if batch_idx == trainer.num_training_batches - 1 and self._phase_end(trainer):
            pl_module.eval()
            with torch.no_grad():
                predictions = pl_module(self.data.inputs.to(pl_module.device)).argmax(dim=1).cpu()
            pl_module.train()
            self._accuracy = (predictions == self.data.labels).float().mean().item()

    @staticmethod
    def _rank(trainer: pl.Trainer) -> float:
        """The model-wide effective rank of the hidden features at the phase's last measured batch."""
        metrics = next((c for c in trainer.callbacks if isinstance(c, PlasticityMetrics)), None)
        return metrics.last_metrics.get("plasticity/effective_rank", float("nan")) if metrics else float("nan")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write the phase's row (the ratios were measured on the phase's last step)."""
        if not self._phase_end(trainer):
            return
        self.rows.append(
            PhaseRow(
                method=self.method,
                phase=trainer.current_epoch // self.epochs_per_phase,
                accuracy=self._accuracy,
                grama=self.grama.last_metrics.get("grama/ratio", float("nan")),
                dormant=self.dormant.last_metrics.get("dormant/ratio", float("nan")),
                reset=round(self.memory.reset_neurons),
                rank=self._rank(trainer),
            )
        )
        self.memory.reset_neurons = 0.0


def run_method(method: str, args: argparse.Namespace) -> list[PhaseRow]:
    """Train one method through all phases and return its per-phase rows."""
    pl.seed_everything(args.seed, workers=True, verbose=False)  # same init and batch order for every method
    data = RandomLabelData(args.samples, args.input_dim, args.classes, args.batch_size, args.seed)
    model = MLP(args.input_dim, args.width, args.depth, args.classes, args.lr, getattr(args, "network", "relu"))
    steps_per_epoch = -(-args.samples // args.batch_size)
    steps_per_phase = steps_per_epoch * args.epochs_per_phase
    reset_every = args.reset_every or steps_per_phase
    # Measure on the last step of every epoch, so the value recorded at a phase end is that phase's last step.
    grama, dormant = method_monitors(
        method, reset_every, args.grama_tau, args.redo_tau, log_every_n_steps=steps_per_epoch, seed=args.seed
    )
    memory = MemoryLogger()
    phases = Phases(data, args.epochs_per_phase, method, grama, dormant, memory)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=args.phases * args.epochs_per_phase,
        # `phases` first: accuracy is read before a reset of the same step
        callbacks=[
            phases,
            grama,
            dormant,
            *extra_callbacks(method, seed=args.seed, reset_every=reset_every),
            plasticity_metrics(every_n_steps=steps_per_epoch),  # the last batch of every epoch
        ],
        logger=memory,  # in memory only: nothing is written to disk
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        log_every_n_steps=steps_per_epoch,
    )
    trainer.fit(model, datamodule=data)
    return phases.rows


def format_table(rows: list[PhaseRow]) -> str:
    """The per-phase rows as a fixed-width text table."""
    lines = [
        f"{'method':<17} {'seed':>4} {'phase':>5} {'train acc':>9} {'GraMa ratio':>11} {'dormant ratio':>13} "
        f"{'reset':>5} {'eff. rank':>9}"
    ]
    for r in rows:
        lines.append(
            f"{r.method:<17} {r.seed:>4d} {r.phase:>5d} {r.accuracy:>9.3f} {r.grama:>11.3f} {r.dormant:>13.3f} "
            f"{r.reset:>5d} {r.rank:>9.2f}"
        )
    return "\n".join(lines)


def summary(rows: list[PhaseRow], methods: list[str], first: int) -> str:
    """Per method, means over seeds: accuracies (last phase, all, first ``first`` phases, the rest), ratios, rank.

    The ratios are means over the phases; the effective rank is that of the first and of the last phase.
    """
    lines = [
        f"{'method':<17} {'acc last':>8} {'acc mean':>8} {'acc first':>9} {'acc rest':>9} {'GraMa':>6} "
        f"{'dormant':>7} {'rank first':>10} {'rank last':>9}"
    ]
    for method in methods:
        mine = [r for r in rows if r.method == method]
        if not mine:
            continue
        last = max(r.phase for r in mine)
        head = [r for r in mine if r.phase < first]
        tail = [r for r in mine if r.phase >= first] or [r for r in mine if r.phase == last]
        start = [r for r in mine if r.phase == 0] or mine
        end = [r for r in mine if r.phase == last]

        def mean(part: list[PhaseRow], key: str) -> float:
            return sum(getattr(r, key) for r in part) / len(part)

        lines.append(
            f"{method:<17} {mean(end, 'accuracy'):>8.3f} {mean(mine, 'accuracy'):>8.3f} {mean(head, 'accuracy'):>9.3f} "
            f"{mean(tail, 'accuracy'):>9.3f} {mean(mine, 'grama'):>6.3f} {mean(mine, 'dormant'):>7.3f} "
            f"{mean(start, 'rank'):>10.2f} {mean(end, 'rank'):>9.2f}"
        )
    return "\n".join(lines)
