"""One training run of an agent with a method: Trainer, loggers, callbacks, checkpoint and summary."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from benchmarks.rl.agent_args import agent_defaults
from benchmarks.rl.evaluation import EnvStepsProgressBar, Evaluation
from benchmarks.rl.methods import method_callbacks, monitors
from benchmarks.rl.registry import agent_class


@dataclass
class RunConfig:
    """Everything a run needs besides its method and seed (the command line's arguments)."""

    agent: str = "sac"
    env: str = "HalfCheetah-v5"
    steps: int = 1_000_000
    agent_args: dict[str, Any] = field(default_factory=dict)  # the agent's hyperparameters; defaults otherwise
    networks: tuple[str, ...] | None = None  # networks to reset; None: the agent's RESET_NETWORKS
    reset_every: int = 1000
    grama_tau: float = 0.01
    redo_tau: float = 0.02
    max_reset_fraction: float | None = None
    zero_outgoing: bool = True
    eval_every: int = 10_000
    eval_episodes: int = 10
    log_every: int = 1000
    video: bool = False
    checkpoint_buffer: bool = False
    accelerator: str = "auto"
    devices: int = 1
    progress: bool = True
    out: Path = Path("runs/rl")


def run_dir(config: RunConfig, method: str, seed: int) -> Path:
    """``<out>/<env>/<label>/seed<k>``: label = method, ``<method>-keep`` when outgoing weights are kept."""
    label = f"{method}-keep" if method != "vanilla" and not config.zero_outgoing else method
    return config.out / config.env.replace(":", "_") / label / f"seed{seed}"  # ":" of dmc ids: "_"


def run(config: RunConfig, method: str, seed: int) -> dict[str, Any]:
    """Train one agent with one method and seed; write logs, a checkpoint and ``summary.json`` in its run folder.

    Args:
        config: The run's settings.
        method: ``vanilla``, ``regrama`` or ``redo``.
        seed: Seed of the networks, the environments and the resets.

    Returns:
        The summary written to ``summary.json``.

    Raises:
        ValueError: On an unknown agent, method or environment.
    """
    cls = agent_class(config.agent)
    folder = run_dir(config, method, seed)
    pl.seed_everything(seed, verbose=False)
    kwargs = dict(config.agent_args)
    # A short run needs no million-row buffer (it is preallocated).
    kwargs["buffer_size"] = min(kwargs.get("buffer_size", agent_defaults(cls)["buffer_size"]), config.steps)
    agent = cls(
        env_id=config.env, total_steps=config.steps, seed=seed, checkpoint_buffer=config.checkpoint_buffer, **kwargs
    )
    networks = tuple(config.networks or cls.RESET_NETWORKS)
    unknown = sorted(set(networks) - set(agent.networks()))
    if unknown:
        raise ValueError(
            f"`networks` {unknown} are not networks of {cls.__name__}; choose among {sorted(agent.networks())}."
        )
    callbacks: list[pl.Callback] = list(
        method_callbacks(
            method,  # type: ignore[arg-type]
            networks,
            config.reset_every,
            config.grama_tau,
            config.redo_tau,
            config.max_reset_fraction,
            seed,
            config.zero_outgoing,
        )
    )
    evaluation = Evaluation(
        config.eval_every, config.eval_episodes, video_dir=str(folder / "videos") if config.video else None
    )
    callbacks.append(evaluation)
    if config.progress:
        callbacks.append(EnvStepsProgressBar(refresh_rate=50))
    name, version = str(folder.parent.relative_to(config.out)), folder.name
    trainer = pl.Trainer(
        accelerator=config.accelerator,
        devices=config.devices,
        max_epochs=1,
        logger=[
            CSVLogger(config.out, name=name, version=version),
            TensorBoardLogger(config.out, name=name, version=version, sub_dir="tensorboard", default_hp_metric=False),
        ],
        callbacks=callbacks,
        log_every_n_steps=config.log_every,
        enable_checkpointing=False,
        enable_progress_bar=config.progress,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(agent)
    seconds = time.perf_counter() - start
    trainer.save_checkpoint(folder / "last.ckpt")
    agent.close()
    grama, redo = monitors(callbacks)
    summary = {
        "agent": config.agent,
        "env": config.env,
        "method": method,
        "seed": seed,
        "env_steps": agent.env_steps,
        "updates": agent.updates,
        "episodes": agent.episodes,
        "final_eval_return": evaluation.history[-1][1],
        "best_eval_return": max(r for _, r, _ in evaluation.history),
        "evaluations": [{"env_steps": s, "return": r, "std": d} for s, r, d in evaluation.history],
        "grama_ratio": grama.last_metrics.get("grama/ratio"),
        "dormant_ratio": redo.last_metrics.get("dormant/ratio"),
        "reset_events": grama.resets + redo.resets,
        "seconds": seconds,
        "env_steps_per_s": agent.env_steps / seconds,
        "updates_per_s": agent.updates / seconds,
        "device": str(agent.device),
        "networks": list(networks),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
