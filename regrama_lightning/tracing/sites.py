"""ReDo's value of a layer: the ops followed from each call's output, and where its neurons are in the result.

A call's value is followed op by op while it derives from that call and the model's own tensors alone. It ends
where a weight reads it or it meets other data; that node is measured for the neurons it holds. A layer's
output split into pieces (``chunk``, ``split``, slices) can end on several nodes, one per piece.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from regrama_lightning.tracing.layers import ID_DTYPE, NO_NEURON, ActivationSite, NeuronLayer, SitePart
from regrama_lightning.tracing.ops import changes_values, op_label

ActivationCallback = Callable[[str, Tensor, Tensor, int], None]


@dataclass
class LayerCall:
    """One call of a layer and the values still derived from it alone (ReDo's candidates).

    Node 0 is the layer's raw output; each later node is an op applied to earlier nodes (and to constants).
    """

    layer: str
    output: Tensor
    size: int
    specs: list[tuple[str, tuple[int, ...]]]
    values: list[Tensor]
    value_op: list[bool]
    post_of: list[int]  # per node: its latest value-changing ancestor (itself if it changes values)
    ends: list[tuple[int, int | None, Tensor | None, Tensor]] = field(default_factory=list)
    covered: Tensor | None = None
    error: str | None = None
    done: bool = False

    @classmethod
    def start(cls, layer: str, output: Tensor, size: int) -> LayerCall:
        """A call whose only node is the layer's raw output."""
        return cls(layer, output, size, [("", ())], [output], [False], [0])

    def add(self, op: str, parents: tuple[int, ...], changes: bool, value: Tensor) -> int:
        """Append a node computed by ``op`` from ``parents``; returns its index."""
        index = len(self.specs)
        self.specs.append((op, parents))
        self.values.append(value)
        self.value_op.append(changes)
        single = len(set(parents)) == 1
        self.post_of.append(index if changes or not single else self.post_of[parents[0]])
        return index

    def common_prefix(self, other: LayerCall) -> LayerCall:
        """A fresh call made of the nodes this call and ``other`` share, in order (none of its ends yet)."""
        k = next((i for i, (a, b) in enumerate(zip(self.specs, other.specs, strict=False)) if a != b), None)
        k = min(len(self.specs), len(other.specs)) if k is None else k
        return LayerCall(
            self.layer, self.output, self.size, self.specs[:k], self.values[:k], self.value_op[:k], self.post_of[:k]
        )

    def end_at(self, index: int, rel: Tensor) -> None:
        """Measure the neurons node ``index``'s value holds that no earlier end measures.

        Args:
            index: A node of the call; its latest value-changing ancestor is measured.
            rel: Per element of that value, the neuron it holds (``NO_NEURON`` for none).
        """
        post = self.post_of[index]
        dim, positions, neurons, error = neuron_axis(rel)
        if error is not None:
            self.error, self.done = self._failed(post, error), True
            return
        covered = torch.zeros(self.size, dtype=torch.bool) if self.covered is None else self.covered
        new = ~covered[neurons]
        if positions is None and not bool(new.all()):
            positions = torch.arange(neurons.numel())
        if bool(new.any()):
            kept = positions[new] if positions is not None else None
            self.ends.append((post, dim, kept, neurons[new]))
            covered = covered.clone()
            covered[neurons] = True
        self.covered = covered
        self.done = bool(covered.all())

    def site(self) -> ActivationSite:
        """The site of the ends found so far (``error`` set if they do not measure every neuron)."""
        nodes, remap, name = self._path([end[0] for end in self.ends])
        if self.error is not None or not self.done:
            return ActivationSite(nodes, None, None, name, self.error or "not every neuron reached a value")
        if len(self.ends) == 1:
            _, dim, positions, neurons = self.ends[0]
            by_neuron = None if positions is None else positions[torch.argsort(neurons)]
            return ActivationSite(nodes, dim, by_neuron, name)
        parts = tuple(
            SitePart(remap[post], dim, tuple(_positions(positions, neurons).tolist()), tuple(neurons.tolist()))
            for post, dim, positions, neurons in self.ends
        )
        return ActivationSite(nodes, None, None, name, parts=parts)

    def _path(self, posts: list[int]) -> tuple[tuple[tuple[str, tuple[int, ...]], ...], dict[int, int], str]:
        """The nodes needed to compute ``posts`` (renumbered), the renumbering, and their value-changing ops."""
        needed, stack = {0}, list(posts)
        while stack:
            node = stack.pop()
            if node not in needed:
                needed.add(node)
                stack.extend(self.specs[node][1])
        order = sorted(needed)
        remap = {old: new for new, old in enumerate(order)}
        nodes = tuple((self.specs[i][0], tuple(remap[p] for p in self.specs[i][1])) for i in order[1:])
        name = "+".join(dict.fromkeys(self.specs[i][0] for i in order[1:] if self.value_op[i])) or "identity"
        return nodes, remap, name

    def _failed(self, post: int, why: str) -> str:
        nodes, _, name = self._path([post])
        return f"after {name} ({' -> '.join(op for op, _ in nodes) or 'its output'}), {why}"


def _positions(positions: Tensor | None, neurons: Tensor) -> Tensor:
    return torch.arange(neurons.numel()) if positions is None else positions


def neuron_axis(rel: Tensor) -> tuple[int | None, Tensor | None, Tensor, str | None]:
    """The dim of a value that holds some of a layer's neurons once each (constant along the other dims).

    Args:
        rel: Per element, the index of the layer's neuron it holds, ``NO_NEURON`` if none; ``-2`` for an
            element of another layer's neuron.

    Returns:
        ``(dim, positions, neurons, error)``: ``dim`` negative, or ``None`` if the value holds one neuron
        everywhere; ``positions`` along ``dim`` of each of ``neurons`` (``None``: all, in order).
    """
    if bool((rel < NO_NEURON).any()):
        return None, None, rel.new_zeros(0), "the value mixes in other neurons"
    held = rel[rel >= 0].unique()
    if held.numel() == 0:  # e.g. an empty slice: nothing to measure here
        return None, None, held.long(), None
    if held.numel() == 1 and bool((rel == held[0]).all()):
        return None, None, held.long(), None
    for d in range(rel.dim()):
        index = [0] * rel.dim()
        index[d] = slice(None)
        line = rel[tuple(index)]
        shape = [1] * rel.dim()
        shape[d] = -1
        if not torch.equal(rel, line.view(shape).expand_as(rel)):
            continue
        present = line >= 0
        neurons = line[present].long()
        if neurons.numel() == 0 or neurons.unique().numel() != neurons.numel():
            continue
        positions = torch.nonzero(present).flatten()
        in_order = line.numel() == neurons.numel() and torch.equal(neurons, torch.arange(neurons.numel()))
        return d - rel.dim(), None if in_order else positions, neurons, None
    return None, None, rel.new_zeros(0), "no dimension holds each neuron once (e.g. flattened with its positions)"


class ActivationFollower:
    """Follows each layer call's value through the ops of a traced pass and records where it ends.

    Args:
        layers: The traced layers by name.
        offsets: First neuron id of each layer.
        ids: The tracer's map ``id(tensor) -> (tensor, neuron ids)``.
        is_constant: Whether a tensor is the model's own (a parameter, a buffer, a view or function of them).
        on_activation: Called as ``on_activation(name, output, sums, count)`` once a call's value is known.
    """

    def __init__(
        self,
        layers: Mapping[str, NeuronLayer],
        offsets: Mapping[str, int],
        ids: dict[int, tuple[Tensor, Tensor]],
        is_constant: Callable[[Tensor], bool],
        on_activation: ActivationCallback | None,
    ) -> None:
        self._layers = layers
        self._offsets = offsets
        self._ids = ids
        self._is_constant = is_constant
        self._on_activation = on_activation
        self._nodes: dict[int, tuple[LayerCall, int]] = {}  # id(tensor) -> (layer call, node index)
        self._calls: list[LayerCall] = []
        self._unread: set[str] = set()  # layers whose activation comes from a value no weight or op took
        self._defining: dict[str, LayerCall] = {}  # per layer, the call its activation comes from

    def start(self, layer: NeuronLayer, output: Tensor) -> None:
        """A new call of ``layer`` returned ``output``."""
        call = LayerCall.start(layer.name, output, layer.size)
        self._calls.append(call)
        self._nodes[id(output)] = (call, 0)

    def follows(self, t: Tensor) -> bool:
        """Whether ``t`` is a value of a call still being followed."""
        return id(t) in self._nodes

    def extend(self, name: str, args: tuple, kwargs: dict, flat: list[Tensor], mapped: list[Tensor], out: Any) -> None:
        """Follow an op's output if it still derives from one layer call and the model's own tensors alone.

        A value combined with data (``x - c * eps`` in a diffusion chain, an input added back) is no longer the
        neuron's activation: the call's value ends before it. Each tensor of a tuple output (``chunk``,
        ``split``) is a node of its own, ``"op[i]"``.
        """
        hits = [self._nodes.get(id(t)) for t in mapped]
        calls = {id(h[0]): h[0] for h in hits if h is not None}
        call = next(iter(calls.values())) if len(calls) == 1 else None
        outs = [out] if isinstance(out, Tensor) else list(out) if isinstance(out, tuple | list) else []
        pure = call is not None and not call.done and all(h is not None for h in hits) and bool(outs)
        pure = pure and all(isinstance(t, Tensor) and id(t) in self._ids for t in outs)
        pure = pure and all(id(t) in self._nodes or self._is_constant(t) or t.dim() == 0 for t in flat)
        if pure:
            start, size = self._offsets[call.layer], call.size
            for t in outs:
                ids = self._ids[id(t)][1]
                pure = pure and bool((((ids >= start) & (ids < start + size)) | (ids == NO_NEURON)).all())
        if not pure:
            self.finish_inputs(mapped)
            return
        parents = tuple(h[1] for h in hits)
        changes = changes_values(name)
        label = op_label(name, args, kwargs)
        for i, t in enumerate(outs):
            op = label if isinstance(out, Tensor) else f"{label}[{i}]"
            self._nodes[id(t)] = (call, call.add(op, parents, changes, t))

    def keep_before_write(self, t: Tensor) -> None:
        """An in-place op is about to overwrite a followed value: keep its values and ids as they are now."""
        call, index = self._nodes[id(t)]
        if call.done:
            return
        copy = t.detach().clone()
        call.values[index] = copy
        self._ids[id(copy)] = (copy, self._ids[id(t)][1])

    def finish_inputs(self, tensors: list[Tensor]) -> None:
        """Weights or a mixing op took these values: the calls they belong to end there (for their neurons)."""
        for t in tensors:
            hit = self._nodes.get(id(t))
            if hit is not None and self._end(*hit):
                self._record(hit[0], read=True)

    def finish_all(self) -> None:
        """End every call still followed (values returned, fed to the loss or looked at) at its latest nodes."""
        for call in self._calls:
            if self._close(call):
                self._record(call, read=False)
        self._nodes.clear()
        self._calls.clear()
        self._defining.clear()

    def _close(self, call: LayerCall) -> bool:
        """End a call at its latest nodes, for the neurons no earlier end measures; whether this completed it."""
        completed = False
        for index in range(len(call.specs) - 1, -1, -1):
            completed = completed or self._end(call, index)
        return completed

    def _end(self, call: LayerCall, index: int) -> bool:
        """End a call at node ``index`` for the neurons it holds; whether this completed the call."""
        if call.done:
            return False
        value = call.values[call.post_of[index]]
        ids = self._ids[id(value)][1]
        start = self._offsets[call.layer]
        inside = (ids >= start) & (ids < start + call.size)
        rel = torch.where(inside, ids - start, torch.where(ids == NO_NEURON, NO_NEURON, -2)).to(ID_DTYPE)
        call.end_at(index, rel)
        return call.done

    def _record(self, call: LayerCall, read: bool) -> None:
        site = call.site()
        name = call.layer
        layer = self._layers[name]
        # The first call of a layer defines its activation; a call whose value a weight or another op took
        # overrides one whose value was only returned (e.g. an evaluation call that uses half the outputs).
        if layer.activation is None or (read and name in self._unread):
            layer.activation, self._defining[name] = site, call
            (self._unread.discard if read else self._unread.add)(name)
        elif read and not layer.activation.same_path(site) and name in self._defining:
            # Two calls took different ops on (e.g. a policy's sample and its KL term): measure where they agree.
            common = self._defining[name].common_prefix(call)
            self._close(common)
            layer.activation, self._defining[name] = common.site(), common
        if self._on_activation is not None and site.error is None:
            values = [call.values[end[0]] for end in call.ends]
            self._on_activation(name, call.output, *site.reduce(*values))
