"""What a callback follows of one optimizer: its step count, schedule flags, layers and measurements."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.optim import Optimizer

from regrama_lightning.buffer import MeasurementBuffer
from regrama_lightning.metrics import NeuronActivityRatio


@dataclass(eq=False)
class OptimizerTrack:
    """One optimizer that steps scored layers, and everything the callback keeps about it.

    Attributes:
        index: Position in ``trainer.optimizers``.
        optimizer: The (unwrapped) optimizer.
        metric: Its layers' metric (the packed layout of a measurement).
        buffer: Its measurements not read yet.
        steps: ``optimizer.step()`` calls so far (an LBFGS step that evaluates its closure many times is one).
        layers: Layers measured: scored ones, and selected ones not traced yet.
        scored: Scored layers, in the metric's order.
        scored_index: Their positions in the metric.
        measuring: The batch under way measures this optimizer's next step.
        written: A measurement was written for the step under way (kept once the step happens).
        measured: A measurement was kept in this batch.
        reset_due: A reset is due at the end of this batch.
        requested: The next step resets, whatever the period (:meth:`NeuronReset.request_reset`).
        closures: Closure evaluations in the step under way.
        reevaluates: The optimizer evaluates its closure several times per step (LBFGS).
        state: The latest measurement read.
        latest_counts: ``(inactive, neurons)`` of the latest measurement logged (NaN if it was skipped).
    """

    index: int
    optimizer: Optimizer
    metric: NeuronActivityRatio
    buffer: MeasurementBuffer
    steps: int = 0
    layers: list[str] = field(default_factory=list)
    scored: list[str] = field(default_factory=list)
    scored_index: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    measuring: bool = False
    written: bool = False
    measured: bool = False
    reset_due: bool = False
    requested: bool = False
    closures: int = 0
    reevaluates: bool = False
    state: Tensor | None = None
    latest_counts: tuple[float, float] | None = None

    def refresh(self, layers: Iterable[str], scored: Iterable[str]) -> None:
        """Set the measured and scored layers (after a trace learned more)."""
        self.layers = list(layers)
        chosen = set(scored)
        positions = [i for i, n in enumerate(self.metric.layer_names) if n in chosen]
        self.scored = [self.metric.layer_names[i] for i in positions]
        self.scored_index = torch.tensor(positions, dtype=torch.long, device=self.metric.total.device)

    def scores(self) -> dict[str, Tensor]:
        """Normalised per-neuron scores of the scored layers at the latest measurement (read or not)."""
        pending = len(self.buffer)
        state = self.metric.guard(self.buffer.rows[pending - 1]) if pending else self.state
        if state is None:
            return {}
        scores = self.metric.scores(state)
        return {n: scores[n] for n in self.scored}


def follow(
    optimizers: Sequence[Optimizer],
    owner: Mapping[str, int],
    make_metric: Callable[[list[str]], NeuronActivityRatio],
    device: torch.device,
    capacity: int,
    steps: Sequence[int] = (),
    requested: Iterable[int] = (),
) -> list[OptimizerTrack]:
    """One track per optimizer that steps a selected layer (SAC's temperature optimizer is not followed).

    Args:
        optimizers: The Trainer's optimizers (unwrapped).
        owner: Per selected layer, the index of its optimizer.
        make_metric: Builds the metric of a list of layers.
        device: Where the metrics and buffers live.
        capacity: Measurements buffered between reads.
        steps: Step counts to start from, by optimizer index (a resumed run); 0 for the others.
        requested: Optimizer indices whose next step resets.
    """
    tracks = []
    requested = set(requested)
    for index in sorted(set(owner.values())):
        metric = make_metric([n for n, i in owner.items() if i == index]).to(device)
        track = OptimizerTrack(index, optimizers[index], metric, MeasurementBuffer(metric, capacity))
        track.steps = steps[index] if index < len(steps) else 0
        track.requested = index in requested
        tracks.append(track)
    return tracks
