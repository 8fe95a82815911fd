"""What a :class:`~regrama_lightning.callbacks.base.NeuronReset` shows and stores: inspection and checkpoint state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import Tensor

from regrama_lightning.callbacks.arguments import settings

if TYPE_CHECKING:
    from regrama_lightning.tracing.layers import NeuronLayer


class Exposed:
    """The inspection attributes and the checkpoint state of a neuron-level callback (a mixin of ``NeuronReset``)."""

    # -- inspection ---------------------------------------------------------------------------------------
    @property
    def layers(self) -> dict[str, NeuronLayer]:
        """The traced structure (a :class:`~regrama_lightning.tracing.layers.NeuronLayer`) of each selected layer."""
        return self._discovery.layers

    @property
    def scored(self) -> list[str]:
        """The layers scored and logged, in model order."""
        return self._discovery.scored

    @property
    def last_metrics(self) -> dict[str, float]:
        """The latest logged value of each logged name (``<prefix>/ratio``, per layer, ``reset/neurons``)."""
        return self._log.last_metrics

    @property
    def latest_scores(self) -> dict[str, Tensor]:
        """Normalised per-neuron scores of the scored layers at their latest measurement, by layer name.

        Measurements not yet read are taken as this process saw them (not yet summed across ranks).
        """
        scores: dict[str, Tensor] = {}
        for track in self._tracks:
            scores.update(track.scores())
        return {n: scores[n] for n in self.scored if n in scores}

    @property
    def resets(self) -> int:
        """Reset events of this fit so far (one per optimizer per reset step, whether or not a neuron was selected)."""
        return self._resets

    @property
    def _steps(self) -> list[int]:
        """Steps of each of the Trainer's optimizers (0 for those that step no selected layer)."""
        if self._restored is not None:
            return list(self._restored.get("steps", []))
        steps = [0] * self._optimizers
        for track in self._tracks:
            steps[track.index] = track.steps
        return steps

    # -- checkpoints --------------------------------------------------------------------------------------
    @property
    def state_key(self) -> str:
        """The checkpoint key: ``name`` if given, else built from every argument (the same in every process)."""
        # Lightning reads this around every hook call: build it once.
        if self._state_key is None:
            if self.name is not None:
                self._state_key = f"{type(self).__name__}[name={self.name}]"
            else:
                self._state_key = self._generate_state_key(signal=self.signal.name, **settings(self))
        return self._state_key

    def state_dict(self) -> dict[str, Any]:
        """Step counters, seed, pending requests and the action's state: all a resumed run needs."""
        if self._restored is not None:  # loaded, not applied yet (before on_fit_start)
            return {**self._restored, "action": self.action.state_dict()}
        tracks = self._tracks
        return {
            "steps": self._steps,
            "seed": self._seed if self._seed is not None else self.seed,
            "resets": self._resets,
            "requested": sorted(t.index for t in tracks if t.requested),
            "action": self.action.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the state; the step counters take effect at ``on_fit_start``, which runs after this."""
        self._restored = dict(state_dict)
        if state_dict.get("seed") is not None:
            self._seed = int(state_dict["seed"])  # setup() ran before the restore: the checkpoint's seed wins
        self.action.load_state_dict(state_dict.get("action", {}))
