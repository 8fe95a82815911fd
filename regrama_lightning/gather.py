"""Gathering per-neuron magnitudes over one optimizer step's window of backward passes.

A module's score must come only from the losses its own optimizer steps on. Gradients accumulate in ``.grad``
from every backward since that optimizer's last ``zero_grad``; the gatherers mirror that window exactly: a
window starts when a backward begins while the layer's ``weight.grad`` was cleared since the last backward
(``zero_grad`` set it to ``None``, or zeroed it in place: the tensor's version counter moved) and ends when its
optimizer steps. A SAC actor loss that backpropagates through the critic after the critic's step therefore
lands in a window that the critic's next ``zero_grad`` throws away, as it does the gradients.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from typing import Literal

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from regrama_lightning.scores import output_grad_magnitude_sum, weight_grad_magnitude_sums

Signal = Literal["weight", "output", "activation"]


class MagnitudeGatherer:
    """Collects raw per-neuron magnitude sums for some layers.

    Args:
        layers: The layers, by name.
        signal: ``"weight"`` reads ``|W.grad|`` at collection time (nothing to hook); ``"output"`` hooks the
            gradient of each layer output (GraMa Eq. 2); ``"activation"`` records the activation magnitudes
            given to :meth:`observe_activation` (by an :class:`~regrama_lightning.probe.ActivationProbe`) for
            outputs that a backward pass then reaches (ReDo Eq. 1).
        outputs: Per layer, the module whose forward returns the layer's output and the index into its return
            value (see :func:`~regrama_lightning.topology.output_hooks`); default: the layer itself.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
        >>> gatherer = MagnitudeGatherer({"0": net[0]}, "output")
        >>> gatherer.attach(["0"])
        >>> gatherer.start_window(["0"])
        >>> net(torch.randn(16, 4)).sum().backward()
        >>> gatherer.end_backward(["0"])
        >>> sums, counts = gatherer.collect(["0"])
        >>> gatherer.detach()
        >>> sums["0"].shape, counts["0"]
        (torch.Size([8]), 16)
    """

    def __init__(
        self,
        layers: Mapping[str, nn.Module],
        signal: Signal,
        outputs: Mapping[str, tuple[nn.Module, int | None]] | None = None,
    ) -> None:
        if signal not in ("weight", "output", "activation"):
            raise ValueError(f"`signal` must be 'weight', 'output' or 'activation', got {signal!r}.")
        self.layers = dict(layers)
        self.signal = signal
        self.outputs = {n: (outputs or {}).get(n, (m, None)) for n, m in self.layers.items()}
        self._sums: dict[str, Tensor] = {}
        self._counts: dict[str, int] = {}
        self._handles: dict[str, RemovableHandle] = {}
        self._grads: dict[str, tuple[int, int]] = {}  # per layer: (id, version) of weight.grad after a backward
        # Looked up once: module attribute access and shape arithmetic cost more than the read itself.
        self._weights = {n: m.weight for n, m in self.layers.items()}
        self._fan_in = {n: m.weight[0].numel() for n, m in self.layers.items()}

    # -- hooks ----------------------------------------------------------------------------------------
    def attach(self, names: Iterable[str]) -> None:
        """Hook the outputs of these layers for the ``"output"`` signal (no-op otherwise, and if hooked)."""
        if self.signal != "output":
            return
        for name in names:
            if name not in self._handles:
                module, index = self.outputs[name]
                self._handles[name] = module.register_forward_hook(partial(self._forward_hook, name, index))

    def detach(self, names: Iterable[str] | None = None) -> None:
        """Remove the forward hooks of these layers (all by default)."""
        for name in list(self._handles) if names is None else names:
            handle = self._handles.pop(name, None)
            if handle is not None:
                handle.remove()

    def _forward_hook(self, name: str, index: int | None, module: nn.Module, args: tuple, output: Tensor) -> None:
        self.observe_output(name, output if index is None else output[index])

    def observe_output(self, name: str, output: Tensor) -> None:
        """Record a layer output seen in the forward pass (hooked or traced)."""
        if self.signal == "output" and output.requires_grad:
            output.register_hook(partial(self._grad_hook, name, _channel_dim(self.layers[name], output)))

    def observe_activation(self, name: str, output: Tensor, total: Tensor, count: int) -> None:
        """Record per-neuron activation magnitude sums of one call; they count once a backward reaches ``output``."""
        if self.signal != "activation" or not output.requires_grad or name not in self.layers:
            return
        output.register_hook(partial(self._add_on_backward, name, total, count))

    def _grad_hook(self, name: str, channel_dim: int, grad: Tensor) -> None:
        total, count = output_grad_magnitude_sum(grad, channel_dim)
        self._add(name, total, count)

    def _add_on_backward(self, name: str, total: Tensor, count: int, grad: Tensor) -> None:
        self._add(name, total, count)

    def _add(self, name: str, total: Tensor, count: int) -> None:
        if name in self._sums:
            self._sums[name] = self._sums[name] + total
            self._counts[name] += count
        else:
            self._sums[name] = total
            self._counts[name] = count

    # -- windows --------------------------------------------------------------------------------------
    def start_window(self, names: Iterable[str]) -> None:
        """Call before each backward: layers whose gradients were cleared since the last backward start afresh.

        Cleared means ``zero_grad`` set ``weight.grad`` to ``None`` or to another tensor, or zeroed it in place
        (``set_to_none=False``), which moves the tensor's version counter; reading it costs no host sync.
        """
        for name in names:
            grad = self._weights[name].grad
            if grad is None or self._grads.get(name) != (id(grad), grad._version):
                self._sums.pop(name, None)
                self._counts.pop(name, None)

    def end_backward(self, names: Iterable[str]) -> None:
        """Call after each backward: remember the gradients it left, to see a ``zero_grad`` before the next one."""
        for name in names:
            grad = self._weights[name].grad
            if grad is not None:
                self._grads[name] = (id(grad), grad._version)

    def collect(self, names: Iterable[str]) -> tuple[dict[str, Tensor], dict[str, int]]:
        """The window's magnitude sums and counts for these layers, ending their window.

        Layers with nothing gathered (not reached by any backward) are left out.
        """
        if self.signal == "weight":
            return self._collect_weight_grads(names)
        sums: dict[str, Tensor] = {}
        counts: dict[str, int] = {}
        for name in names:
            if name in self._sums:
                sums[name], counts[name] = self._sums.pop(name), self._counts.pop(name)
        return sums, counts

    def _collect_weight_grads(self, names: Iterable[str]) -> tuple[dict[str, Tensor], dict[str, int]]:
        grads = {n: g for n in names if (g := self._weights[n].grad) is not None}
        sums = dict(zip(grads, weight_grad_magnitude_sums(list(grads.values())), strict=True))
        return sums, {n: self._fan_in[n] for n in grads}

    def clear(self) -> None:
        """Drop everything gathered."""
        self._sums.clear()
        self._counts.clear()


def _channel_dim(module: nn.Module, output: Tensor) -> int:
    if isinstance(module, nn.Linear):
        return -1
    return output.dim() - (module.weight.dim() - 2) - 1
