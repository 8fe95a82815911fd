"""The tracer's data model: a neuron layer, the weights that read it, and where its activation is.

Neuron ids: while tracing, every tensor derived from a layer's output carries an integer tensor of its shape
naming the neuron each element comes from (offsets per layer, ``NO_NEURON`` for data of no layer, ``MIXED`` for
sums of several neurons).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

ID_DTYPE = torch.int32  # neuron ids; half the memory of int64 for the one traced batch
NO_NEURON = -1  # element derived from no traced neuron
MIXED = -2  # element that sums the outputs of several neurons (a residual stream, a gate)


@dataclass
class Consumer:
    """A weight that reads a neuron layer's output.

    Attributes:
        name: Qualified name of the reading module (or of the bare parameter used as a weight).
        module: The reading module; ``None`` for a bare parameter.
        columns: Input positions of the weight (along ``axis``) that read the layer.
        neurons: For each entry of ``columns``, the index of the neuron it reads.
        weight: The reading weight (defaults to ``module.weight``).
        axis: The weight's input axis: 1 for ``Linear``/``Conv``, 0 for ``ConvTranspose`` and ``h @ W``.
        groups: Groups of a grouped ``Conv`` reader (its weight holds ``in_channels / groups`` columns).
    """

    name: str
    module: nn.Module | None
    columns: Tensor
    neurons: Tensor
    weight: Tensor | None = None
    axis: int = 1
    groups: int = 1

    def __post_init__(self) -> None:
        if self.weight is None:
            self.weight = self.module.weight
            self.groups = getattr(self.module, "groups", 1) if self.axis == 1 else 1

    @property
    def width(self) -> int:
        """Number of input positions the weight reads."""
        return self.weight.shape[self.axis] * (self.groups if self.axis == 1 else 1)


@dataclass(frozen=True)
class SitePart:
    """Where some of a layer's neurons are measured, when no single value holds them all.

    A layer's output ``chunk``-ed or ``split`` before its nonlinearities (``relu(u) * sigmoid(v)``) has one
    activation per piece: each part is one node of the site and the neurons it holds.

    Attributes:
        node: Index of the measured value (0: the raw output, ``i``: the ``i``-th entry of the site's nodes).
        dim: The dimension of that value holding the part's neurons (negative); ``None`` if it holds one neuron.
        positions: Position along ``dim`` of each neuron of ``neurons``.
        neurons: The neurons this part measures.
    """

    node: int
    dim: int | None
    positions: tuple[int, ...]
    neurons: tuple[int, ...]


@dataclass
class ActivationSite:
    """Where ReDo's value of a layer is in the graph: the ops from the layer's output to it.

    Attributes:
        nodes: The ops after the layer's raw output (node 0), each ``(op name, parent nodes)``; the last one is
            the measured value (unless ``parts`` says otherwise). Empty: the raw output itself. An element of
            an op's tuple output (``chunk``, ``split``) is named ``"op[i]"``; an op that keeps part of its input
            (``h[:, :2]``, ``narrow``) is named with its arguments, ``"__getitem__((:, :2))"``.
        dim: The dimension of the measured value that holds the neurons (negative, from the end); ``None`` for a
            one-neuron layer whose value holds only that neuron.
        order: Position along ``dim`` of each neuron, when not ``0..size-1``.
        name: The value-changing ops, e.g. ``"batch_norm+relu"``, ``"sigmoid+mul"``; ``"identity"`` if none.
        error: Why the value cannot be measured per neuron (ReDo then refuses the layer).
        parts: When the neurons are measured on several values (a split output): one entry per value, in
            place of ``dim`` and ``order``.
    """

    nodes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    dim: int | None = -1
    order: Tensor | None = None
    name: str = "identity"
    error: str | None = None
    parts: tuple[SitePart, ...] = ()
    # Index tensors per device, made once: a host-to-device copy at every measured step would wait for the device.
    _indices: dict[torch.device, list[Tensor | None]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    @property
    def measured(self) -> tuple[int, ...]:
        """The node indices whose values are measured (one unless the site has ``parts``)."""
        return tuple(p.node for p in self.parts) if self.parts else (len(self.nodes),)

    def reduce(self, *values: Tensor) -> tuple[Tensor, int]:
        """Per-neuron sums of ``|value|`` (float32) and the number of terms in each.

        Args:
            values: The value of each measured node, in the order of :attr:`measured`.
        """
        indices = self._on(values[0].device)
        if not self.parts:
            return _sums(values[0], self.dim, indices[0])
        size = sum(len(p.neurons) for p in self.parts)
        total, count = torch.empty(size, dtype=torch.float32, device=values[0].device), 0
        for i, (part, value) in enumerate(zip(self.parts, values, strict=True)):
            sums, terms = _sums(value, part.dim, indices[2 * i])
            count = count or terms
            total.index_copy_(0, indices[2 * i + 1], sums if terms == count else sums * (count / terms))
        return total, count

    def _on(self, device: torch.device) -> list[Tensor | None]:
        """The order (or each part's positions and neurons) as index tensors on ``device``."""
        indices = self._indices.get(device)
        if indices is None:
            if not self.parts:
                indices = [None if self.order is None else self.order.to(device)]
            else:
                pairs = [(p.positions, p.neurons) for p in self.parts]
                indices = [torch.tensor(ix, dtype=torch.long, device=device) for pair in pairs for ix in pair]
            self._indices[device] = indices
        return indices

    def same_path(self, other: ActivationSite) -> bool:
        """Whether two calls of a layer measure the same value."""
        same = self.nodes == other.nodes and self.dim == other.dim and self.error == other.error
        return same and self.parts == other.parts

    def with_error(self, why: str) -> ActivationSite:
        """The same site, marked unmeasurable (a reason already given is kept)."""
        return ActivationSite(self.nodes, self.dim, self.order, self.name, self.error or why, self.parts)


def _sums(value: Tensor, dim: int | None, order: Tensor | None) -> tuple[Tensor, int]:
    t = value.detach().abs()
    if dim is None:
        return t.sum(dtype=torch.float32).reshape(1), t.numel()
    dim = dim % t.dim()
    # Reduce in place of the layout: moving the neuron dim last would copy the whole tensor first.
    dims = [d for d in range(t.dim()) if d != dim]
    sums = t.sum(dim=dims, dtype=torch.float32) if dims else t.float()
    if order is not None:
        sums = sums.index_select(0, order)
    return sums, t.numel() // t.shape[dim]


@dataclass
class NeuronLayer:
    """One ``Linear``/``Conv`` layer, its neurons and everything a reset must touch.

    Attributes:
        name: Qualified module name.
        module: The layer.
        size: Number of neurons (``out_features`` or ``out_channels``).
        consumers: Weights that read this layer's output, with the column mapping.
        norms: Per-feature norm modules whose feature ``j`` is this layer's neuron ``j``.
        residual_readers: Readers of this layer's output summed (or multiplied) with another traced value, as
            from a residual stream: those outgoing columns are shared with other neurons.
        unmapped_readers: ``(reader, op)`` pairs where the output reaches a weight through an op the tracer
            cannot map to columns, or is read by an op whose weights it cannot map (attention, a GRU).
        activation: Where ReDo's value is (see :class:`ActivationSite`); ``None`` until the layer has run.
        called: Whether a traced pass ran the layer.
    """

    name: str
    module: nn.Module
    size: int
    consumers: list[Consumer] = field(default_factory=list)
    norms: list[tuple[str, nn.Module]] = field(default_factory=list)
    residual_readers: set[str] = field(default_factory=set)
    unmapped_readers: set[tuple[str, str]] = field(default_factory=set)
    activation: ActivationSite | None = None
    called: bool = False

    @property
    def activation_name(self) -> str:
        """The ops ReDo's value applies to the layer's output (``"identity"`` if none)."""
        return self.activation.name if self.activation is not None else "identity"

    @property
    def writes_residual(self) -> bool:
        """The output reaches a reader only mixed with other neurons' outputs (a residual stream, a gate)."""
        return bool(self.residual_readers)

    @property
    def is_output(self) -> bool:
        """No traced weight reads this layer: it is a network output (head)."""
        return not self.consumers and not self.residual_readers and not self.unmapped_readers

    def merge(self, other: NeuronLayer) -> None:
        """Add what another trace of the same layer saw (readers that only run in some batches)."""
        for consumer in other.consumers:
            mine = next((c for c in self.consumers if c.name == consumer.name), None)
            if mine is None:
                self.consumers.append(consumer)
            elif not (torch.equal(mine.columns.cpu(), consumer.columns.cpu())) or not torch.equal(
                mine.neurons.cpu(), consumer.neurons.cpu()
            ):
                self.unmapped_readers.add((consumer.name, "reads different columns in different batches"))
        self.norms += [n for n in other.norms if all(n[0] != m[0] for m in self.norms)]
        self.residual_readers |= other.residual_readers
        self.unmapped_readers |= other.unmapped_readers
        if self.activation is None:
            self.activation = other.activation
        elif other.activation is not None and not self.activation.same_path(other.activation):
            self.activation = self.activation.with_error("its activation differs between batches")
        self.called = self.called or other.called
