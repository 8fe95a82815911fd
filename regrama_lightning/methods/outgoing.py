"""A layer's outgoing weights seen per neuron: the readers' weight entries that read each neuron.

A reader (:class:`~regrama_lightning.tracing.layers.Consumer`) reads neuron ``n`` through input columns ``c`` of its
weight. :func:`column_rows` lays a reader's weight out as one row per input column (all the entries that read
that column: the output units, times the kernel positions of a conv), so that per-neuron quantities are sums
over rows, gathered by ``consumer.neurons``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from regrama_lightning.tracing.layers import Consumer


def column_rows(consumer: Consumer, weight: Tensor | None = None) -> Tensor:
    """The reader's weight (or ``weight`` shaped like it) as ``(width, entries per column)``; a copy if needed."""
    w = consumer.weight if weight is None else weight
    if consumer.axis == 0:  # ConvTranspose (in, out/groups, k...) and h @ W (in, out): row c reads input c
        return w.reshape(w.shape[0], -1)
    groups = consumer.groups
    out, per_group = w.shape[0], w.shape[1]
    # Output o of a grouped conv reads only its own group's inputs: (group, out/group, in/group, kernel).
    grouped = w.reshape(groups, out // groups, per_group, -1).permute(0, 2, 1, 3)
    return grouped.reshape(groups * per_group, -1)


def outgoing_abs_mean(consumers: Iterable[Consumer], size: int) -> Tensor:
    """Per neuron, the mean ``|w|`` over every reader entry that reads it (0 for a neuron no weight reads).

    Example:
        >>> from torch import nn
        >>> from regrama_lightning import trace_topology
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 3))
        >>> layer = trace_topology(net, lambda: net(torch.randn(1, 2)))["0"]
        >>> with torch.no_grad():
        ...     _ = net[2].weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 0.0], [-2.0, 4.0]]))
        >>> outgoing_abs_mean(layer.consumers, 2)
        tensor([2., 2.])
    """
    sums = counts = None
    for consumer in consumers:
        rows = column_rows(consumer).detach().abs().float()
        if sums is None:
            sums = torch.zeros(size, device=rows.device)
            counts = torch.zeros(size, device=rows.device)
        neurons = consumer.neurons.to(rows.device)
        sums.index_add_(0, neurons, rows.sum(1).index_select(0, consumer.columns.to(rows.device)))
        counts.index_add_(0, neurons, torch.full_like(neurons, rows.shape[1], dtype=torch.float32))
    if sums is None:
        return torch.zeros(size)
    return torch.where(counts > 0, sums / counts.clamp_min(1), torch.zeros_like(sums))


def absorbs_bias(consumer: Consumer) -> bool:
    """Whether the reader is a plain biased Linear/Conv layer (its bias can absorb a removed input's mean)."""
    module = consumer.module
    return (
        module is not None
        and consumer.axis == 1
        and consumer.groups == 1
        and getattr(module, "bias", None) is not None
        and consumer.weight is module.weight
    )


@torch.no_grad()
def absorb_mean_input(consumer: Consumer, mask: Tensor, mean_activation: Tensor) -> Tensor:
    """``bias += sum_i W[:, cols(i)] * mean_activation_i`` over the masked neurons, in place; returns the change.

    After the masked neurons' columns are zeroed, the reader's output keeps its mean (Dohare et al.'s CBP).
    A conv reader's kernel positions each read the neuron's mean (padding ignored).

    Raises:
        ValueError: If the reader is not a plain biased Linear/Conv layer (see :func:`absorbs_bias`).
    """
    if not absorbs_bias(consumer):
        raise ValueError(f"Reader {consumer.name!r} has no bias of its own to absorb the mean into.")
    weight = consumer.weight
    per_column = weight.reshape(weight.shape[0], weight.shape[1], -1).sum(-1)  # (out, in): kernel summed
    neurons = consumer.neurons.to(weight.device)
    mean = torch.where(mask.to(weight.device), mean_activation.to(weight.device), 0.0).to(weight.dtype)
    change = per_column.index_select(1, consumer.columns.to(weight.device)) @ mean.index_select(0, neurons)
    consumer.module.bias.add_(change)
    return change
