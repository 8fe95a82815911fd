"""The timing side of ``python -m benchmarks.overhead`` (see ``cli.py``): models, configurations, gated fits."""

from __future__ import annotations

import gc
import itertools
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from regrama_lightning import (
    ContinualBackprop,
    L2Init,
    NeuronPruning,
    PlasticityMetrics,
    ReBorn,
    ReDo,
    ReGraMa,
    ShrinkPerturb,
)
from regrama_lightning.scores import weight_grad_magnitude_sums

CLOCKS = ("wall", "cpu")
"""The clocks of each mark (wall: ``perf_counter``, cpu: ``process_time``), in the order they are read."""


class ReadGrads(pl.Callback):
    """Reference, not a product: reads ``|W.grad|`` row sums of the layers ReGraMa scores, at each step, and no more.

    The unavoidable work of the ``weight`` score; what the callback costs beyond it is its own machinery. The
    layers are every Linear/Conv but the last (the output head, which the callback leaves out by default).
    """

    def __init__(self) -> None:
        self.last_metrics: dict[str, float] = {}

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """Read the gradients."""
        grads = [m.weight.grad for m in pl_module.modules() if isinstance(m, nn.Linear | nn.Conv2d)][:-1]
        self.last_metrics["layers"] = len(weight_grad_magnitude_sums(grads))


CONFIGS: dict[str, Callable[[], pl.Callback | None]] = {
    "bare": lambda: None,
    "defaults": lambda: ReGraMa(),
    "grama-weight@1": lambda: ReGraMa(reset_every_n_steps=None, log_every_n_steps=1),
    "grama-output@1": lambda: ReGraMa(reset_every_n_steps=None, score="output", log_every_n_steps=1),
    "redo@1": lambda: ReDo(reset_every_n_steps=None, log_every_n_steps=1),
    "reset@100": lambda: ReGraMa(reset_every_n_steps=100),
    "read-grads": ReadGrads,
    # The toolkit's callbacks at their defaults (PlasticityMetrics every 100 batches: at its default 1000 a
    # timed fit would not measure once).
    "cbp": lambda: ContinualBackprop(),
    "reborn": lambda: ReBorn(),
    "prune": lambda: NeuronPruning(),
    "snp": lambda: ShrinkPerturb(),
    "l2init": lambda: L2Init(),
    "plasticity@100": lambda: PlasticityMetrics(every_n_steps=100),
}


class Classifier(pl.LightningModule):
    """Cross-entropy classifier around ``net`` trained with Adam.

    Args:
        net: The network.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Cross-entropy of one batch (nothing logged: logging is not what is timed)."""
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam, lr 1e-3."""
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, 256),
        nn.ReLU(),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Linear(256, 10),
    )


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 8 * 8, 10),
    )


# name -> (network factory, input shape of one sample, batch size)
MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], int]] = {
    "mlp": (mlp, (64,), 256),
    "cnn": (cnn, (3, 32, 32), 64),
}


class Batches:
    """Cycles through a few pre-built batches: no Dataset indexing or collation in the timed loop.

    Args:
        pool: The distinct batches.
        length: Number of batches per epoch.
    """

    def __init__(self, pool: list[tuple[Tensor, Tensor]], length: int) -> None:
        self.pool = pool
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return (self.pool[i % len(self.pool)] for i in range(self.length))


HOOKS = (
    "on_train_batch_start",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_train_batch_end",
)
ALWAYS = ("setup", "on_fit_start", "on_train_start", "on_train_end", "on_fit_end", "teardown")


class Gate(pl.Callback):
    """Passes Lightning's per-step hooks to ``inner`` on even batches only ("on" steps); the others are bare.

    Args:
        inner: The callback to gate, or ``None`` for the A/A control.
    """

    def __init__(self, inner: pl.Callback | None) -> None:
        self.inner = inner
        self.on = False
        if inner is None:
            return
        for name in ALWAYS:
            setattr(self, name, getattr(inner, name))
        for name in HOOKS[1:-1]:
            setattr(self, name, self._gated(getattr(inner, name)))
        # The callbacks count steps in an optimizer step hook (registered at on_fit_start): gate it as well.
        if hasattr(inner, "_after_step"):
            inner._after_step = self._gated(inner._after_step)

    def _gated(self, hook: Callable[..., Any]) -> Callable[..., Any]:
        def gated(*args: Any, **kwargs: Any) -> Any:
            return hook(*args, **kwargs) if self.on else None

        return gated

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        """Switch on for even batches (the first batch, which traces the model, is on)."""
        self.on = idx % 2 == 0
        if self.on and self.inner is not None:
            self.inner.on_train_batch_start(trainer, pl_module, batch, idx)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        """Pass the end of an "on" batch."""
        if self.on and self.inner is not None:
            self.inner.on_train_batch_end(trainer, pl_module, outputs, batch, idx)


class HookClock:
    """Accumulates the time spent inside a callback's per-step Lightning hooks."""

    def __init__(self) -> None:
        self.total = 0.0

    def wrap(self, callback: pl.Callback) -> None:
        """Time the hooks ``callback`` implements; wrapping only those keeps the clock's cost out of the others.

        Instance attributes shadow the class's methods, and Lightning looks hooks up on the instance.
        """
        for name in HOOKS:
            if getattr(type(callback), name) is getattr(pl.Callback, name):
                continue
            hook = getattr(callback, name)

            def timed(*args: Any, _hook: Callable[..., Any] = hook, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return _hook(*args, **kwargs)
                finally:
                    self.total += time.perf_counter() - start

            setattr(callback, name, timed)


class StepTimer(pl.Callback):
    """Clock readings at the end of every step; placed last, so a step includes every other callback's hooks.

    Args:
        hooks: Clock of the gated callback's hooks.
    """

    def __init__(self, hooks: HookClock) -> None:
        self.hooks = hooks
        self.marks: list[tuple[float, float, float]] = []

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Read the clocks."""
        self.marks.append((time.perf_counter(), time.process_time(), self.hooks.total))

    def pairs(self, warmup: int) -> list[tuple[tuple[float, ...], tuple[float, ...]]]:
        """(on, off) step durations (wall, cpu, hooks) after ``warmup`` steps: step ``i`` (even) and ``i + 1``."""
        steps = [tuple(b - a for a, b in zip(x, y, strict=True)) for x, y in itertools.pairwise(self.marks)]
        # steps[j] is batch j + 1, from the end of batch j to the end of batch j + 1.
        return [(steps[i - 1], steps[i]) for i in range(_first_pair(warmup), len(steps), 2)]


def _first_pair(warmup: int) -> int:
    """The first timed "on" batch: even, after the warm-up, and with a previous batch to time it from."""
    return max(2, warmup + warmup % 2)


def time_one(
    model: str, inner: pl.Callback | None, pool: list[tuple[Tensor, Tensor]], warmup: int, pairs: int, seed: int
) -> list:
    """One fit of ``model`` with ``inner`` gated on every other step; its (on, off) step pairs."""
    factory = MODELS[model][0]
    pl.seed_everything(seed, verbose=False)
    module = Classifier(factory())
    hooks = HookClock()
    if inner is not None:
        hooks.wrap(inner)
    timer = StepTimer(hooks)
    steps = _first_pair(warmup) + 2 * pairs
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        max_steps=steps,
        callbacks=[Gate(inner), timer],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    gc.collect()
    trainer.fit(module, train_dataloaders=Batches(pool, steps))
    # The timing is only meaningful if a measuring callback measured (L2Init and ShrinkPerturb log nothing).
    if inner is not None and not getattr(inner, "last_metrics", True):
        raise RuntimeError(f"{type(inner).__name__} logged nothing during the timed fit.")
    return timer.pairs(warmup)


def make_pool(model: str, seed: int, size: int = 7) -> list[tuple[Tensor, Tensor]]:
    _, shape, batch = MODELS[model]
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, *shape, generator=gen), torch.randint(10, (batch,), generator=gen)) for _ in range(size)
    ]


def summarize(model: str, config: str, pairs: list, clock: str) -> dict:
    """Mean paired cost and ratio of one configuration, dropping pairs that hold a hiccup."""
    col = CLOCKS.index(clock)
    limit = 3 * statistics.median(off[col] for _, off in pairs)
    kept = [(on, off) for on, off in pairs if on[col] <= limit and off[col] <= limit]
    diffs = [on[col] - off[col] for on, off in kept]
    off_mean = statistics.fmean(off[col] for _, off in kept)
    on_mean = statistics.fmean(on[col] for on, _ in kept)
    se = statistics.stdev(diffs) / len(diffs) ** 0.5
    return {
        "model": model,
        "config": config,
        "clock": clock,
        "pairs": len(kept),
        "dropped": len(pairs) - len(kept),
        "off_ms": 1e3 * off_mean,
        "on_ms": 1e3 * on_mean,
        "cost_us": 1e6 * statistics.fmean(diffs),
        "cost_se_us": 1e6 * se,
        "ratio": 1 + statistics.fmean(diffs) / off_mean,
        "ratio_se": se / off_mean,
        "hooks_pct": 100 * statistics.fmean(on[2] for on, _ in kept) / off_mean,
    }


def bench(models: list[str], configs: list[str], rounds: int, warmup: int, pairs: int, seed: int, clock: str) -> list:
    """Time every configuration on every model; each configuration's pairs are pooled over ``rounds`` fits."""
    results = []
    for model in models:
        pool = make_pool(model, seed)
        collected: dict[str, list] = {c: [] for c in configs}
        for r in range(rounds):
            for config in configs:
                collected[config] += time_one(model, CONFIGS[config](), pool, warmup, pairs, seed + r)
            print(f"  {model}: round {r + 1}/{rounds} done", flush=True)
        results += [summarize(model, c, collected[c], clock) for c in configs]
    return results


def format_table(results: list[dict]) -> str:
    """Results as a fixed-width text table."""
    lines = [
        f"{'model':<5} {'config':<15} {'off ms':>7} {'on ms':>7} {'cost us':>8} {'+-se':>6} "
        f"{'ratio':>7} {'+-se':>6} {'hooks %':>7} {'pairs':>6}"
    ]
    for r in results:
        lines.append(
            f"{r['model']:<5} {r['config']:<15} {r['off_ms']:>7.3f} {r['on_ms']:>7.3f} {r['cost_us']:>8.1f} "
            f"{r['cost_se_us']:>6.1f} {r['ratio']:>6.4f}x {r['ratio_se']:>6.4f} {r['hooks_pct']:>6.2f}% "
            f"{r['pairs']:>6}"
        )
    return "\n".join(lines)


def check_targets(results: list[dict]) -> list[str]:
    """The project's overhead targets on the MLP, each as a ``PASS``/``FAIL`` line."""
    ratio = {r["config"]: r["ratio"] for r in results if r["model"] == "mlp"}
    checks = [
        ("defaults <= 1.01x bare", ("defaults",), lambda: ratio["defaults"] <= 1.01),
        ("grama-weight@1 <= 1.03x bare", ("grama-weight@1",), lambda: ratio["grama-weight@1"] <= 1.03),
        ("defaults < redo@1", ("defaults", "redo@1"), lambda: ratio["defaults"] < ratio["redo@1"]),
        ("grama-weight@1 < redo@1", ("grama-weight@1", "redo@1"), lambda: ratio["grama-weight@1"] < ratio["redo@1"]),
    ]
    return [f"{'PASS' if ok() else 'FAIL'}  mlp: {text}" for text, needs, ok in checks if set(needs) <= set(ratio)]
