"""Refusals at set-up and on the first batch: what the callback cannot do on this model, and every fix."""

from __future__ import annotations

from collections.abc import Mapping

import lightning.pytorch as pl

from regrama_lightning.tracing.layers import NeuronLayer

_SHARDED = ("FSDP", "DeepSpeed", "ModelParallel", "XLAFSDP")


def check_trainer(
    owner: str,
    trainer: pl.Trainer,
    module: pl.LightningModule,
    log_every_n_steps: int | None,
    step_attribute: str | None,
) -> None:
    """At ``setup``: refuse sharding strategies, a Trainer that gives no measuring period, a missing step attribute."""
    strategy = type(trainer.strategy).__name__
    if any(s in strategy for s in _SHARDED):
        raise ValueError(
            f"{owner} does not support {strategy}: parameters, gradients and optimizer state are sharded there, "
            "so neurons cannot be scored or reset as a whole. Use strategy='ddp' or a single device."
        )
    if log_every_n_steps is None and trainer.log_every_n_steps < 1:
        raise ValueError(
            f"Trainer(log_every_n_steps={trainer.log_every_n_steps}) gives {owner} no measuring period: pass "
            f"{owner}(log_every_n_steps=N), or a positive Trainer(log_every_n_steps)."
        )
    if step_attribute is not None and not isinstance(getattr(module, step_attribute, None), int):
        raise ValueError(
            f"`step_attribute={step_attribute!r}`: {type(module).__name__} has no int attribute of that name to log "
            "against; add it or use step_attribute=None for the Trainer's step."
        )


def check_resettable(
    owner: str, layers: Mapping[str, NeuronLayer], neuron_layers: Mapping[str, NeuronLayer], residual: str
) -> None:
    """Refuse resets of layers whose outgoing weights are not all known, offering every fix that works.

    Only layers that a reset will act on and whose outgoing weights it zeroes are passed here: a measure-only
    layer needs no readers.
    """
    unmapped = {n: sorted(layer.unmapped_readers) for n, layer in layers.items() if layer.unmapped_readers}
    if not unmapped:
        return
    fixes = [
        "leave them out with `exclude=[...]`",
        "keep their outgoing weights with `zero_outgoing=False`",
        "only measure them with `reset_every_n_steps=None` (they stay scored and logged)",
    ]
    if residual == "reset" and any(layers[n].writes_residual for n in unmapped):
        fixes.append('score residual-stream writers without resetting them with `residual="measure"`')
    # Naming readers by hand only helps when the reader is a Linear/Conv layer fed through an unknown op; a
    # reader with weights of another kind (a GRU, attention's input projection) has no columns to give.
    by_hand = {n: sorted({r for r, _ in readers if r in neuron_layers}) for n, readers in unmapped.items()}
    if all(len(by_hand[n]) == len(unmapped[n]) for n in unmapped):
        name, readers = next(iter(by_hand.items()))
        fixes.append(f"give their Linear/Conv readers with `consumers={{{name!r}: {readers!r}}}`")
        fixes.append("register the op with regrama_lightning.register_op")
    listed = "; ".join(f"({i}) {fix}" for i, fix in enumerate(fixes, 1))
    raise ValueError(
        f"{owner}: Cannot tell which weights read layers {sorted(unmapped)} (reader, op: {unmapped}), so a reset "
        f"cannot zero their outgoing weights. Any of these works: {listed}."
    )
