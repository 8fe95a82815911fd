"""ReDo's value of one layer call: the ops followed from the layer's output, and where its neurons are in it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from regrama_lightning.tracing.layers import ID_DTYPE, NO_NEURON, ActivationSite


@dataclass
class LayerCall:
    """One call of a layer and the values still derived from it alone (ReDo's candidates).

    Node 0 is the layer's raw output; each later node is an op applied to earlier nodes (and to constants).
    """

    layer: str
    output: Tensor
    specs: list[tuple[str, tuple[int, ...]]]
    values: list[Tensor]
    value_op: list[bool]
    post_of: list[int]  # per node: its latest value-changing ancestor (itself if it changes values)
    done: bool = False

    @classmethod
    def start(cls, layer: str, output: Tensor) -> LayerCall:
        """A call whose only node is the layer's raw output."""
        return cls(layer, output, [("", ())], [output], [False], [0])

    def add(self, op: str, parents: tuple[int, ...], changes: bool, value: Tensor) -> int:
        """Append a node computed by ``op`` from ``parents``; returns its index."""
        index = len(self.specs)
        self.specs.append((op, parents))
        self.values.append(value)
        self.value_op.append(changes)
        single = len(set(parents)) == 1
        self.post_of.append(index if changes or not single else self.post_of[parents[0]])
        return index

    def site(self, post: int, ids: Tensor, start: int, size: int) -> ActivationSite:
        """The site measuring node ``post``, whose neuron ids are ``ids`` (the layer's ids start at ``start``)."""
        needed, stack = set(), [post]
        while stack:
            node = stack.pop()
            if node not in needed:
                needed.add(node)
                stack.extend(self.specs[node][1])
        order = sorted(needed)
        remap = {old: new for new, old in enumerate(order)}
        nodes = tuple((self.specs[i][0], tuple(remap[p] for p in self.specs[i][1])) for i in order[1:])
        name = "+".join(self.specs[i][0] for i in order[1:] if self.value_op[i]) or "identity"
        dim, positions, error = neuron_axis(ids, start, size)
        if error is not None:
            error = f"after {name} ({' -> '.join(op for op, _ in nodes) or 'its output'}), {error}"
        return ActivationSite(nodes, dim, positions, name, error)


def neuron_axis(ids: Tensor, start: int, size: int) -> tuple[int | None, Tensor | None, str | None]:
    """The dim of a value that holds each of a layer's neurons once (constant along the others), and their order."""
    rel = torch.where((ids >= start) & (ids < start + size), ids - start, torch.full_like(ids, NO_NEURON))
    if bool(((ids != NO_NEURON) & (rel == NO_NEURON)).any()):
        return None, None, "the value mixes in other neurons"
    if size == 1 and bool((rel == 0).all()):
        return None, None, None
    for d in range(ids.dim()):
        index = [0] * ids.dim()
        index[d] = slice(None)
        line = rel[tuple(index)]
        shape = [1] * ids.dim()
        shape[d] = -1
        if not torch.equal(rel, line.view(shape).expand_as(rel)):
            continue
        present = line >= 0
        neurons = line[present]
        if neurons.numel() != size or not torch.equal(neurons.sort().values, torch.arange(size, dtype=ID_DTYPE)):
            continue
        order = torch.empty(size, dtype=torch.long)
        order[neurons.long()] = torch.nonzero(present).flatten()
        in_order = line.numel() == size and torch.equal(order, torch.arange(size))
        return d - ids.dim(), None if in_order else order, None
    return None, None, "no dimension holds each neuron once (e.g. flattened with its positions)"
