"""Refusals at set-up and on the first batch: what the callback cannot do on this model, and every fix."""

from __future__ import annotations

from collections.abc import Mapping

from regrama_lightning.tracing.layers import NeuronLayer

_SHARDED = ("FSDP", "DeepSpeed", "ModelParallel", "XLAFSDP")


def check_strategy(owner: str, strategy: str) -> None:
    """Refuse strategies that shard parameters (a neuron is never whole on one rank)."""
    if any(s in strategy for s in _SHARDED):
        raise ValueError(
            f"{owner} does not support {strategy}: parameters, gradients and optimizer state are sharded there, "
            "so neurons cannot be scored or reset as a whole. Use strategy='ddp' or a single device."
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
