"""Measurements kept on the device between reads, so that measuring a step costs no host sync.

Each measured optimizer step packs its per-neuron magnitude sums into one row of a preallocated buffer (the
layout of :class:`~regrama_lightning.metrics.NeuronActivityRatio`); the callbacks read all rows at once, about
as often as the Trainer logs, with one host sync.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import Tensor

from regrama_lightning.metrics import NeuronActivityRatio


class MeasurementBuffer:
    """Rows of packed measurements of one optimizer's layers, with the logging step of each.

    Args:
        metric: Gives the packed layout (and evaluates the rows).
        capacity: Rows held before they must be read.

    Example:
        >>> metric = NeuronActivityRatio({"a": 2, "b": 3}, tau=0.1)
        >>> buffer = MeasurementBuffer(metric, capacity=4)
        >>> buffer.record({"a": torch.tensor([0.0, 4.0])}, {"a": 2}, step=7)
        >>> rows, steps = buffer.take()
        >>> metric.summary(rows).inactive.tolist(), steps
        ([[1.0, 0.0]], [7])
    """

    def __init__(self, metric: NeuronActivityRatio, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"`capacity` must be >= 1, got {capacity}.")
        self.metric = metric
        self.rows = metric.total.new_zeros(capacity, metric.width)
        self._views = list(self.rows.unbind(0))  # made once: indexing a row is itself a tensor op
        self.steps: list[int] = []

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def full(self) -> bool:
        """Whether the next record needs a read first."""
        return len(self.steps) == len(self._views)

    def record(self, sums: Mapping[str, Tensor], counts: Mapping[str, int], step: int = -1) -> None:
        """Pack one measurement (see :meth:`NeuronActivityRatio.pack`) into the next row.

        ``step`` is its logging step, ``-1`` if not known yet (see :meth:`stamp`).

        Raises:
            RuntimeError: If the buffer is full.
        """
        self.write(sums, counts)
        self.commit(step)

    def write(self, sums: Mapping[str, Tensor], counts: Mapping[str, int]) -> None:
        """Pack a measurement into the next row without keeping it yet: a later write replaces it.

        An optimizer that evaluates its closure several times per step (LBFGS) is measured at each evaluation;
        the step keeps the last one (:meth:`commit`), and a step that never happens (a skipped AMP step) none.

        Raises:
            RuntimeError: If the buffer is full.
        """
        self.metric.pack(sums, counts, out=self.next_row())

    def commit(self, step: int = -1) -> None:
        """Keep the row written last as a measurement with logging step ``step`` (``-1``: see :meth:`stamp`)."""
        self.steps.append(step)

    def next_row(self) -> Tensor:
        """The row the next write goes to (a signal may pack into it directly, then :meth:`commit`).

        Raises:
            RuntimeError: If the buffer is full.
        """
        if self.full:
            raise RuntimeError(f"The buffer holds {len(self._views)} unread rows: call take() before recording.")
        return self._views[len(self.steps)]

    def stamp(self, step: int) -> None:
        """Give the rows recorded without a step (in this batch) their logging step."""
        i = len(self.steps) - 1
        while i >= 0 and self.steps[i] < 0:
            self.steps[i] = step
            i -= 1

    def take(self, reduce: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, list[int]]:
        """The recorded rows (summed across processes by ``reduce``; non-finite ones "skipped") and their steps.

        Empties the buffer: the rows returned are a copy, safe to keep.
        """
        rows = self.rows[: len(self.steps)]
        if reduce is not None:
            rows = reduce(rows.clone())
        steps, self.steps = self.steps, []
        return self.metric.guard(rows), steps
