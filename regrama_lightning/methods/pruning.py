"""``NeuronPruning``: zero inactive neurons' incoming and outgoing weights for good (the GraMa paper's Fig. 7).

The pruning itself is :func:`prune_entries` (which entries of which parameters a pruned neuron owns) and
:class:`PruneAction` (zero them, clear their optimizer state, and zero them again after every optimizer step,
so that momentum, weight decay or a gradient through a norm never revives them). The score, selection and
schedule are :class:`~regrama_lightning.callbacks.NeuronReset`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from typing_extensions import override

from regrama_lightning.actions import ActionContext, NeuronAction
from regrama_lightning.callbacks.base import NeuronReset
from regrama_lightning.methods.arguments import refuse_unused
from regrama_lightning.metrics import DormantRatio, GraMaRatio
from regrama_lightning.reset import Touched, clear_optimizer_state, outgoing_mask
from regrama_lightning.signals import Activation, ActivitySignal, OutputGradient, WeightGradient
from regrama_lightning.tracing.layers import NeuronLayer

Score = Literal["weight", "output", "activation"]
_SIGNALS: dict[str, type[ActivitySignal]] = {
    "weight": WeightGradient,
    "output": OutputGradient,
    "activation": Activation,
}


def prune_entries(layer: NeuronLayer, mask: Tensor) -> Touched:
    """The entries a pruned neuron owns: its incoming weight row and bias, and its readers' columns.

    Returns:
        ``(parameter, boolean mask of its entries)`` pairs; the masks are new tensors.

    Example:
        >>> from regrama_lightning import trace_topology
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> layer = trace_topology(net, lambda: net(torch.randn(2, 3)))["0"]
        >>> [(tuple(p.shape), int(m.sum())) for p, m in prune_entries(layer, torch.tensor([0, 1, 0, 0]).bool())]
        [((4, 3), 3), ((4,), 1), ((2, 4), 2)]
    """
    module = layer.module
    mask = mask.to(module.weight.device)
    entries: Touched = []
    for name in ("weight", "bias"):
        param = getattr(module, name, None)
        if isinstance(param, Tensor):
            entries.append((param, mask.view(-1, *([1] * (param.dim() - 1))).expand_as(param).clone()))
    entries += [(c.weight, outgoing_mask(c, mask).clone()) for c in layer.consumers]
    return entries


class PruneAction(NeuronAction):
    """Zero the selected neurons' entries, clear their optimizer state, and keep them at zero after every step.

    Masks are kept per parameter name (``bind`` gives the names), so that they go into the checkpoint and a
    resumed run keeps the same entries at zero from its first step.
    """

    def __init__(self) -> None:
        self.masks: dict[str, Tensor] = {}  # parameter name -> bool mask of pruned entries
        self.pruned: dict[str, Tensor] = {}  # layer name -> bool mask of pruned neurons
        self._names: dict[int, str] = {}
        self._params: dict[str, Tensor] = {}
        self._keep: tuple[list[Tensor], list[Tensor]] = ([], [])

    def bind(self, model: nn.Module) -> None:
        """Learn parameter names; apply masks restored from a checkpoint."""
        self._params = dict(model.named_parameters())
        self._names = {id(p): n for n, p in self._params.items()}
        for name, mask in list(self.masks.items()):
            if name not in self._params or self._params[name].shape != mask.shape:
                raise ValueError(
                    f"The checkpoint prunes parameter {name!r} of shape {tuple(mask.shape)}, which this model does "
                    "not have; resume with the model that wrote the checkpoint."
                )
            self.masks[name] = mask.to(self._params[name].device)
        self._refresh()

    def _refresh(self) -> None:
        names = sorted(self.masks)
        self._keep = ([self._params[n] for n in names], [(~self.masks[n]).to(self._params[n].dtype) for n in names])

    @override
    @torch.no_grad()
    def apply(self, mask: Tensor, context: ActionContext) -> Tensor:
        layer = context.layer
        before = self.pruned.get(layer.name, torch.zeros_like(mask))
        mask = mask.to(before.device) | before
        self.pruned[layer.name] = mask
        entries = prune_entries(layer, mask)
        for param, entry in entries:
            name = self._names[id(param)]
            self.masks[name] = self.masks[name] | entry if name in self.masks else entry
            param.masked_fill_(entry, 0.0)
        clear_optimizer_state(context.optimizers, entries)
        self._refresh()
        return (mask & ~before).sum()

    @override
    @torch.no_grad()
    def after_step(self, optimizer_index: int) -> None:
        if self._keep[0]:
            torch._foreach_mul_(*self._keep)  # one batched call: pruned entries back to exactly 0

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "masks": {n: m.cpu() for n, m in self.masks.items()},
            "pruned": {n: m.cpu() for n, m in self.pruned.items()},
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.masks = dict(state_dict.get("masks", {}))
        self.pruned = dict(state_dict.get("pruned", {}))

    def fraction(self, sizes: Mapping[str, int]) -> float:
        """Pruned share of the neurons of the given layers (host sync: for logs and inspection)."""
        total = sum(sizes.values())
        return sum(int(self.pruned[n].sum()) for n in sizes if n in self.pruned) / total if total else 0.0


class NeuronPruning(NeuronReset):
    """Prune inactive neurons: at each pruning step, their incoming and outgoing weights are zeroed for good.

    Scores and selection are ReGraMa's (``score="weight"`` or ``"output"``) or ReDo's (``"activation"``); at
    every ``reset_every_n_steps``-th step (or :meth:`request_reset`) the neurons at or below ``tau`` are pruned:
    incoming weights, bias and readers' columns set to 0, their optimizer state cleared, and set to 0 again after
    every later optimizer step (a mask kept in the checkpoint). ``prune/fraction`` logs the pruned share of the
    scored layers' neurons at each pruning step; ``reset/neurons`` the neurons newly pruned.

    Args:
        tau: Threshold on the normalised score.
        reset_every_n_steps: Pruning period in steps of each layer's optimizer; None = only measure.
        score: "weight" (|W.grad|), "output" (GraMa Eq. 2) or "activation" (ReDo).
        **kwargs: The other arguments of NeuronReset (include, exclude, consumers, include_output_layers,
            residual, max_reset_fraction, log_every_n_steps, log_per_layer, seed, eps, step_attribute, name).

    Raises:
        ValueError: On an invalid argument.

    Example:
        >>> trainer = pl.Trainer(callbacks=[NeuronPruning(tau=0.01, reset_every_n_steps=1000)], max_steps=10)
    """

    prefix = "prune"

    def __init__(
        self, tau: float = 0.01, reset_every_n_steps: int | None = 1000, score: Score = "weight", **kwargs: Any
    ) -> None:
        if score not in _SIGNALS:
            raise ValueError(f"`score` must be one of {sorted(_SIGNALS)}, got {score!r}.")
        kwargs = refuse_unused(
            "NeuronPruning", kwargs, ("init_fn", "zero_outgoing", "reset_optimizer_state"),
            "pruned neurons are zeroed, never re-drawn, and their optimizer state is always cleared",
        )  # fmt: skip
        self.score = score
        self.metric_class = DormantRatio if score == "activation" else GraMaRatio
        super().__init__(tau=tau, reset_every_n_steps=reset_every_n_steps, **kwargs)

    def make_signal(self) -> ActivitySignal:
        """The chosen score's signal."""
        return _SIGNALS[self.score]()

    def make_action(self) -> NeuronAction:
        """Pruning instead of re-initialisation."""
        return PruneAction()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Follow the optimizers; re-apply pruning masks restored from a checkpoint."""
        super().on_fit_start(trainer, pl_module)
        self.action.bind(pl_module)
        self.action.after_step(0)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """The base's batch end; log the pruned fraction after a pruning step."""
        resets = self.resets
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.resets != resets:
            fraction = self.action.fraction({n: self.layers[n].size for n in self.scored})
            self._log.last_metrics["prune/fraction"] = fraction
            for logger in trainer.loggers:
                logger.log_metrics({"prune/fraction": fraction}, step=self._now(trainer))

    @property
    def pruned(self) -> dict[str, Tensor]:
        """Pruned neurons per layer (boolean masks)."""
        return dict(self.action.pruned)
