"""``fig5-time``: per-measurement and per-reset time of GraMa against ReDo on BRO-net (paper Fig. 5 left).

The paper: GraMa reads gradients that backpropagation leaves anyway, so it stores no intermediate outputs during
the forward pass as an activation-based metric must, "which makes GraMa lightweight, as verified in Fig. 5
(left)" (BRO-net, RTX 3090). This driver measures that claim on the agent's real networks
(:class:`benchmarks.rl.bro.BRO` at the scale's width and batch), inside its real Lightning fit, with the
callbacks the RL benchmark runs.

How (the machinery of :mod:`benchmarks.overhead.timing`): one agent is filled with random steps once; then
every configuration is timed in its own short fit of that agent, the configurations interleaved round after
round (their order rotated each round), so that the machine's drift hits all of them alike. In a fit the
callback runs behind a :class:`~benchmarks.overhead.timing.Gate` on every other update only; each update with
the callback is paired with the bare update after it and ``cost = mean(on - off)`` over the pairs (pairs holding
a hiccup over 3x the median are dropped). Configurations:

* ``grama-measure`` / ``redo-measure``: ``ReGraMa`` / ``ReDo`` measuring at every gated update (no reset);
* ``grama-reset`` / ``redo-reset``: the same, resetting at every gated update (a reset includes its measurement).

Each round gives the ratios ``GraMa / ReDo`` of both costs; the table reports their median over the rounds with
the min and max, and the median costs. The replay ratio is 1 while timing, so that every update holds exactly
one environment step (with BRO-net's 2, on and off updates would differ by the environment step). On a GPU the
step clock synchronises the device (wall clock); on a CPU it is the process's CPU time (one torch thread), which
other processes on the machine do not inflate.
"""

from __future__ import annotations

import json
import platform
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..harness import style
from .report import write_tables

CONFIGS = ("grama-measure", "redo-measure", "grama-reset", "redo-reset")
KINDS = ("measure", "reset")
QUIET = {"devices": 1, "max_epochs": 1, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
         "enable_model_summary": False}  # fmt: skip


@dataclass(frozen=True)
class Setting:
    """What one scale times.

    Attributes:
        env: the task (BRO-net's; the paper does not name the task of Fig. 5 left).
        width: width of the actor's and the critics' BRO-net blocks (paper: 256).
        batch: transitions per update (paper: 128).
        quantiles: quantiles of BRO's distributional critic (BRO: 100).
        pairs: timed (on, off) update pairs per fit.
        warmup: untimed updates at the start of each fit (the first, gated on, traces the model).
        rounds: interleaved rounds of every configuration.
    """

    env: str
    width: int
    batch: int
    quantiles: int
    pairs: int
    warmup: int
    rounds: int


SCALES = {
    "smoke": Setting("Pendulum-v1", width=16, batch=32, quantiles=8, pairs=4, warmup=2, rounds=2),
    "cpu": Setting("dmc:dog-walk", width=256, batch=128, quantiles=100, pairs=150, warmup=10, rounds=5),
    "paper": Setting("dmc:dog-walk", width=256, batch=128, quantiles=100, pairs=500, warmup=20, rounds=10),
}
SEEDS = {"smoke": (0,), "cpu": (0,), "paper": (0,)}
COST_HOURS = {"smoke": 0.003, "cpu": 0.15, "paper": 0.7}  # rough, one CPU core; a GPU is faster
COLUMNS = ("kind", "grama_ms", "redo_ms", "ratio_median", "ratio_low", "ratio_high", "rounds", "bare_update_ms",
           "grama_neurons_reset", "redo_neurons_reset")  # fmt: skip


def result_path(out: Path, scale: str) -> Path:
    """The JSON of one scale's timings."""
    return out / "fig5-time" / scale / "timing.json"


def _callback(config: str, include: list[str]) -> Any:
    from regrama_lightning import ReDo, ReGraMa

    method, kind = config.split("-")
    cls, tau = (ReGraMa, 0.01) if method == "grama" else (ReDo, 0.02)  # the paper's thresholds (Sec. 5.1)
    return cls(tau=tau, reset_every_n_steps=1 if kind == "reset" else None, log_every_n_steps=1, include=include,
               step_attribute="env_steps", seed=0)  # fmt: skip


def _time_fit(agent: Any, config: str, setting: Setting, accelerator: str, clock: str) -> tuple[list, float]:
    """One fit of ``agent`` with ``config`` gated on every other update; its (on, off) pairs, neurons per reset."""
    import lightning.pytorch as pl
    import torch

    from ..overhead.timing import Gate, HookClock, StepTimer, _first_pair

    inner = _callback(config, [f"{n}.*" for n in type(agent).RESET_NETWORKS])
    gate, hooks, reset = Gate(inner), HookClock(), []
    hooks.wrap(inner)

    class SyncedTimer(StepTimer):
        """Waits for the device before reading the clocks (a GPU step is asynchronous); notes each reset's size."""

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            if pl_module.device.type == "cuda":
                torch.cuda.synchronize(pl_module.device)
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            if gate.on and "reset/neurons" in inner.last_metrics:
                reset.append(float(inner.last_metrics["reset/neurons"]))

    timer = SyncedTimer(hooks)
    updates = _first_pair(setting.warmup) + 2 * setting.pairs
    agent.total_steps = agent.env_steps + updates
    # Each measurement is read as it is made (log_every_n_steps=1), as in a run measuring every 1000 steps.
    pl.Trainer(accelerator=accelerator, log_every_n_steps=1, callbacks=[gate, timer], **QUIET).fit(agent)
    if not inner.last_metrics:
        raise RuntimeError(f"{config}: the callback measured nothing during the timed fit.")
    col = ("wall", "cpu").index(clock)
    pairs = [(on[col], off[col]) for on, off in timer.pairs(setting.warmup)]
    return pairs, statistics.fmean(reset) if reset else 0.0


def _cost(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    """Mean paired cost and mean bare update time (seconds), dropping pairs that hold a hiccup.

    A hiccup is a step over 3x the median of its own kind: a reset can cost more than twice a bare update, so the
    steps with the callback are not held to the bare steps' median.
    """
    on_limit, off_limit = (3 * statistics.median(side) for side in zip(*pairs, strict=True))
    kept = [(on, off) for on, off in pairs if on <= on_limit and off <= off_limit]
    return statistics.fmean(on - off for on, off in kept), statistics.fmean(off for _, off in kept)


def _cpu_name() -> str:
    """The CPU's model name (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def measure(setting: Setting, seed: int, accelerator: str, threads: int = 1) -> dict[str, Any]:
    """Time every configuration in ``setting.rounds`` interleaved rounds on one BRO-net agent.

    Args:
        setting: what to time (task, network size, pairs, rounds).
        seed: seed of the agent, its environment and the callbacks' re-draws.
        accelerator: Lightning's accelerator (``cpu``, ``gpu``, ``auto``).
        threads: torch CPU threads.

    Returns:
        ``{"rounds": [{config: {"cost_s", "bare_s", "neurons_reset", "pairs"}}, ...], "machine": {...}}``.
    """
    import lightning.pytorch as pl
    import torch

    from ..harness.process import prepare
    from ..overhead.timing import Gate
    from ..rl.bro import BRO, bro_net

    prepare(threads)
    pl.seed_everything(seed, verbose=False)
    learning = 2 * setting.batch
    loop = BRO.LOOP.replace(total_steps=10**9, learning_starts=learning, replay_ratio=1.0, batch_size=setting.batch,
                            buffer_size=100_000, seed=seed, checkpoint_buffer=False)  # fmt: skip
    agent = BRO(setting.env, loop, n_quantiles=setting.quantiles, actor_net=bro_net(1, setting.width),
                critic_net=bro_net(2, setting.width))  # fmt: skip

    # A first fit fills the buffer with random steps and moves the agent to the device.
    agent.total_steps = learning + 1
    pl.Trainer(accelerator=accelerator, callbacks=[Gate(None)], **QUIET).fit(agent)
    clock = "wall" if agent.device.type == "cuda" else "cpu"
    rounds = []
    for r in range(setting.rounds):
        order = CONFIGS[r % len(CONFIGS) :] + CONFIGS[: r % len(CONFIGS)]
        result = {}
        for config in order:
            pairs, reset = _time_fit(agent, config, setting, accelerator, clock)
            cost, bare = _cost(pairs)
            result[config] = {"cost_s": cost, "bare_s": bare, "neurons_reset": reset, "pairs": len(pairs)}
        rounds.append(result)
        print(f"fig5-time: round {r + 1}/{setting.rounds} done", flush=True)
    agent.close()
    device = torch.cuda.get_device_name(agent.device) if agent.device.type == "cuda" else _cpu_name()
    machine = {"device": str(agent.device), "name": device, "clock": clock,
               "threads": torch.get_num_threads(), "torch": torch.__version__, "host": platform.node()}  # fmt: skip
    return {"rounds": rounds, "machine": machine}


def run(scale: str, out: Path, seeds: tuple[int, ...] | None = None, accelerator: str = "auto") -> None:
    """Time GraMa and ReDo at ``scale`` (skipped when the scale's ``timing.json`` exists).

    Raises:
        ValueError: if Lightning cannot run on ``accelerator`` here (naming ``--accelerator`` and the fix).
    """
    from ..harness.devices import check_accelerator

    check_accelerator(accelerator)
    path = result_path(out, scale)
    if path.exists():
        print(f"{path}: done before, skipped (delete it to re-run)")
        return
    setting = SCALES[scale]
    seeds = SEEDS[scale] if seeds is None else seeds
    runs = [dict(measure(setting, seed, accelerator), seed=seed) for seed in seeds]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"scale": scale, "setting": asdict(setting), "runs": runs}, indent=1) + "\n")
    print(f"wrote {path}")


def rows_of(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One table row per kind (measure, reset): median costs, and the GraMa / ReDo ratio over the rounds."""
    rounds = [r for run in data["runs"] for r in run["rounds"]]
    rows = []
    for kind in KINDS:
        grama = [r[f"grama-{kind}"] for r in rounds]
        redo = [r[f"redo-{kind}"] for r in rounds]
        # A round where ReDo's cost is lost in the noise (<= 0) has no ratio: too few pairs for this machine.
        ratios = [g["cost_s"] / d["cost_s"] for g, d in zip(grama, redo, strict=True) if d["cost_s"] > 0]
        spread = (statistics.median(ratios), min(ratios), max(ratios)) if ratios else ("", "", "")
        rows.append({
            "kind": kind, "grama_ms": 1e3 * statistics.median(g["cost_s"] for g in grama),
            "redo_ms": 1e3 * statistics.median(d["cost_s"] for d in redo), "ratio_median": spread[0],
            "ratio_low": spread[1], "ratio_high": spread[2], "rounds": len(ratios),
            "bare_update_ms": 1e3 * statistics.median(x["bare_s"] for x in grama + redo),
            "grama_neurons_reset": statistics.fmean(g["neurons_reset"] for g in grama),
            "redo_neurons_reset": statistics.fmean(d["neurons_reset"] for d in redo),
        })  # fmt: skip
    return rows


def report(scale: str, out: Path) -> Path:
    """Write ``table.csv``, ``table.md`` and ``figure.png`` under ``<out>/fig5-time``.

    Raises:
        ValueError: if the scale has not been timed.
    """
    path = result_path(out, scale)
    if not path.exists():
        raise ValueError(f"no timing of fig5-time at {scale} scale under {out}; run it first.")
    data = json.loads(path.read_text())
    rows = rows_of(data)
    machine = data["runs"][0]["machine"]
    setting = data["setting"]
    folder = out / "fig5-time"
    title = (f"fig5-time (Fig. 5 left), {scale} scale: BRO-net width {setting['width']}, batch {setting['batch']}, "
             f"{setting['env']}; {machine['device']} ({machine['name']}), {machine['clock']} clock, "
             f"{machine['threads']} thread(s), seeds {[r['seed'] for r in data['runs']]}")  # fmt: skip
    footer = ("Costs: the extra time of an update that measures (measure) or measures and resets (reset), median "
              "over rounds; ratio = GraMa / ReDo per round (median, min, max; rounds: those where ReDo's cost was "
              "above zero).")  # fmt: skip
    write_tables(folder, rows, COLUMNS, title, footer)
    _figure(rows, folder / "figure.png", scale, machine)
    return folder


def _figure(rows: list[dict[str, Any]], path: Path, scale: str, machine: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for i, (method, key) in enumerate((("regrama", "grama_ms"), ("redo", "redo_ms"))):
        xs = [j + 0.4 * i for j in range(len(rows))]
        ax.bar(xs, [r[key] for r in rows], 0.4, color=style.color(method), label=style.label(method))
    for j, row in enumerate(rows):
        if row["ratio_median"] == "":
            continue
        top = max(row["grama_ms"], row["redo_ms"])
        ax.annotate(f"GraMa/ReDo {row['ratio_median']:.2f}\n[{row['ratio_low']:.2f}, {row['ratio_high']:.2f}]",
                    (j + 0.2, top), ha="center", va="bottom", fontsize=7)  # fmt: skip
    ax.set_xticks([j + 0.2 for j in range(len(rows))])
    ax.set_xticklabels([f"per {r['kind']}" for r in rows])
    ax.set_ylabel("extra time per update (ms, median)")
    ax.set_title(f"fig5-time ({scale} scale, {machine['device']})", fontsize=9)
    ax.legend(fontsize=7)
    ax.margins(y=0.25)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
