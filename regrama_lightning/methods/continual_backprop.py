"""``ContinualBackprop``: replace the lowest-utility mature neurons (Dohare et al., Nature 2024).

Per neuron, the contribution utility ``y_i = mean_k |w_out[k, i]| * mean_batch |h_i|`` (``h``: the value the
traced graph applies after the layer, measured like ReDo's; a conv's positions are averaged too) is kept as a
running average ``u <- eta u + (1 - eta) y`` read with the bias correction ``u / (1 - eta^n)`` (``n``: updates
since the neuron was born). Every ``replace_every_n_steps`` steps, ``replacement_rate`` times the number of
neurons older than ``maturity_threshold`` steps, summed over the steps since the last check (fractions carry
over), of the lowest-utility mature neurons are replaced: incoming weights re-drawn from the layer's own
initialisation, outgoing weights zeroed after the readers' biases absorb the removed mean contribution
(``b_next += w_out[:, i] * mean h_i``), per-feature norm entries restored, optimizer state of the touched
entries cleared, and utility and age reset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from regrama_lightning.actions import ActionContext, NeuronAction
from regrama_lightning.callbacks.base import NeuronReset
from regrama_lightning.methods.arguments import refuse_unused
from regrama_lightning.methods.outgoing import absorb_mean_input, absorbs_bias, outgoing_abs_mean
from regrama_lightning.metrics import DormantRatio
from regrama_lightning.reset import Touched, clear_optimizer_state, redraw_incoming, restore_norms
from regrama_lightning.reset import zero_outgoing as zero_outgoing_columns
from regrama_lightning.signals import Activation, ActivitySignal
from regrama_lightning.track import OptimizerTrack

# Activations (ReDo's value names) whose output is never negative: there the measured mean |h| is the mean h.
_NONNEGATIVE = ("relu", "relu6", "sigmoid", "softplus")


def running_average(previous: Tensor, values: Tensor, decay: float) -> Tensor:
    """``T`` updates ``u <- decay u + (1 - decay) y_t`` at once, for ``values`` of shape ``(T, size)``.

    Example:
        >>> running_average(torch.tensor([1.0]), torch.tensor([[0.0], [2.0]]), 0.5)
        tensor([1.2500])
    """
    steps = values.shape[0]
    weights = (1 - decay) * decay ** torch.arange(steps - 1, -1, -1, dtype=values.dtype, device=values.device)
    return decay**steps * previous + weights @ values


def lowest_utility(utility: Tensor, updates: Tensor, age: Tensor, decay: float, maturity: int, count: int) -> Tensor:
    """Mask of the ``count`` mature neurons (``age > maturity``) of lowest bias-corrected utility.

    Example:
        >>> u = torch.tensor([0.5, 0.1, 0.2, 0.01])
        >>> lowest_utility(u, torch.full((4,), 50.0), torch.tensor([200, 200, 200, 50]), 0.99, 100, 1).tolist()
        [False, True, False, False]
    """
    corrected = utility / (1 - decay**updates).clamp_min(1e-12)
    key = torch.where(age > maturity, corrected, torch.inf)
    mask = torch.zeros_like(utility, dtype=torch.bool)
    count = min(count, int((age > maturity).sum()))
    if count > 0:
        mask[key.topk(count, largest=False).indices] = True
    return mask


@dataclass
class UtilityState:
    """One layer's running utility, running mean activation, updates since birth and birth step."""

    utility: Tensor
    mean_activation: Tensor
    updates: Tensor
    born: Tensor


class ContinualBackpropAction(NeuronAction):
    """Re-draw incoming, absorb the mean into the readers' biases, zero outgoing, reset the neurons' utility."""

    def __init__(self, owner: ContinualBackprop) -> None:
        self.owner = owner

    @override
    @torch.no_grad()
    def apply(self, mask: Tensor, context: ActionContext) -> Tensor:
        layer, state = context.layer, self.owner.states[context.layer.name]
        mask = mask.to(layer.module.weight.device)
        if layer.activation_name.split("+")[-1] in _NONNEGATIVE:
            for consumer in layer.consumers:
                if absorbs_bias(consumer):
                    absorb_mean_input(consumer, mask, state.mean_activation)
        touched: Touched = redraw_incoming(layer, mask, context.seed, self.owner.init_fn)
        touched += restore_norms(layer, mask, context.seed)
        touched += zero_outgoing_columns(layer.consumers, mask)
        clear_optimizer_state(context.optimizers, touched)
        state.utility.masked_fill_(mask, 0.0)
        state.mean_activation.masked_fill_(mask, 0.0)
        state.updates.masked_fill_(mask, 0.0)
        state.born.masked_fill_(mask, context.step)
        return mask.sum()

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "states": {n: {k: v.cpu() for k, v in vars(s).items()} for n, s in self.owner.states.items()},
            "carry": dict(self.owner.carry),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.owner.states = {n: UtilityState(**s) for n, s in state_dict.get("states", {}).items()}
        self.owner.carry = dict(state_dict.get("carry", {}))


class ContinualBackprop(NeuronReset):
    """Continual backprop's generate-and-test on every layer the tracer maps (Dohare et al., Nature 2024).

    The utility is measured every step by default (``log_every_n_steps=1``: its activation is read by the same
    probe as ReDo's), and replacements are made every ``replace_every_n_steps`` steps. The readers' biases absorb
    a replaced neuron's mean contribution only where the readers are plain biased Linear/Conv layers and the
    activation is never negative (ReLU, sigmoid, ...), where the measured mean ``|h|`` is the mean ``h``;
    elsewhere the correction is skipped. Logs ``cbp/ratio`` (ReDo's dormant ratio at ``tau``) and
    ``reset/neurons``.

    Args:
        replacement_rate: Share of the mature neurons replaced per step (fractions carry over): 1e-4.
        maturity_threshold: Steps a neuron must have lived to be replaced: 100.
        decay_rate: eta of the running utility: 0.99.
        replace_every_n_steps: Steps between replacements (the count accumulated meanwhile is replaced at once).
        tau: Threshold of the logged dormant ratio (not used to select).
        log_every_n_steps: Measurement period (the utility's update period): 1.
        **kwargs: The other arguments of NeuronReset (include, exclude, consumers, include_output_layers,
            residual, init_fn (the re-draw), log_per_layer, seed, eps, step_attribute, name).

    Raises:
        ValueError: On an invalid argument.

    Example:
        >>> import lightning.pytorch as pl
        >>> trainer = pl.Trainer(callbacks=[ContinualBackprop(replacement_rate=1e-4)], max_steps=10)
    """

    prefix = "cbp"
    metric_class = DormantRatio

    def __init__(
        self,
        replacement_rate: float = 1e-4,
        maturity_threshold: int = 100,
        decay_rate: float = 0.99,
        replace_every_n_steps: int = 100,
        tau: float = 0.0,
        log_every_n_steps: int | None = 1,
        **kwargs: Any,
    ) -> None:
        kwargs = refuse_unused(
            "ContinualBackprop", kwargs,
            ("reset_every_n_steps", "zero_outgoing", "reset_optimizer_state", "max_reset_fraction"),
            "it replaces every `replace_every_n_steps` steps as many neurons as `replacement_rate` gives, always "
            "zeroes the outgoing weights (after the readers' biases absorb them) and clears the optimizer state "
            "of the touched entries",
        )  # fmt: skip
        if not (isinstance(replacement_rate, (int, float)) and 0 <= replacement_rate <= 1):
            raise ValueError(f"`replacement_rate` must be in [0, 1] (Dohare et al.: 1e-4), got {replacement_rate!r}.")
        if isinstance(maturity_threshold, bool) or not isinstance(maturity_threshold, int) or maturity_threshold < 0:
            raise ValueError(f"`maturity_threshold` must be an int >= 0 (steps), got {maturity_threshold!r}.")
        if not (isinstance(decay_rate, (int, float)) and 0 <= decay_rate < 1):
            raise ValueError(f"`decay_rate` must be in [0, 1) (Dohare et al.: 0.99), got {decay_rate!r}.")
        self.replacement_rate = float(replacement_rate)
        self.maturity_threshold = maturity_threshold
        self.decay_rate = float(decay_rate)
        self.states: dict[str, UtilityState] = {}
        self.carry: dict[str, float] = {}
        self._warned: set[str] = set()
        super().__init__(
            tau=tau, reset_every_n_steps=replace_every_n_steps, log_every_n_steps=log_every_n_steps, **kwargs
        )
        self._steps_now: dict[str, int] = {}

    def make_signal(self) -> ActivitySignal:
        """The activation after each layer (the utility's ``h``)."""
        return Activation()

    def make_action(self) -> NeuronAction:
        """Generate-and-test's replacement."""
        return ContinualBackpropAction(self)

    def observe(self, track: OptimizerTrack, rows: Tensor, steps: list[int]) -> None:
        """Fold the measured steps' mean ``|h|`` into each layer's running utility and mean activation."""
        means = track.metric.means(rows)
        for name in track.scored:
            mean = means[name]
            layer = self.layers[name]
            state = self._state(name, mean.shape[1], mean.device)
            mean = torch.where(mean.isfinite(), mean, state.mean_activation)  # a step without data changes nothing
            outgoing = outgoing_abs_mean(layer.consumers, layer.size).to(mean.device)
            state.utility = running_average(state.utility, mean * outgoing, self.decay_rate)
            state.mean_activation = running_average(state.mean_activation, mean, self.decay_rate)
            state.updates += mean.shape[0]
            self._steps_now[name] = track.steps

    def _state(self, name: str, size: int, device: torch.device) -> UtilityState:
        if name not in self.states:
            zeros = torch.zeros(size, device=device)
            self.states[name] = UtilityState(zeros, zeros.clone(), zeros.clone(), torch.zeros(size, device=device))
        state = self.states[name]
        if state.utility.device != device:
            self.states[name] = state = UtilityState(*(t.to(device) for t in vars(state).values()))
        return state

    def select(self, name: str, scores: Tensor) -> Tensor:
        """The lowest-utility mature neurons, as many as the replacement rate accumulated (a host sync, here only)."""
        state = self.states.get(name)
        if state is None:
            return torch.zeros_like(scores, dtype=torch.bool)
        age = self._steps_now.get(name, 0) - state.born
        eligible = int((age > self.maturity_threshold).sum())
        period = self.reset_every_n_steps or 1
        self.carry[name] = self.carry.get(name, 0.0) + self.replacement_rate * eligible * period
        count = math.floor(self.carry[name])
        self.carry[name] -= count
        self._warn_uncorrected(name)
        return lowest_utility(state.utility, state.updates, age, self.decay_rate, self.maturity_threshold, count)

    def _warn_uncorrected(self, name: str) -> None:
        layer = self.layers[name]
        plain = layer.activation_name.split("+")[-1] in _NONNEGATIVE and all(absorbs_bias(c) for c in layer.consumers)
        if not plain and name not in self._warned:
            self._warned.add(name)
            rank_zero_warn(
                f"ContinualBackprop: layer {name!r} (activation {layer.activation_name!r}) is not read by plain "
                "biased Linear/Conv layers through a non-negative activation; its readers' biases do not absorb "
                "replaced neurons' mean contribution."
            )
