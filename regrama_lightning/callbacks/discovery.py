"""Which layers a callback scores: the candidates, the optimizer of each, and what the traces learned.

The first training batch is traced (see :class:`~regrama_lightning.tracing.tracer.TopologyTracer`); while selected
layers have not run, the next few batches are traced too (a delayed actor, a second optimizer's network), and
after that a cheap forward pre-hook on each such layer asks for a trace as soon as it runs (LayerDrop,
routing). A layer that runs too rarely to be traced is reported and left unscored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle

from regrama_lightning.tracing.layers import NeuronLayer
from regrama_lightning.tracing.selection import explicit_consumers, neuron_layers, output_hooks, select_layers
from regrama_lightning.tracing.tracer import TopologyTracer

_MAX_RETRACES = 8  # batches traced after a new layer first ran, before giving up on tracing it
_EAGER_TRACES = 4  # batches traced in a row while selected layers have not run yet


class LayerDiscovery:
    """The selected layers of a model, their optimizers, and the traced structure of those that ran.

    Args:
        owner: The callback's class name, for messages.
        consumers: Readers given by hand, ``{layer: [reader, ...]}``.
        include_output_layers: Also score layers no weight reads.
        residual: Policy for residual-stream writers (``"exclude"`` leaves them unscored).

    Attributes:
        candidates: Selected trainable layers, by name.
        owner: Per candidate, the index of the optimizer that steps it.
        layers: Traced candidates that ran, by name.
        traced: Every neuron layer as all traces so far saw it (candidates or not: readers are found there).
        pending: Candidates not traced yet.
        scored: Candidates that are scored, in model order.
    """

    def __init__(
        self, owner: str, consumers: Mapping[str, list[str]], include_output_layers: bool, residual: str
    ) -> None:
        self.label = owner
        self.consumers = consumers
        self.include_output_layers = include_output_layers
        self.residual = residual
        self.candidates: dict[str, nn.Module] = {}
        self.owner: dict[str, int] = {}
        self.layers: dict[str, NeuronLayer] = {}
        self.traced: dict[str, NeuronLayer] = {}
        self.pending: set[str] = set()
        self.scored: list[str] = []
        self.tracer: TopologyTracer | None = None
        self._model: nn.Module | None = None
        self._ran: set[str] = set()  # pending layers that have run: batches are traced until they are seen
        self._ran_now: set[str] = set()  # layers that ran in the batch being traced
        self._traces = 0  # traces since a pending layer first ran
        self._eager = 0  # traces in a row while layers are pending
        self._watchers: list[RemovableHandle] = []
        self._warned_unrun = False

    # -- set-up -----------------------------------------------------------------------------------------
    def select(self, model: nn.Module, include: Sequence[str] | None, exclude: Sequence[str] | None) -> None:
        """Choose the candidate layers at ``setup``.

        Raises:
            ValueError: If the model has no neuron layer, a pattern or ``consumers`` key names none, a selected
                layer is parametrized, or no trainable layer is left.
        """
        layers = neuron_layers(model)
        if not layers:
            raise ValueError(
                f"{type(model).__name__} has no Linear or Conv1d/2d/3d layer, so there are no neurons to "
                f"score: {self.label} needs at least one."
            )
        for name in self.consumers:
            if name not in layers:
                raise ValueError(f"`consumers` key {name!r} is not a Linear/Conv layer; choose among {sorted(layers)}.")
        selected = select_layers(layers, include, exclude)
        parametrized = [n for n, m in selected.items() if parametrize.is_parametrized(m)]
        if parametrized:
            raise ValueError(
                f"Layers {parametrized} are parametrized (weight_norm, spectral_norm, ...): their weight is computed, "
                "so its rows cannot be re-drawn in place. Leave them out with `exclude=[...]`."
            )
        self.candidates = {n: m for n, m in selected.items() if m.weight.requires_grad}
        if not self.candidates:
            raise ValueError(
                f"No trainable Linear/Conv layer is left after `include`/`exclude` (include={include}, "
                f"exclude={exclude}); loosen the patterns."
            )

    def assign(self, optimizers: Sequence[Optimizer]) -> dict[str, int]:
        """Match each candidate to the one optimizer that steps it (by parameter identity), at ``on_fit_start``.

        Raises:
            ValueError: If a layer is stepped by several optimizers, or no candidate by any.
        """
        param_owner: dict[int, list[int]] = {}
        for i, optimizer in enumerate(optimizers):
            for group in optimizer.param_groups:
                for p in group["params"]:
                    param_owner.setdefault(id(p), []).append(i)
        self.owner = {}
        for name, module in list(self.candidates.items()):
            owners = sorted(set(param_owner.get(id(module.weight), [])))
            if len(owners) > 1:
                raise ValueError(
                    f"Layer {name!r} is stepped by optimizers {owners}; a layer's score and reset period need a "
                    "single owner. Give each parameter to one optimizer or exclude the layer."
                )
            if not owners:
                rank_zero_warn(f"{self.label}: layer {name!r} is in no optimizer; it is not scored.")
                del self.candidates[name]
                continue
            self.owner[name] = owners[0]
        if not self.candidates:
            raise ValueError("No selected Linear/Conv layer is stepped by an optimizer, so there is nothing to score.")
        return self.owner

    def start_fit(self, model: nn.Module) -> None:
        """Forget earlier traces: every candidate is traced again in this fit (a resumed one too)."""
        self._model = model
        self.pending = set(self.candidates)
        self.layers, self.scored, self.traced = {}, [], {}
        self._ran, self._ran_now, self._traces, self._eager = set(), set(), 0, 0

    def measured(self, optimizer: int) -> list[str]:
        """The layers of one optimizer to measure: scored ones and those not traced yet."""
        return [n for n in self.candidates if self.owner[n] == optimizer and (n in self.pending or n in self.scored)]

    # -- tracing ----------------------------------------------------------------------------------------
    @property
    def wants_trace(self) -> bool:
        """Whether the next batch is traced."""
        if self.tracer is not None:
            return False
        return not self.traced or bool(self._ran) or (bool(self.pending) and self._eager < _EAGER_TRACES)

    def start_trace(self, on_activation: Callable[[str, Tensor, Tensor, int], None]) -> None:
        """Enter the tracer for this batch."""
        self.tracer = TopologyTracer(self._model, on_activation=on_activation)
        self.tracer.__enter__()
        self._watch_unrun()  # to see a layer that runs but not through the ops the tracer knows
        self._ran_now = set()
        self._traces += 1
        self._eager += 1

    def finish_trace(self) -> tuple[list[str], list[str]]:
        """Merge what the trace saw; returns the layers newly scored and those traced but not scored."""
        self.tracer.__exit__(None, None, None)
        seen = self.tracer.topology()
        self.tracer = None
        for name, layer in seen.items():
            if name in self.traced:
                self.traced[name].merge(layer)
            else:
                self.traced[name] = layer
        missed = sorted(n for n in self._ran_now if not seen[n].called)
        if missed:
            raise ValueError(
                f"{self.label}: layers {missed} ran, but not through F.linear/F.conv with their own weight, "
                "so the tracer cannot see their outputs (a custom forward?). Leave them out with `exclude=[...]`."
            )
        done = [n for n in self.candidates if n in self.pending and self.traced[n].called]
        if done:
            self._eager = 0
        self.pending.difference_update(done)
        self._ran.difference_update(done)
        if self._ran and self._traces > _MAX_RETRACES:
            rank_zero_warn(
                f"{self.label}: layers {sorted(self._ran)} ran, but in none of the {_MAX_RETRACES} batches "
                "traced since; they run too rarely to be traced and are not scored."
            )
            self.pending.difference_update(self._ran)
            self._ran = set()
        if not self._ran:
            self._traces = 0
        self._watch_unrun(between_batches=True)
        self.layers = {n: layer for n, layer in self.traced.items() if layer.called and n in self.candidates}
        self._apply_explicit_consumers()
        for layer in self.layers.values():
            for consumer in layer.consumers:  # once, so that resets copy nothing to the device
                device = consumer.weight.device
                consumer.columns, consumer.neurons = consumer.columns.to(device), consumer.neurons.to(device)
        eligible = {n for n, layer in self.layers.items() if self._eligible(layer)}
        new = [n for n in self.candidates if n in eligible and n not in self.scored]
        self.scored = [n for n in self.candidates if n in eligible]
        if not self.pending and not self.scored:
            raise ValueError(
                f"{self.label} found no eligible layer: every selected layer is an output layer, unused "
                "or excluded. Pass include_output_layers=True, or loosen `include`/`exclude`."
            )
        return new, [n for n in done if n not in eligible]

    def _eligible(self, layer: NeuronLayer) -> bool:
        if layer.is_output and not self.include_output_layers:
            return False
        return not (self.residual == "exclude" and layer.writes_residual)

    def resettable(self, names: Sequence[str]) -> list[str]:
        """Of these scored layers, those a reset acts on (not residual-stream writers under "measure")."""
        return [n for n in names if not (self.residual == "measure" and self.layers[n].writes_residual)]

    def report(self, new: Sequence[str], optimizers: Sequence[Optimizer], zeroes_readers: bool) -> None:
        """Say which layers joined; warn when their resets would zero weights of another optimizer or frozen ones."""
        if new:
            rank_zero_info(self._joined(new))
        if not zeroes_readers:
            return
        foreign = {}
        for name in new:
            own = {id(p) for g in optimizers[self.owner[name]].param_groups for p in g["params"]}
            readers = sorted(
                {c.name for c in self.layers[name].consumers if id(c.weight) not in own or not c.weight.requires_grad}
            )
            if readers:
                foreign[name] = readers
        if foreign:
            rank_zero_warn(
                f"{self.label}: layers are read by weights of another optimizer or frozen weights, whose "
                f"columns their resets zero too: {foreign}. If those are another network's inputs (a TD3 critic's "
                "action input), leave the layers out with `exclude=[...]`."
            )

    def _joined(self, new: Sequence[str]) -> str:
        """``ReGraMa measures 2 layers (128 neurons): net.0, net.2``; later layers as layers that first ran."""
        size = f"{len(new)} layer{'s' if len(new) > 1 else ''} ({sum(self.layers[n].size for n in new)} neurons)"
        names = ", ".join(new[:8]) + (f" and {len(new) - 8} more" if len(new) > 8 else "")
        if len(new) == len(self.scored):
            text = f"{self.label} measures {size}: {names}"
        else:
            text = f"{self.label} now also measures {size} that ran for the first time: {names}"
        residual = [n for n in new if self.layers[n].writes_residual]
        if residual:
            text += f"; residual-stream writers (residual={self.residual!r}): {', '.join(residual)}"
        if self.pending:
            text += f"; not run yet, measured once they run: {', '.join(sorted(self.pending))}"
        return text

    def _apply_explicit_consumers(self) -> None:
        modules = {n: layer.module for n, layer in self.traced.items()}
        for name, readers in self.consumers.items():
            if name in self.layers:
                layer = self.layers[name]
                layer.consumers = explicit_consumers(layer, readers, modules)
                layer.unmapped_readers = set()

    def _watch_unrun(self, between_batches: bool = False) -> None:
        """Forward pre-hooks on layers not traced yet: once one runs, batches are traced until it is seen.

        During a trace, and between batches only once batches are no longer traced in a row: a hook on a module
        of a compiled model changes its guards.
        """
        for handle in self._watchers:
            handle.remove()
        self._watchers = []
        unrun = sorted(self.pending)
        if between_batches and (not unrun or self._eager < _EAGER_TRACES):
            return
        hooks = output_hooks(self._model) if unrun else {}
        for name in unrun:
            module = hooks.get(name, (self.candidates[name], None))[0]
            self._watchers.append(module.register_forward_pre_hook(partial(self._layer_ran, name)))
        if unrun and between_batches and not self._warned_unrun:
            rank_zero_info(f"{self.label}: layers {unrun} did not run yet; they are traced when they do.")
            self._warned_unrun = True

    @torch.compiler.disable
    def _layer_ran(self, name: str, module: nn.Module, args: Any) -> None:
        self._ran.add(name)
        self._ran_now.add(name)

    def close(self) -> None:
        """Leave the tracer if training stopped inside a batch; remove the watchers."""
        if self.tracer is not None:
            self.tracer.__exit__(None, None, None)
            self.tracer = None
        for handle in self._watchers:
            handle.remove()
        self._watchers = []


def unwrap(optimizer: Any) -> Any:
    """The torch optimizer inside Lightning's wrapper."""
    return optimizer.optimizer if isinstance(optimizer, LightningOptimizer) else optimizer
