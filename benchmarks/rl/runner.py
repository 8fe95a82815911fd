"""One training run of an agent with a method: Trainer, loggers, callbacks, checkpoint and summary."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger

from ..harness import checkpointing, runs
from ..harness.csv_logger import StepCSVLogger
from ..harness.hparams import LogHyperparams
from ..harness.loggers import extra_loggers
from .agent import OffPolicyAgent
from .config import LoopConfig
from .evaluation import EnvStepsProgressBar, Evaluation
from .methods import method_callbacks, monitors
from .registry import agent_class


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
    checkpoint_buffer: bool = True
    accelerator: str = "auto"
    devices: int = 1
    progress: bool = True
    out: Path = Path("runs/rl")
    loggers: tuple[str, ...] = ()  # more loggers (``"wandb"``) besides the CSV and TensorBoard files


def env_folder(env: str) -> str:
    """The folder name of an environment id (``dmc:dog-walk`` -> ``dmc_dog-walk``: ``:`` is no file name)."""
    return env.replace(":", "_")


def run_dir(config: RunConfig, method: str, seed: int) -> Path:
    """``<out>/<env>/<agent>/<label>/seed<k>``: label = method, ``<method>-keep`` when outgoing weights are kept."""
    label = f"{method}-keep" if method != "vanilla" and not config.zero_outgoing else method
    return config.out / env_folder(config.env) / config.agent / label / f"seed{seed}"


def run_settings(config: RunConfig, method: str, seed: int) -> dict[str, Any]:
    """What defines a run's result, the key of its folder: the config without ``out``, ``progress``, ``loggers``."""
    settings = {k: v for k, v in asdict(config).items() if k not in ("out", "progress", "loggers")}
    return {"config": settings, "method": method, "seed": seed}


def run_loop(config: RunConfig, seed: int) -> LoopConfig:
    """The agent's loop settings with what the run sets: steps, seed, buffer checkpoints and buffer size.

    The buffer holds at most ``steps`` rows: a short run needs no million-row buffer (it is preallocated).
    """
    loop = LoopConfig.of(config.agent_args.get("loop"), agent_class(config.agent).LOOP)
    return loop.replace(
        total_steps=config.steps,
        seed=seed,
        checkpoint_buffer=config.checkpoint_buffer,
        buffer_size=min(loop.buffer_size, config.steps),
    )


def make_agent(config: RunConfig, seed: int) -> OffPolicyAgent:
    """The run's agent (it checks its hyperparameters and the environment id).

    Raises:
        ValueError: On a bad hyperparameter (named as the agent's argument) or an unknown environment.
    """
    kwargs = {k: v for k, v in config.agent_args.items() if k != "loop"}
    return agent_class(config.agent)(config.env, run_loop(config, seed), **kwargs)


def reset_networks(config: RunConfig, agent: OffPolicyAgent) -> tuple[str, ...]:
    """The networks the methods score and reset: ``config.networks`` or the agent's ``RESET_NETWORKS``.

    Raises:
        ValueError: When one is no network of the agent (the agent's environment is closed first).
    """
    networks = tuple(config.networks or type(agent).RESET_NETWORKS)
    unknown = sorted(set(networks) - set(agent.networks()))
    if unknown:
        agent.close()
        raise ValueError(
            f"`networks` {unknown} are not networks of {type(agent).__name__}; choose among {sorted(agent.networks())}."
        )
    return networks


def resume_note(folder: Path, checkpoint: Path, agent: OffPolicyAgent) -> str:
    """What a resume from ``checkpoint`` will do, said before it does it."""
    saved = checkpointing.saved_entry(checkpoint, "off_policy_agent")
    where = f"{folder}: resuming at {saved['env_steps']} environment steps ({saved['updates']} updates)"
    if "buffer" in saved:
        return f"{where}, with the replay buffer saved in the checkpoint: it continues as the uninterrupted run."
    return (
        f"{where}; the checkpoint holds no replay buffer (--no-checkpoint-buffer), so the run refills it with "
        f"{agent.learning_starts} steps of its policy before it updates again: it makes fewer updates than an "
        "uninterrupted run."
    )


def grama_ratio(grama: pl.Callback) -> float | None:
    """The latest GraMa ratio a ``ReGraMa`` callback measured."""
    return grama.last_metrics.get("grama/ratio")


def run(
    config: RunConfig,
    method: str,
    seed: int,
    control: runs.RunControl | None = None,
    extra_callbacks: Sequence[pl.Callback] = (),
) -> dict[str, Any]:
    """Train one agent with one method and seed; write logs, checkpoints and ``summary.json`` in its run folder.

    ``last.ckpt`` is saved every ``control.checkpoint_every`` environment steps (default ``eval_every``) and at
    the end. A folder that already holds a run is skipped, resumed or refused as ``benchmarks.harness.runs.begin``
    decides (``control``: ``resume``, ``overwrite``).

    Args:
        config: The run's settings.
        method: ``vanilla``, ``regrama`` or ``redo``.
        seed: Seed of the networks, the environments and the resets.
        control: Resume, overwrite and checkpoint period.
        extra_callbacks: More callbacks for the Trainer.

    Returns:
        The summary written to ``summary.json``.

    Raises:
        ValueError: On an unknown agent, method or environment.
        benchmarks.harness.runs.RunFolderError: When the folder holds another or an incomplete run that ``control``
            does not allow touching.
    """
    folder = run_dir(config, method, seed)
    control = control or runs.RunControl()
    settings = run_settings(config, method, seed)
    decision = runs.decide(folder, settings, control)
    if decision.action == "skip":
        print(f"{folder}: done before with these settings, skipped (--overwrite re-runs it)")
        return decision.summary
    pl.seed_everything(seed, verbose=False)
    agent = make_agent(config, seed)
    networks = reset_networks(config, agent)
    start = runs.begin(folder, settings, control)  # the folder is touched only once the run can start
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
    video = str(folder / "videos") if config.video else None
    evaluation = Evaluation(config.eval_every, config.eval_episodes, video_dir=video, announce=not config.progress)
    callbacks.append(evaluation)
    hparams = runs.canonical({**run_settings(config, method, seed)["config"], "method": method, "seed": seed,
                              "networks": list(networks), "buffer_size": agent.buffer_size})  # fmt: skip

    def final() -> dict[str, float]:  # TensorBoard's hparams table, written when the fit has finished
        return {
            "hp/final_eval_return": evaluation.history[-1][1],
            "hp/grama_ratio": grama_ratio(monitors(callbacks)[0]),
        }

    every = control.checkpoint_every or config.eval_every
    callbacks += [
        checkpointing.RandomState(),
        checkpointing.PeriodicCheckpoint(folder / runs.CHECKPOINT_FILE, every, "env_steps"),
        LogHyperparams(hparams, final, step=lambda trainer, agent: agent.env_steps),
        *extra_callbacks,
    ]
    if config.progress:
        callbacks.append(EnvStepsProgressBar(refresh_rate=50, description=f"{config.agent} {method} seed{seed}"))
    name, version = str(folder.parent.relative_to(config.out)), folder.name
    board_resume = checkpointing.tensorboard_resume_kwargs(start.checkpoint)
    trainer = pl.Trainer(
        accelerator=config.accelerator,
        devices=config.devices,
        max_epochs=1,
        logger=[
            StepCSVLogger(config.out, name=name, version=version),  # one row per environment step
            TensorBoardLogger(
                config.out, name=name, version=version, sub_dir="tensorboard", default_hp_metric=False, **board_resume
            ),
            *extra_loggers(list(config.loggers), folder, f"{config.agent} {config.env} {method} seed{seed}", hparams),
        ],
        callbacks=callbacks,
        log_every_n_steps=config.log_every,
        enable_checkpointing=True,
        enable_progress_bar=config.progress,
        enable_model_summary=False,
    )
    if start.checkpoint is not None:  # before anything makes the CSV logger's writer, which clears its file
        checkpointing.resume_csv_loggers(trainer.loggers, start.checkpoint)
    if start.checkpoint is not None:
        print(resume_note(folder, start.checkpoint, agent), flush=True)
    with runs.attempt(folder):
        trainer.fit(agent, ckpt_path=start.checkpoint)
    seconds = agent.train_seconds  # the whole run's, over its attempts; the rates below too
    trainer.save_checkpoint(folder / runs.CHECKPOINT_FILE)
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
        "buffer_size": agent.buffer_size,  # the capacity used: --buffer-size, at most --steps
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
    runs.finish(folder, summary)
    return runs.read_summary(folder)
