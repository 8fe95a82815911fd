"""``ReBorn``: dormant neurons take over part of over-active ones, keeping the network's function (Qin et al. 2024).

By the mean activation, normalised by its layer's mean (ReDo's score), a neuron is dormant at ``<= tau`` and
over-active at ``> beta``. Each dormant neuron takes a randomly chosen over-active neuron ``o`` (at most
``max_per_source`` dormant neurons per over-active one): its incoming weights and bias become ``d * `` those of
``o``, ``d ~ U(0.3, 0.8)``, so its output is ``d * h_o`` for a positively homogeneous activation (ReLU,
LeakyReLU); ``o``'s outgoing weights are split between ``o`` and its new neurons with shares ``alpha`` (a
softmax of normal draws), the new neurons' columns divided by ``d``. The readers then see
``sum alpha * w_out[:, o] * h_o = w_out[:, o] * h_o``: the function is unchanged where the dormant neurons were
silent. Layers whose readers do not read every neuron through the same number of columns are refused at the
first trace. A layer with its own per-feature norm (BatchNorm) gives the new neuron ``o``'s norm entries, its running
statistics scaled by ``d`` and ``d^2``: the norm undoes the scale (up to its ``eps``), so the new columns are not
divided by ``d``.
A LayerNorm across the features changes the other features' statistics: there the function is kept only
approximately.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from typing_extensions import override

from regrama_lightning.actions import ActionContext, NeuronAction
from regrama_lightning.callbacks.base import NeuronReset
from regrama_lightning.methods.arguments import refuse_unused
from regrama_lightning.methods.outgoing import column_rows
from regrama_lightning.metrics import DormantRatio
from regrama_lightning.reset import Touched, clear_optimizer_state, outgoing_mask
from regrama_lightning.signals import Activation, ActivitySignal
from regrama_lightning.tracing.layers import Consumer, NeuronLayer


@dataclass
class Transfer:
    """Which neuron each neuron copies from (itself if none), its incoming factor and outgoing share.

    Attributes:
        source: Per neuron, the over-active neuron it copies (its own index when untouched).
        reborn: The dormant neurons that took over part of an over-active one.
        scale: ``d`` of each reborn neuron (1 elsewhere).
        share: ``alpha`` of each neuron in its group (1 for untouched neurons).
    """

    source: Tensor
    reborn: Tensor
    scale: Tensor
    share: Tensor


def plan_transfer(
    dormant: Tensor,
    overactive: Tensor,
    seed: int,
    max_per_source: int = 5,
    low: float = 0.3,
    high: float = 0.8,
    dtype: torch.dtype = torch.float32,
) -> Transfer:
    """Pair dormant neurons with random over-active ones (at most ``max_per_source`` each), draw ``d`` and ``alpha``.

    No host sync: the pairing is a sort of random keys over ``max_per_source`` slots per over-active neuron.
    ``d`` and ``alpha`` are in ``dtype`` (the layer's), so that ``alpha / d * d`` is ``alpha`` to its precision.

    Example:
        >>> plan = plan_transfer(torch.tensor([True, False, False]), torch.tensor([False, False, True]), seed=0)
        >>> plan.source.tolist(), plan.reborn.tolist(), float(plan.share[0] + plan.share[2])
        ([2, 1, 2], [True, False, False], 1.0)
    """
    size, device = dormant.numel(), dormant.device
    generator = torch.Generator().manual_seed(seed)
    keys = torch.rand(size * max_per_source, generator=generator).to(device)
    keys = keys + (~overactive).repeat_interleave(max_per_source).float() * 2  # empty slots sort last
    owners = torch.arange(size, device=device).repeat_interleave(max_per_source)[keys.argsort()]
    slots = overactive.sum() * max_per_source
    rank = dormant.long().cumsum(0) - 1
    reborn = dormant & (rank < slots)
    own = torch.arange(size, device=device)
    source = torch.where(reborn, owners[rank.clamp(0, owners.numel() - 1)], own)
    scale = torch.rand(size, generator=generator, dtype=dtype).to(device) * (high - low) + low
    scale = torch.where(reborn, scale, torch.ones_like(scale))
    weight = torch.randn(size, generator=generator, dtype=dtype).to(device).exp()
    receives = torch.zeros(size, device=device).index_add_(0, source, reborn.float()) > 0
    members = reborn | receives
    zeros = torch.zeros(size, device=device, dtype=dtype)
    denominator = zeros.index_add_(0, source, torch.where(members, weight, 0.0))
    share = torch.where(members, weight / denominator.index_select(0, source).clamp_min(1e-30), 1.0)
    return Transfer(source, reborn, scale, share)


def splittable(consumer: Consumer, size: int) -> bool:
    """Whether a reader reads every neuron through the same number of columns (ReBorn can split its weights)."""
    counts = torch.bincount(consumer.neurons.cpu(), minlength=size)
    return bool((counts == counts.max()).all()) and int(counts.max()) > 0


def _column_sources(consumer: Consumer, source: Tensor) -> Tensor:
    """For each input column of the reader, the column that reads the same position of the source neuron."""
    columns, neurons = consumer.columns.to(source.device), consumer.neurons.to(source.device)
    order = (neurons * consumer.width + columns).argsort()
    table = columns[order].view(source.numel(), -1)  # neuron -> its columns, in order (see `splittable`)
    sources = torch.arange(consumer.width, device=source.device)
    sources[table.flatten()] = table.index_select(0, source).flatten()
    return sources


class ReBornActivation(Activation):
    """ReDo's activation signal, refusing at the first trace the layers whose outgoing weights cannot be split."""

    @override
    def check(self, layers: Mapping[str, NeuronLayer]) -> None:
        super().check(layers)
        bad = {
            n: [c.name for c in layer.consumers if not splittable(c, layer.size)]
            for n, layer in layers.items()
            if not layer.writes_residual  # measured only: never acted on
        }
        bad = {n: readers for n, readers in bad.items() if readers}
        if bad:
            raise ValueError(
                f"ReBorn cannot split the outgoing weights of layers {sorted(bad)}: their readers {bad} do not read "
                "every neuron through the same number of columns. Leave the layers out with `exclude=[...]`."
            )


@torch.no_grad()
def transfer_(layer: NeuronLayer, plan: Transfer) -> Touched:
    """Apply a :class:`Transfer` to a layer's incoming weights, norms and readers' columns, in place."""
    module, touched = layer.module, []
    rows = plan.reborn
    for name in ("weight", "bias"):
        param = getattr(module, name, None)
        if isinstance(param, Tensor):
            shape = (-1, *([1] * (param.dim() - 1)))
            param.copy_(param.index_select(0, plan.source) * plan.scale.view(shape).to(param.dtype))
            touched.append((param, rows.view(shape).expand_as(param)))
    outgoing_scale = plan.share / (plan.scale if not layer.norms else torch.ones_like(plan.scale))
    # The norm sees ``d * z_o``: its statistics scale with it (mean by d, variance by d^2), so it gives h_o back.
    stat_scale = {"running_mean": plan.scale, "running_var": plan.scale.square()}
    for _, norm in layer.norms:
        for name in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(norm, name, None)
            if isinstance(t, Tensor) and t.shape == plan.source.shape:
                factor = stat_scale.get(name, torch.ones_like(plan.scale)).to(t.dtype)
                t.copy_(t.index_select(0, plan.source) * factor)
                if t.requires_grad:
                    touched.append((t, rows))
    for consumer in layer.consumers:
        weight = consumer.weight
        columns = column_rows(consumer)
        sources = _column_sources(consumer, plan.source)
        factor = torch.ones(consumer.width, device=weight.device, dtype=weight.dtype)
        factor[consumer.columns] = outgoing_scale.index_select(0, consumer.neurons).to(weight.dtype)
        new = columns.index_select(0, sources) * factor.view(-1, 1)
        _write_rows(consumer, new)
        touched.append((weight, outgoing_mask(consumer, rows | (plan.share != 1))))
    return touched


def _write_rows(consumer: Consumer, rows: Tensor) -> None:
    """Write ``(width, entries)`` rows back into the reader's weight (the inverse of ``column_rows``)."""
    weight = consumer.weight
    if consumer.axis == 0:
        weight.copy_(rows.view_as(weight))
        return
    groups, out, per_group = consumer.groups, weight.shape[0], weight.shape[1]
    grouped = rows.view(groups, per_group, out // groups, -1).permute(0, 2, 1, 3)
    weight.copy_(grouped.reshape(weight.shape))


class ReBornAction(NeuronAction):
    """ReBorn's transfer; the dormant mask comes from :meth:`ReBorn.select`, the over-active one from the scores."""

    def __init__(self, beta: float, max_per_source: int) -> None:
        self.beta, self.max_per_source = beta, max_per_source

    @override
    @torch.no_grad()
    def apply(self, mask: Tensor, context: ActionContext) -> Tensor:
        device = context.layer.module.weight.device
        scores = context.scores.to(device)
        overactive = scores.isfinite() & (scores > self.beta)
        dtype = context.layer.module.weight.dtype
        plan = plan_transfer(mask.to(device), overactive, context.seed, self.max_per_source, dtype=dtype)
        clear_optimizer_state(context.optimizers, transfer_(context.layer, plan))
        return plan.reborn.sum()


class ReBorn(NeuronReset):
    """ReBorn (Qin et al. 2024) on every layer the tracer maps: dormant neurons take over part of over-active ones.

    Scores are ReDo's (the batch mean of the measured activation over the layer mean). For non-negative
    activations (ReLU) that is the mean activation of the paper; for others it is the mean ``|h|``.

    Args:
        tau: Dormant at a normalised score <= tau (paper: 0.1).
        beta: Over-active at a normalised score > beta (paper: 3).
        max_per_source: At most this many dormant neurons per over-active one (paper: 5).
        reset_every_n_steps: Steps between transfers; None = only measure.
        **kwargs: The other arguments of NeuronReset (include, exclude, consumers, include_output_layers,
            residual, max_reset_fraction, log_every_n_steps, log_per_layer, seed (of d, alpha and the pairing),
            eps, step_attribute, name).

    Raises:
        ValueError: On an invalid argument.

    Example:
        >>> import lightning.pytorch as pl
        >>> trainer = pl.Trainer(callbacks=[ReBorn(tau=0.1, beta=3.0)], max_steps=10)
    """

    prefix = "reborn"
    metric_class = DormantRatio

    def __init__(
        self,
        tau: float = 0.1,
        beta: float = 3.0,
        max_per_source: int = 5,
        reset_every_n_steps: int | None = 1000,
        **kwargs: Any,
    ) -> None:
        if not (isinstance(beta, (int, float)) and beta > max(tau, 0)):
            raise ValueError(f"`beta` must be a number above `tau` (paper: 3), got beta={beta!r}, tau={tau!r}.")
        if isinstance(max_per_source, bool) or not isinstance(max_per_source, int) or max_per_source < 1:
            raise ValueError(f"`max_per_source` must be a positive int (paper: 5), got {max_per_source!r}.")
        if kwargs.get("residual") == "reset":
            raise ValueError(
                "ReBorn does not take residual='reset': a residual-stream writer's outgoing columns are shared, so "
                "they cannot be split; use residual='measure' (the default) or 'exclude'."
            )
        kwargs = refuse_unused(
            "ReBorn", kwargs, ("init_fn", "zero_outgoing", "reset_optimizer_state"),
            "its neurons copy over-active ones (nothing is re-drawn or zeroed) and the optimizer state of the "
            "changed entries is always cleared",
        )  # fmt: skip
        self.beta, self.max_per_source = float(beta), max_per_source
        super().__init__(tau=tau, reset_every_n_steps=reset_every_n_steps, **kwargs)

    def make_signal(self) -> ActivitySignal:
        """The activation after each layer (layers whose readers cannot be split are refused)."""
        return ReBornActivation()

    def make_action(self) -> NeuronAction:
        """The transfer from over-active to dormant neurons."""
        return ReBornAction(self.beta, self.max_per_source)
