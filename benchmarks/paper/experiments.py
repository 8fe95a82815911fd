"""The paper's experiments as data: what each runs at each scale (light: no torch).

An RL experiment is a grid of cells (task x variant), each one invocation of the RL runner
(``python -m benchmarks.rl``) with the methods and seeds of the scale; this module only builds those
argument lists, the runner does the work (resume, run folders, checkpoints).

``paper`` scale follows appendix A: BRO-net Table 3, DACER Table 5, SAC Table 7 (the agents' defaults already
equal those values, and ``tests/test_paper_experiments.py`` checks them against a table copied from the
appendix). Where the appendix gives no step budget (BRO-net, DACER) 1M environment steps are used, the budget of
the BRO-net and DACER papers; this is a documented choice, not the appendix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..harness.methods import method_names

SCALES = ("smoke", "cpu", "paper")
PAPER_SEEDS = (0, 1, 2, 3, 4)  # appendix A.1/A.2: "seeds ranging from 0 to 4"
DOG_HUMANOID = ("dmc:humanoid-stand", "dmc:humanoid-walk", "dmc:dog-stand", "dmc:dog-walk")
TABLE8_TASKS = ("dmc:humanoid-stand", "dmc:humanoid-run", "dmc:dog-stand", "dmc:dog-walk")
RL_METHODS = ("vanilla", "redo", "regrama")

# Rough environment steps per second of one run (order of magnitude, for `list` only): measured throughput
# varies with the machine and its load. BRO-net: the cpu-scale dog-walk runs of fig3/fig6b (width 256, replay
# ratio 2) made 13-15 steps/s each on the shared 2-core machine.
STEPS_PER_S = {("bro", "cpu"): 15.0, ("sac", "cpu"): 100.0, ("dacer", "cpu"): 25.0}
GPU_SPEEDUP = 4.0


@dataclass(frozen=True)
class Cell:
    """One runner invocation: a task and a variant (extra runner flags)."""

    env: str
    variant: str
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scale:
    """Budget of one scale: steps per run, seeds, tasks kept and extra runner flags."""

    steps: int
    seeds: tuple[int, ...]
    tasks: int | None = None  # keep the first N tasks (None: all)
    flags: tuple[str, ...] = ()


SMOKE = Scale(
    steps=150,
    seeds=(0,),
    tasks=1,
    flags=("--learning-starts", "100", "--eval-every", "200", "--eval-episodes", "1", "--width", "16",
           "--reset-every", "20", "--log-every", "20", "--no-progress", "--buffer-size", "1000", "--batch-size", "32"),
)  # fmt: skip
CPU = Scale(steps=20_000, seeds=(0, 1, 2), tasks=1, flags=("--eval-every", "5000", "--eval-episodes", "3"))


@dataclass(frozen=True)
class Experiment:
    """One experiment of the paper.

    Attributes:
        name: command-line name.
        reference: where the paper shows it.
        agent: RL agent (``bro``, ``sac``, ``dacer``), or ``None`` for non-RL experiments.
        cells: task x variant grid at paper scale.
        methods: methods compared.
        paper: the paper-scale budget.
        missing: what the project still lacks to run it (empty: runnable).
        needs: where methods missing from the registry come from.
        flags: runner flags of every scale (the paper's settings that differ from the runner's defaults).
        smoke_flags: runner flags of the smoke scale only (what makes one agent's smoke run seconds).
        driver: module of ``benchmarks.paper`` with ``run(scale, out, seeds)`` and ``report(scale, out)`` for an
            experiment that is not an RL runner grid (``None``: the grid above).
    """

    name: str
    reference: str
    agent: str | None
    cells: tuple[Cell, ...] = ()
    methods: tuple[str, ...] = RL_METHODS
    paper: Scale = field(default_factory=lambda: Scale(steps=1_000_000, seeds=PAPER_SEEDS))
    missing: str = ""
    needs: str = ""
    flags: tuple[str, ...] = ()
    smoke_flags: tuple[str, ...] = ()
    driver: str | None = None

    def scale(self, name: str) -> Scale:
        """The budget of scale ``name`` (``smoke``, ``cpu``, ``paper``)."""
        if name not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}; got {name!r}.")
        return {"smoke": SMOKE, "cpu": CPU, "paper": self.paper}[name]

    def cells_at(self, scale: str) -> tuple[Cell, ...]:
        """The cells run at ``scale`` (reduced scales keep the first task of each variant)."""
        tasks = self.scale(scale).tasks
        if tasks is None:
            return self.cells
        envs = list(dict.fromkeys(c.env for c in self.cells))[:tasks]
        return tuple(c for c in self.cells if c.env in envs)

    def commands(self, scale: str, seeds: tuple[int, ...] | None = None, out: str = "runs/paper",
                 accelerator: str = "auto", methods: tuple[str, ...] | None = None,
                 variants: tuple[str, ...] | None = None) -> list[list[str]]:  # fmt: skip
        """The RL runner's argument lists, one per cell (of ``variants`` only, when given).

        Raises:
            ValueError: if the experiment is not an RL grid or cannot run yet (naming what is missing), or on an
                unknown variant.
        """
        if self.agent is None or not self.cells:
            raise ValueError(f"{self.name} is not an RL runner grid; {self.missing or 'it has its own runner'}.")
        if self.missing:
            raise ValueError(f"{self.name} cannot run yet: {self.missing}.")
        methods = methods or self.methods
        unknown = [m for m in methods if m not in method_names("rl")]
        if unknown:
            raise ValueError(
                f"{self.name}: methods {unknown} are not in the method registry (benchmarks/harness/methods.py); "
                f"{self.needs or 'add them there'}. Run the others with --methods "
                f"{' '.join(m for m in methods if m not in unknown)}."
            )
        budget = self.scale(scale)
        seeds = budget.seeds if seeds is None else seeds
        known = list(dict.fromkeys(c.variant for c in self.cells))
        if variants is not None and not set(variants) <= set(known):
            raise ValueError(
                f"{self.name}: unknown variants {sorted(set(variants) - set(known))}; choose among {known}."
            )
        return [
            ["--agent", self.agent, "--env", cell.env, "--methods", *methods,
             "--seeds", *map(str, seeds), "--steps", str(budget.steps), "--accelerator", accelerator,
             "--out", f"{out}/{self.name}/{scale}/{cell.variant}", *budget.flags, *self.flags, *cell.flags,
             *(self.smoke_flags if scale == "smoke" else ())]
            for cell in self.cells_at(scale) if variants is None or cell.variant in variants
        ]  # fmt: skip

    def runs(self, scale: str) -> int:
        """Number of runs (cells x methods x seeds) at ``scale``."""
        return len(self.cells_at(scale)) * len(self.methods) * len(self.scale(scale).seeds)

    def cost_hours(self, scale: str, accelerator: str = "cpu") -> float | None:
        """Rough wall time of the whole experiment run one run at a time (``None`` where unknown)."""
        if self.agent is None:
            return None
        rate = STEPS_PER_S[(self.agent, "cpu")] * (GPU_SPEEDUP if accelerator == "gpu" else 1.0)
        return self.runs(scale) * self.scale(scale).steps / rate / 3600.0


def _grid(envs: tuple[str, ...], variants: dict[str, tuple[str, ...]]) -> tuple[Cell, ...]:
    return tuple(Cell(env, variant, flags) for env in envs for variant, flags in variants.items())


_TAUS = tuple(round(0.02 * k, 2) for k in range(6))  # [0, 0.1] sampled uniformly (Fig. 13)
_SAC_STEPS = Scale(steps=3_000_000, seeds=PAPER_SEEDS)  # Table 7: 3M total timesteps
_SAC_TAU = ("--grama-tau", "0")  # Table 7: reset tau 0 (ReGraMa); ReDo keeps Sec. 5.1's 0.02

EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        # fig3 and fig6b read the same vanilla BRO-net runs (benchmarks/paper/neuron_runs.py), made once.
        Experiment(
            "fig3-quadrants",
            "Fig. 3",
            "bro",
            _grid(("dmc:dog-walk",), {"default": ()}),
            ("vanilla",),
            driver="quadrants",
        ),
        Experiment(
            "fig4-variants",
            "Fig. 4",
            "sac",
            _grid(
                ("dmc:dog-walk",),
                {
                    "resnet": ("--critic-net-residual", "--critic-net-layer-norm"),
                    "leaky_relu": ("--critic-net-activation", "leaky_relu"),
                    "layer_norm": ("--critic-net-layer-norm",),
                },
            ),
            paper=_SAC_STEPS,
            flags=_SAC_TAU,
        ),
        Experiment("fig5-time", "Fig. 5 (left)", None, driver="timing"),
        Experiment("fig5-cifar", "Fig. 5 (right)", None, driver="cifar"),
        Experiment(
            "fig6b-irreversible",
            "Fig. 6b",
            "bro",
            _grid(("dmc:dog-walk",), {"default": ()}),
            ("vanilla",),
            driver="irreversible",
        ),
        Experiment(
            "fig7-pruning",
            "Fig. 7",
            "bro",
            _grid(("dmc:dog-walk",), {"default": ()}),
            methods=("vanilla", "prune-grama", "prune-redo"),
        ),
        Experiment("fig8-bro", "Fig. 8", "bro", _grid(DOG_HUMANOID, {"default": ()})),
        Experiment(
            "fig9-depth",
            "Fig. 9",
            "bro",
            _grid(
                DOG_HUMANOID,
                {f"blocks{n}": ("--actor-net-depth", str(n), "--critic-net-depth", str(n)) for n in range(1, 5)},
            ),
        ),
        Experiment(
            "fig10-dacer",
            "Figs. 10-11",
            "dacer",
            _grid(("Ant-v5", "Walker2d-v5"), {"default": ()}),
            smoke_flags=("--diffusion-steps", "2"),  # an evaluation episode runs the reverse chain at every step
        ),
        Experiment(
            "fig12-activations",
            "Fig. 12",
            "sac",
            _grid(("Ant-v5",), {a: ("--activation", a) for a in ("relu", "sigmoid", "tanh")}),
            paper=_SAC_STEPS,
            flags=_SAC_TAU,
        ),
        Experiment(
            "fig13-tau",
            "Fig. 13 (appendix B)",
            "bro",
            _grid(("dmc:humanoid-walk",), {f"tau{t}": ("--grama-tau", str(t), "--redo-tau", str(t)) for t in _TAUS}),
            methods=("redo", "regrama"),
            paper=Scale(steps=1_000_000, seeds=(0, 1, 2, 3)),  # "average of 4 seeds"
        ),
        Experiment(
            "table8-baselines",
            "Table 8 (appendix C)",
            "bro",
            _grid(TABLE8_TASKS, {"default": ()}),
            methods=("vanilla", "regrama", "redo", "snp", "reborn", "cbp"),
            paper=Scale(steps=1_000_000, seeds=(0, 1, 2)),  # "average of 3 runs"
        ),
        Experiment("probe-architectures", "Sec. 3 claim (random labels)", None, driver="probe"),
    )
}
