"""Gathering per-neuron magnitudes over one optimizer step's window of backward passes.

A module's score must come only from the losses its own optimizer steps on. Gradients accumulate in ``.grad``
from every backward since that optimizer's last ``zero_grad``; a :class:`GradientWindow` mirrors that window
exactly: a window starts when a backward begins while the layer's ``weight.grad`` was cleared since the last
backward (``zero_grad`` set it to ``None``, or zeroed it in place: the tensor's version counter moved) and ends
when its optimizer steps. A SAC actor loss that backpropagates through the critic after the critic's step
therefore lands in a window that the critic's next ``zero_grad`` throws away, as it does the gradients.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial

import torch
from torch import Tensor, nn

from regrama_lightning.scores import output_grad_magnitude_sum


class GradientWindow:
    """Per-neuron magnitude sums of some layers, gathered over the window of their weights' gradients.

    Args:
        layers: The layers, by name (their ``weight.grad`` delimits the windows).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
        >>> window = GradientWindow({"0": net[0]})
        >>> window.start(["0"])
        >>> out = net[0](torch.randn(16, 4))
        >>> window.add_output_gradients("0", out, channel_dim=-1)
        >>> net[2](out.relu()).sum().backward()
        >>> window.end_backward(["0"])
        >>> sums, counts = window.collect(["0"])
        >>> sums["0"].shape, counts["0"]
        (torch.Size([8]), 16)
    """

    def __init__(self, layers: Mapping[str, nn.Module]) -> None:
        self._weights = {n: m.weight for n, m in layers.items()}
        self._sums: dict[str, Tensor] = {}
        self._counts: dict[str, int] = {}
        self._grads: dict[str, tuple[int, int]] = {}  # per layer: (id, version) of weight.grad after a backward

    def add_output_gradients(self, name: str, output: Tensor, channel_dim: int) -> None:
        """Add ``|dL/dh|`` of ``output`` (a layer output) when a backward reaches it: GraMa's Eq. 2."""
        if output.requires_grad:
            output.register_hook(partial(self._grad_hook, name, channel_dim))

    def add_on_backward(self, name: str, output: Tensor, total: Tensor, count: int) -> None:
        """Add precomputed sums (ReDo's activations of one call) once a backward reaches ``output``."""
        if output.requires_grad:
            output.register_hook(partial(self._added_on_backward, name, total, count))

    @torch.compiler.disable
    def _grad_hook(self, name: str, channel_dim: int, grad: Tensor) -> None:
        self._add(name, *output_grad_magnitude_sum(grad, channel_dim))

    @torch.compiler.disable
    def _added_on_backward(self, name: str, total: Tensor, count: int, grad: Tensor) -> None:
        self._add(name, total, count)

    def _add(self, name: str, total: Tensor, count: int) -> None:
        if name in self._sums:
            self._sums[name] = self._sums[name] + total
            self._counts[name] += count
        else:
            self._sums[name] = total
            self._counts[name] = count

    def start(self, names: Iterable[str]) -> None:
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
        """The window's sums and counts for these layers, ending their window; layers with nothing are left out."""
        sums: dict[str, Tensor] = {}
        counts: dict[str, int] = {}
        for name in names:
            if name in self._sums:
                sums[name], counts[name] = self._sums.pop(name), self._counts.pop(name)
        return sums, counts

    def clear(self) -> None:
        """Drop everything gathered."""
        self._sums.clear()
        self._counts.clear()


def channel_dim(module: nn.Module, output: Tensor) -> int:
    """The neuron dimension of a Linear/Conv layer's output."""
    if isinstance(module, nn.Linear):
        return -1
    return output.dim() - (module.weight.dim() - 2) - 1
