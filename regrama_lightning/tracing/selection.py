"""Which modules of a model are neuron layers, where their outputs appear, and which ones the user selected."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from regrama_lightning.tracing.layers import Consumer, NeuronLayer

NEURON_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
# Modules with per-feature entries (affine weight/bias, running statistics) that a reset restores.
NORM_LAYERS = (
    nn.LayerNorm,
    nn.RMSNorm,
    nn.GroupNorm,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
)


def layer_size(module: nn.Module) -> int:
    """Number of neurons of a neuron layer (``out_features`` or ``out_channels``)."""
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


def neuron_layers(model: nn.Module) -> dict[str, nn.Module]:
    """All ``Linear``/``Conv{1,2,3}d`` modules of ``model`` by qualified name (``torch.compile`` prefixes removed)."""
    return {clean_name(n): m for n, m in model.named_modules() if isinstance(m, NEURON_LAYERS)}


def output_hooks(model: nn.Module) -> dict[str, tuple[nn.Module, int | None]]:
    """Per neuron layer, the module whose forward returns its output, and the index into that return value.

    The layer itself, except ``nn.MultiheadAttention.out_proj``: attention applies its weight functionally, so
    its output is the attention module's first return value.
    """
    hooks: dict[str, tuple[nn.Module, int | None]] = {}
    for parent_name, parent in model.named_modules():
        for child_name, child in parent.named_children():
            if isinstance(child, NEURON_LAYERS):
                name = clean_name(f"{parent_name}.{child_name}" if parent_name else child_name)
                attention = isinstance(parent, nn.MultiheadAttention) and child_name == "out_proj"
                hooks[name] = (parent, 0) if attention else (child, None)
    return hooks


def clean_name(name: str) -> str:
    """Strip ``torch.compile``'s ``_orig_mod`` parts from a module name, so a compiled model keeps its layer names.

    A ``module`` part (DDP's wrapper) is kept: under Lightning the callbacks see the LightningModule, never the
    DDP wrapper around it, and ``module`` is also a common name of a user's own submodule.

    Example:
        >>> clean_name("_orig_mod.encoder.0"), clean_name("net._orig_mod.0"), clean_name("module.0")
        ('encoder.0', 'net.0', 'module.0')
    """
    parts = [p for p in name.split(".") if p != "_orig_mod"]
    return ".".join(parts)


def select_layers(
    layers: Mapping[str, nn.Module], include: Sequence[str] | None, exclude: Sequence[str] | None
) -> dict[str, nn.Module]:
    """Filter layers by ``fnmatch`` name patterns.

    Raises:
        ValueError: If a pattern matches no layer, naming the pattern and the available names.
    """
    for arg, patterns in (("include", include), ("exclude", exclude)):
        for pattern in patterns or ():
            if not any(fnmatch.fnmatchcase(name, pattern) for name in layers):
                raise ValueError(
                    f"`{arg}` pattern {pattern!r} matches no Linear/Conv layer. Layer names are: "
                    f"{sorted(layers)}. Fix the pattern (fnmatch syntax, e.g. 'encoder.*') or remove it."
                )
    return {
        name: module
        for name, module in layers.items()
        if (not include or any(fnmatch.fnmatchcase(name, p) for p in include))
        and not any(fnmatch.fnmatchcase(name, p) for p in exclude or ())
    }


def explicit_consumers(layer: NeuronLayer, names: Sequence[str], modules: Mapping[str, nn.Module]) -> list[Consumer]:
    """Consumers given by name: each reads the layer's neurons in order, in contiguous blocks if flattened.

    Raises:
        ValueError: If a name is unknown or its input width is not a multiple of the layer's size.
    """
    consumers = []
    for name in names:
        if name not in modules:
            raise ValueError(
                f"`consumers` names {name!r} for layer {layer.name!r}, but it is not a Linear/Conv layer of the "
                f"model. Choose among {sorted(modules)}."
            )
        module = modules[name]
        width = module.in_features if isinstance(module, nn.Linear) else module.in_channels
        if width % layer.size:
            raise ValueError(
                f"`consumers`: {name!r} reads {width} inputs, not a multiple of {layer.name!r}'s {layer.size} "
                f"neurons; list only layers that read this layer's output directly or flattened."
            )
        cols = torch.arange(width)
        consumers.append(Consumer(name, module, cols, cols // (width // layer.size)))
    return consumers
