"""What is done to the neurons a score selects; an action is one class.

A method that keeps the signal,
the selection and the schedule of :class:`~regrama_lightning.callbacks.NeuronReset` and changes only what
happens to the selected neurons subclasses :class:`NeuronAction`.

The building blocks (:func:`~regrama_lightning.reset.redraw_incoming`, :func:`~regrama_lightning.reset.zero_outgoing`,
:func:`~regrama_lightning.reset.restore_norms`, :func:`~regrama_lightning.reset.clear_optimizer_state`,
:func:`~regrama_lightning.reset.outgoing_mask`) are plain functions any action can combine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer
from typing_extensions import override

from regrama_lightning.reset import (
    InitFn,
    Touched,
    clear_optimizer_state,
    redraw_incoming,
    restore_norms,
    zero_outgoing,
)
from regrama_lightning.tracing.layers import NeuronLayer


def derive_seed(seed: int, optimizer: int, layer: str, step: int) -> int:
    """A re-draw seed distinct per optimizer, layer and step, the same in every process (no ``hash()`` salt).

    Example:
        >>> derive_seed(0, 0, "q1.0", 5) != derive_seed(0, 0, "q2.0", 5)
        True
    """
    digest = hashlib.blake2b(f"{seed}/{optimizer}/{layer}/{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (2**63)


@dataclass
class ActionContext:
    """Everything an action may use besides the mask, for one layer at one reset.

    Attributes:
        layer: The traced layer: its module, readers (``consumers``), norms and activation site.
        scores: The layer's normalised scores at this reset (NaN where the layer had no data).
        seed: Seed for anything random; identical on every DDP rank, distinct per optimizer, layer and step.
        optimizers: The Trainer's optimizers (for clearing state of touched entries).
        optimizer_index: Index of the optimizer that steps the layer.
        step: That optimizer's step count.
    """

    layer: NeuronLayer
    scores: Tensor
    seed: int
    optimizers: Sequence[Optimizer]
    optimizer_index: int
    step: int


class NeuronAction:
    """What a neuron-level method does to the neurons it selects. Subclass it and implement :meth:`apply`.

    Attributes:
        touches_outgoing: Whether :meth:`apply` changes the readers' weights; layers are then refused unless
            every reader is mapped (a measure-only layer or an action that keeps outgoing weights never is).
    """

    touches_outgoing: bool = True

    def apply(self, mask: Tensor, context: ActionContext) -> Tensor:
        """Act on the masked neurons of ``context.layer`` in place, under ``torch.no_grad``, with no host sync.

        Returns:
            The number of neurons acted on, as a 0-d tensor (logged as ``reset/neurons``).
        """
        raise NotImplementedError

    def after_step(self, optimizer_index: int) -> None:
        """Called after every step of each optimizer that owns a scored layer (e.g. to keep pruned weights at 0)."""

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs (goes into the callback's checkpoint state)."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""

    def describe(self) -> dict[str, Any]:
        """The settings that change what the action does (part of the callback's default checkpoint key)."""
        return {}


class Reinitialize(NeuronAction):
    """ReGraMa's and ReDo's reset: fresh incoming weights, zero outgoing weights, restored norms and optimizer state.

    Args:
        init_fn: Re-initialises a module in place; defaults to the layer's ``reset_parameters``.
        zero_outgoing: Zero the reset neurons' outgoing weights (the paper, ReDo); ``False`` keeps them.
        reset_optimizer_state: Zero the optimizer state of the touched entries.

    Example:
        >>> from torch import nn
        >>> from regrama_lightning import trace_topology
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> layer = trace_topology(net, lambda: net(torch.randn(3, 4)))["0"]
        >>> mask = torch.zeros(8, dtype=torch.bool)
        >>> mask[3] = True
        >>> context = ActionContext(layer, torch.ones(8), seed=1, optimizers=[], optimizer_index=0, step=1)
        >>> int(Reinitialize().apply(mask, context)), bool((net[2].weight[:, 3] == 0).all())
        (1, True)
    """

    def __init__(
        self, init_fn: InitFn | None = None, zero_outgoing: bool = True, reset_optimizer_state: bool = True
    ) -> None:
        self.init_fn = init_fn
        self.zero_outgoing = zero_outgoing
        self.reset_optimizer_state = reset_optimizer_state

    @override
    @property
    def touches_outgoing(self) -> bool:  # type: ignore[override]
        return self.zero_outgoing

    @override
    @torch.no_grad()
    def apply(self, mask: Tensor, context: ActionContext) -> Tensor:
        layer = context.layer
        mask = mask.to(layer.module.weight.device)
        touched: Touched = redraw_incoming(layer, mask, context.seed, self.init_fn)
        touched += restore_norms(layer, mask, context.seed)
        if self.zero_outgoing:
            touched += zero_outgoing(layer.consumers, mask)
        if self.reset_optimizer_state:
            clear_optimizer_state(context.optimizers, touched)
        return mask.sum()
