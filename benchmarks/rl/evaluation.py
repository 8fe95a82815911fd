"""Deterministic-policy evaluation on a schedule of environment steps, and a progress bar counting them."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from torch import Tensor

from .envs import make_env


def evaluate(policy: Any, env: Any, device: torch.device) -> np.ndarray:
    """Run one episode in every sub-environment of ``env`` and return their returns.

    Args:
        policy: Maps a batch of observations (on ``device``) to actions in ``[-1, 1]``.
        env: A vectorised environment from :func:`~benchmarks.rl.envs.make_env`, freshly reset by this call.
        device: Where the policy runs.

    Returns:
        One undiscounted return per sub-environment (its first episode; later ones are ignored).
    """
    obs, _ = env.reset()
    returns = np.zeros(env.num_envs)
    running = np.ones(env.num_envs, dtype=bool)
    while running.any():
        with torch.no_grad():
            action = policy(torch.as_tensor(obs, device=device)).cpu().numpy()
        obs, reward, terminated, truncated, _ = env.step(action)
        returns += reward * running
        running &= ~(terminated | truncated)
    return returns


class Evaluation(pl.Callback):
    """Evaluate the agent's deterministic policy every ``every_n_env_steps`` environment steps and at the end.

    The ``episodes`` episodes run side by side in their own vectorised environment (seeded apart from the
    training one), with the agent's ``act_deterministic``. ``eval/return`` (mean) and ``eval/return_std`` are
    written to the loggers at the agent's ``env_steps``; ``history`` keeps ``(env_steps, mean, std)``.

    Args:
        every_n_env_steps: Evaluation period in environment steps.
        episodes: Episodes per evaluation.
        seed_offset: Added to the agent's seed for the evaluation environments.
        video_dir: Record evaluation episodes of sub-environment 0 there (``MUJOCO_GL=egl``).
        announce: Also print one line per evaluation (a run without a progress bar is not silent).

    Raises:
        ValueError: On a non-positive period or episode count.
    """

    def __init__(
        self,
        every_n_env_steps: int = 10_000,
        episodes: int = 10,
        seed_offset: int = 10_000,
        video_dir: str | None = None,
        announce: bool = False,
    ) -> None:
        for name, value in (("every_n_env_steps", every_n_env_steps), ("episodes", episodes)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        self.every_n_env_steps = every_n_env_steps
        self.episodes = episodes
        self.seed_offset = seed_offset
        self.video_dir = video_dir
        self.announce = announce
        self.history: list[tuple[int, float, float]] = []
        self._env: Any = None
        self._next = every_n_env_steps

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check that the module is an agent with a deterministic policy."""
        if not callable(getattr(pl_module, "act_deterministic", None)) or not hasattr(pl_module, "env_steps"):
            raise ValueError(
                f"Evaluation needs an agent with `env_steps` and `act_deterministic(obs)`; {type(pl_module).__name__} "
                "has not got them."
            )

    def state_dict(self) -> dict[str, Any]:
        """The evaluations so far (a resumed run's summary keeps them)."""
        return {"history": [list(entry) for entry in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the evaluations so far."""
        self.history = [(int(s), float(m), float(d)) for s, m, d in state_dict["history"]]

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Schedule the next evaluation after the agent's current step (resumed runs continue the schedule)."""
        self._next = (pl_module.env_steps // self.every_n_env_steps + 1) * self.every_n_env_steps

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Evaluate once the agent has passed the next scheduled step."""
        if pl_module.env_steps >= self._next:
            self._next = (pl_module.env_steps // self.every_n_env_steps + 1) * self.every_n_env_steps
            self.run(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Evaluate the final policy (unless it was just evaluated)."""
        if not self.history or self.history[-1][0] != pl_module.env_steps:
            self.run(trainer, pl_module)
        if self._env is not None:
            self._env.close()
            self._env = None

    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> tuple[float, float]:
        """Evaluate now; log and return the mean and standard deviation of the returns."""
        if self._env is None:
            seed = pl_module.seed + self.seed_offset
            self._env = make_env(pl_module.env_id, seed=seed, num_envs=self.episodes, video_dir=self.video_dir)
        was_training = pl_module.training
        pl_module.eval()
        returns = evaluate(pl_module.act_deterministic, self._env, pl_module.device)
        pl_module.train(was_training)
        mean, std = float(returns.mean()), float(returns.std())
        self.history.append((pl_module.env_steps, mean, std))
        pl_module.write_logs({"eval/return": mean, "eval/return_std": std})
        if self.announce:
            spread = f"std {std:.1f} over {self.episodes} episodes" if self.episodes > 1 else "one episode"
            print(f"{pl_module.env_id}: {pl_module.env_steps} environment steps, evaluation return {mean:.1f} "
                  f"({spread})", flush=True)  # fmt: skip
        return mean, std


class EnvStepsProgressBar(TQDMProgressBar):
    """Lightning's progress bar, counting environment steps out of the agent's ``total_steps``.

    Args:
        refresh_rate: Refresh every N updates.
        description: Shown before the environment id (e.g. ``"sac regrama seed0"``).
    """

    def __init__(self, refresh_rate: int = 1, description: str = "") -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.description = description

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Count to the agent's step budget."""
        super().on_train_epoch_start(trainer, pl_module)
        self.train_progress_bar.reset(total=pl_module.total_steps)
        self.train_progress_bar.initial = 0
        self.train_progress_bar.set_description(f"{self.description} {pl_module.env_id}".strip())

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Show the environment steps taken and the latest return and ratio."""
        if pl_module.updates % self.refresh_rate == 0:
            self.train_progress_bar.n = pl_module.env_steps
            self.train_progress_bar.set_postfix(self._postfix(trainer), refresh=True)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Show the final count."""
        self.train_progress_bar.n = pl_module.env_steps
        self.train_progress_bar.set_postfix(self._postfix(trainer), refresh=True)
        super().on_train_epoch_end(trainer, pl_module)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """Lightning's metrics without ``v_num`` (the run folder, not a version, names a run here)."""
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics

    @staticmethod
    def _postfix(trainer: pl.Trainer) -> dict[str, str]:
        shown = ("eval/return", "train/episode_return", "grama/ratio", "perf/env_steps_per_s")
        metrics: dict[str, Tensor] = trainer.callback_metrics
        return {k.split("/")[-1]: f"{float(metrics[k]):.3g}" for k in shown if k in metrics}
