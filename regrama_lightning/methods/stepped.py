"""What a parameter-level method follows: each optimizer's stepped parameters, their values at fit start, steps.

A parameter-level method (:class:`~regrama_lightning.methods.l2_init.L2Init`,
:class:`~regrama_lightning.methods.shrink_perturb.ShrinkPerturb`) acts on "what the optimizer steps": the
trainable parameters in each optimizer's groups. :class:`SteppedParameters` holds them per optimizer, with a
copy of their values at fit start (``theta_0``), a step count per optimizer (one per ``optimizer.step()``,
whatever the automatic or manual optimisation around it), and the checkpoint state that restores both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle

from regrama_lightning.callbacks.discovery import unwrap


class SteppedParameters:
    """Per optimizer: the trainable parameters it steps, ``theta_0`` (optional) and its step count.

    Args:
        keep_initial: Keep a copy of the parameters at fit start (or the checkpoint's copy on resume).
    """

    def __init__(self, keep_initial: bool) -> None:
        self.keep_initial = keep_initial
        self.params: list[list[Tensor]] = []
        self.initial: list[list[Tensor]] = []
        self.steps: list[int] = []
        self._restored: dict[str, Any] | None = None
        self._hooks: list[RemovableHandle] = []

    def start(self, optimizers: Sequence[Any], after_step: Callable[[int], None] | None = None) -> None:
        """At fit start: collect each optimizer's parameters, copy ``theta_0``, hook ``after_step(index)``.

        Raises:
            ValueError: If a checkpoint's ``theta_0`` does not fit the optimizers' parameters.
        """
        self.remove()
        optimizers = [unwrap(o) for o in optimizers]
        seen: set[int] = set()
        self.params = []
        for optimizer in optimizers:
            own = [p for g in optimizer.param_groups for p in g["params"] if p.requires_grad and id(p) not in seen]
            seen.update(id(p) for p in own)
            self.params.append(own)
        restored, self._restored = self._restored or {}, None
        self.steps = list(restored.get("steps", [])) or [0] * len(optimizers)
        if self.keep_initial:
            initial = restored.get("initial")
            if initial is None:
                self.initial = [[p.detach().clone() for p in params] for params in self.params]
            else:
                shapes = [[tuple(p.shape) for p in params] for params in self.params]
                if [[tuple(t.shape) for t in group] for group in initial] != shapes:
                    raise ValueError(
                        "The checkpoint's initial parameters do not match the optimizers' parameters (another "
                        "model or optimizer setup?); resume with the model and optimizers that wrote it."
                    )
                self.initial = [
                    [t.to(p.device, p.dtype) for t, p in zip(group, params, strict=True)]
                    for group, params in zip(initial, self.params, strict=True)
                ]
        if after_step is not None:
            for index, optimizer in enumerate(optimizers):
                self._hooks.append(optimizer.register_step_post_hook(self._counter(index, after_step)))

    def initial_by_parameter(self) -> dict[int, Tensor]:
        """``theta_0`` by ``id`` of the parameter."""
        pairs = zip(self.params, self.initial, strict=True)
        return {id(p): t for params, initial in pairs for p, t in zip(params, initial, strict=True)}

    def _counter(self, index: int, after_step: Callable[[int], None]) -> Callable[..., None]:
        def count(optimizer: Optimizer, args: Any, kwargs: Any) -> None:
            self.steps[index] += 1
            after_step(index)

        return count

    def remove(self) -> None:
        """Remove the step hooks."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    def state_dict(self) -> dict[str, Any]:
        """Step counts and ``theta_0`` (on the CPU)."""
        if self._restored is not None:
            return dict(self._restored)
        state: dict[str, Any] = {"steps": list(self.steps)}
        if self.keep_initial:
            state["initial"] = [[t.detach().cpu() for t in group] for group in self.initial]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Keep the state until :meth:`start` (Lightning restores callbacks before ``on_fit_start``)."""
        self._restored = dict(state)
