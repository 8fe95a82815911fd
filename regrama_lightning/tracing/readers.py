"""Which columns of each reading weight read which neuron, over every call of the weight in a trace."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from regrama_lightning.tracing.layers import ID_DTYPE, NO_NEURON, Consumer, NeuronLayer


def columns_read(ids: Tensor, channel_dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """The input columns of a weight that read one neuron each, from the neuron ids of its input.

    A column reads one neuron if every traced element it reads is that neuron's (padding reads none).

    Args:
        ids: Neuron ids of the weight's input.
        channel_dim: The input's dim that the weight's columns read.

    Returns:
        ``(columns, their neuron ids, ids of the columns that read several)``.
    """
    rows = ids.movedim(channel_dim, -1).reshape(-1, ids.shape[channel_dim])
    traced = rows != NO_NEURON
    high = rows.masked_fill(~traced, torch.iinfo(ID_DTYPE).min).amax(0)
    low = rows.masked_fill(~traced, torch.iinfo(ID_DTYPE).max).amin(0)
    consistent = (high == low) | ~traced.any(0)
    cols = torch.nonzero(consistent & (high >= 0)).flatten()
    return cols, high[cols], rows[:, ~consistent]


@dataclass
class WeightReads:
    """What one weight read during a trace: per call, the columns that read one neuron, and its id."""

    reader: str
    module: nn.Module | None
    weight: Tensor
    axis: int
    groups: int
    columns: list[Tensor] = field(default_factory=list)
    ids: list[Tensor] = field(default_factory=list)

    def add_to(
        self, layers: Mapping[str, NeuronLayer], offsets: Mapping[str, int], owners: Callable[[Tensor], list[str]]
    ) -> None:
        """Add this weight to the consumers (or shared readers) of the layers it read.

        A column read on behalf of several neurons (one weight applied to two layers' outputs, or to two slices
        of one layer) sums them, as a residual stream does: it is shared, not the outgoing weight of either.

        Args:
            layers: The traced layers by name.
            offsets: First neuron id of each layer.
            owners: The layers whose neurons a tensor of ids names.
        """
        pairs = torch.unique(torch.stack([torch.cat(self.columns), torch.cat(self.ids).long()], 1), dim=0)
        cols, ids = pairs[:, 0], pairs[:, 1]
        _, inverse, counts = torch.unique(cols, return_inverse=True, return_counts=True)
        shared = counts[inverse] > 1
        for name in owners(ids[shared]):
            layers[name].residual_readers.add(self.reader)
        cols, ids = cols[~shared], ids[~shared]
        for name in owners(ids):
            producer, start = layers[name], offsets[name]
            mine = (ids >= start) & (ids < start + producer.size)
            consumer = Consumer(
                self.reader, self.module, cols[mine], ids[mine] - start, self.weight, self.axis, self.groups
            )
            producer.consumers.append(consumer)
