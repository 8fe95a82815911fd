"""Per-neuron GraMa and ReDo scores of a run, recorded every N steps into one compact ``.npz`` file.

:class:`NeuronScores` reads what the run's own :class:`~regrama_lightning.ReGraMa` and
:class:`~regrama_lightning.ReDo` callbacks measured (their ``latest_scores``: per neuron, magnitude divided by
the layer mean), so the recorded scores are exactly those the methods select on. :func:`load` reads the file.

File layout (``np.load``): ``steps`` and ``env_steps`` ``(R,)`` of the R records; ``layers`` (names) and
``sizes`` (neurons per layer) give the column blocks, in the model's order; per signal (``grama``, ``redo``) a
float32 ``(R, N)`` array of normalised scores (NaN where that callback does not score the layer) and its
threshold ``<signal>_tau``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.utilities import rank_zero_only

from regrama_lightning import NeuronReset, ReDo, ReGraMa

SIGNALS: dict[str, type[NeuronReset]] = {"grama": ReGraMa, "redo": ReDo}


class NeuronScores(pl.Callback):
    """Record the run's per-neuron GraMa and ReDo scores every ``every_n_steps`` steps into ``path`` (``.npz``).

    The Trainer must also carry a ``ReGraMa`` and/or a ``ReDo`` callback (the first of each kind is read). A
    record is taken at the end of a batch whose step count is a multiple of ``every_n_steps``; that period must
    be a multiple of each callback's measuring period (its ``log_every_n_steps``, else the Trainer's), so that
    every record is the measurement of its own step, on that step's batch. The step count is
    ``getattr(pl_module, step_attribute)`` (an RL agent's ``updates``: each of its optimizers steps once per
    update) or, without it, the Trainer's ``global_step`` (one optimizer, automatic optimisation). Only record
    steps copy the scores to the host. The file is rewritten at each checkpoint and at the end; a resumed run
    keeps the records up to the step it resumes from.

    Args:
        path: The ``.npz`` file to write.
        every_n_steps: Record period in steps.
        step_attribute: Name of an ``int`` attribute of the module counting steps; ``None``: ``global_step``.

    Raises:
        ValueError: On a non-positive period, at fit start when the Trainer has neither callback, when the
            period is not a multiple of a callback's measuring period, or when ``step_attribute`` is no ``int``
            attribute of the module.

    Example:
        >>> recorder = NeuronScores("run/neuron_scores.npz", every_n_steps=1000, step_attribute="updates")
    """

    def __init__(self, path: str | Path, every_n_steps: int, step_attribute: str | None = None) -> None:
        if not isinstance(every_n_steps, int) or isinstance(every_n_steps, bool) or every_n_steps < 1:
            raise ValueError(f"`every_n_steps` must be a positive int, got {every_n_steps!r}.")
        self.path, self.every_n_steps, self.step_attribute = Path(path), every_n_steps, step_attribute
        self._monitors: dict[str, NeuronReset] = {}
        self._records: list[tuple[int, int, dict[str, dict[str, np.ndarray]]]] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Find the callbacks, check the period, keep the records of an earlier attempt up to this step."""
        found = {key: [c for c in trainer.callbacks if isinstance(c, kind)] for key, kind in SIGNALS.items()}
        self._monitors = {key: callbacks[0] for key, callbacks in found.items() if callbacks}
        if not self._monitors:
            raise ValueError("NeuronScores needs a ReGraMa or ReDo callback in the Trainer's `callbacks` to read.")
        for monitor in self._monitors.values():
            period = monitor.log_every_n_steps or trainer.log_every_n_steps
            if self.every_n_steps % period:
                raise ValueError(
                    f"`every_n_steps` ({self.every_n_steps}) must be a multiple of the {type(monitor).__name__} "
                    f"callback's measuring period ({period}, its `log_every_n_steps` or the Trainer's) so that "
                    "each record is the measurement of its own step."
                )
        now = self._step(trainer, pl_module)
        self._records = [r for r in _read_records(self.path) if r[0] <= now] if self.path.exists() else []

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """At a record step, copy every scored layer's scores to the host."""
        step = self._step(trainer, pl_module)
        if step == 0 or step % self.every_n_steps or (self._records and self._records[-1][0] == step):
            return
        scores = {
            key: {name: s.detach().float().cpu().numpy() for name, s in monitor.latest_scores.items()}
            for key, monitor in self._monitors.items()
        }
        if any(scores.values()):
            self._records.append((step, int(getattr(pl_module, "env_steps", step)), scores))

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        """Write the records so far (a resumed run continues from them)."""
        self._write()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write every record."""
        self._write()

    def _step(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> int:
        if self.step_attribute is None:
            return trainer.global_step
        value = getattr(pl_module, self.step_attribute, None)
        if not isinstance(value, int):
            raise ValueError(
                f"`step_attribute` {self.step_attribute!r} must name an int attribute of "
                f"{type(pl_module).__name__}, got {value!r}."
            )
        return value

    @rank_zero_only
    def _write(self) -> None:
        if not self._records:
            return
        layers: dict[str, int] = {}
        for _, _, scores in self._records:
            for per_layer in scores.values():
                layers.update({name: len(s) for name, s in per_layer.items() if name not in layers})
        arrays: dict[str, np.ndarray] = {
            "steps": np.array([r[0] for r in self._records], dtype=np.int64),
            "env_steps": np.array([r[1] for r in self._records], dtype=np.int64),
            "layers": np.array(list(layers)),
            "sizes": np.array(list(layers.values()), dtype=np.int64),
        }
        for key, monitor in self._monitors.items():
            rows = [np.concatenate([r[2][key].get(n, np.full(k, np.nan, np.float32)) for n, k in layers.items()])
                    for r in self._records]  # fmt: skip
            arrays[key] = np.stack(rows).astype(np.float32)
            arrays[f"{key}_tau"] = np.array(monitor.tau, dtype=np.float64)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial.npz")
        np.savez_compressed(partial, **arrays)
        os.replace(partial, self.path)


@dataclass(frozen=True)
class Recorded:
    """What :func:`load` returns: a run's records.

    Attributes:
        steps: Step count of each record ``(R,)``.
        env_steps: The module's ``env_steps`` at each record (the step count where it has none).
        layers: Layer names, in column-block order.
        sizes: Neurons of each layer.
        scores: Per signal (``grama``, ``redo``), normalised scores ``(R, N)``.
        taus: Per signal, the callback's threshold.
    """

    steps: np.ndarray
    env_steps: np.ndarray
    layers: tuple[str, ...]
    sizes: np.ndarray
    scores: dict[str, np.ndarray]
    taus: dict[str, float]

    def layer_of(self) -> np.ndarray:
        """Index of each column's layer ``(N,)``."""
        return np.repeat(np.arange(len(self.layers)), self.sizes)


def load(path: str | Path) -> Recorded:
    """Read a file written by :class:`NeuronScores`.

    Raises:
        FileNotFoundError: If there is no such file.
    """
    with np.load(path) as data:
        keys = [k for k in SIGNALS if k in data.files]
        return Recorded(
            steps=data["steps"],
            env_steps=data["env_steps"],
            layers=tuple(str(n) for n in data["layers"]),
            sizes=data["sizes"],
            scores={k: data[k] for k in keys},
            taus={k: float(data[f"{k}_tau"]) for k in keys},
        )


def _read_records(path: Path) -> list[tuple[int, int, dict[str, dict[str, np.ndarray]]]]:
    """The records of an existing file, in the form the callback keeps them."""
    recorded = load(path)
    bounds = np.cumsum([0, *recorded.sizes])
    records = []
    for i, (step, env_step) in enumerate(zip(recorded.steps, recorded.env_steps, strict=True)):
        scores = {
            key: {n: values[i, bounds[j] : bounds[j + 1]] for j, n in enumerate(recorded.layers)}
            for key, values in recorded.scores.items()
        }
        records.append((int(step), int(env_step), scores))
    return records
