"""An agent's hyperparameters as command-line options, read from its ``__init__`` signature and type hints.

Every parameter becomes ``--name-with-dashes`` with the agent's own default (shown in ``--help``); a
:class:`~benchmarks.rl.networks.NetworkConfig` parameter becomes one option per field (``--critic-net-width``),
the :class:`~benchmarks.rl.config.LoopConfig` one option per field without a prefix (``--batch-size``), with the
agent's :attr:`~benchmarks.rl.agent.OffPolicyAgent.LOOP` as defaults. What the run itself sets (environment,
step budget, seed, buffer checkpointing) is left out.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

from ..harness.cli import plain_text
from .agent import OffPolicyAgent
from .config import LoopConfig
from .networks import NetworkConfig

RUN_OWNED = ("env_id",)
#: Loop settings the run sets (``--steps``, ``--seeds``, ``--checkpoint-buffer``), not the agent's options.
RUN_OWNED_LOOP = ("total_steps", "seed", "checkpoint_buffer")


def agent_defaults(agent: type[OffPolicyAgent]) -> dict[str, Any]:
    """Defaults of the agent's hyperparameters (those not set by the run).

    Example:
        >>> from benchmarks.rl.bro import BRO
        >>> agent_defaults(BRO)["loop"].batch_size, agent_defaults(BRO)["critic_net"].depth
        (128, 2)
    """
    params = inspect.signature(agent.__init__).parameters
    defaults = {n: p.default for n, p in params.items() if n != "self" and n not in RUN_OWNED}
    return defaults | {"loop": agent.LOOP}


def _plain(hint: Any) -> Any:
    """``X | None`` -> ``X``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def argument_help(cls: type) -> dict[str, str]:
    """The first sentence of each argument in a Google-style docstring's ``Args:`` section."""
    doc = inspect.getdoc(cls) or ""
    section = re.search(r"^(?:Args|Attributes):\n(.*?)(?:^\S|\Z)", doc, re.S | re.M)
    helps: dict[str, str] = {}
    for match in re.finditer(r"^ {4}(\w+): (.+?)(?=^ {4}\w+: |\Z)", section.group(1) if section else "", re.S | re.M):
        text = plain_text(" ".join(match.group(2).split()))
        helps[match.group(1)] = text.split(". ")[0].rstrip(".")
    return helps


def _option(flag: str, dest: str, hint: Any, default: Any, text: str) -> dict[str, Any]:
    hint = _plain(hint)
    option = {"flag": flag, "dest": dest, "default": default, "help": text or "-"}
    if hint is bool:
        return {**option, "kind": "bool"}
    if typing.get_origin(hint) is Literal:
        return {**option, "kind": "choice", "choices": list(typing.get_args(hint))}
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        return {**option, "kind": f"list:{item.__name__}", "default": list(default) if default is not None else None}
    if hint in (int, float, str):
        return {**option, "kind": hint.__name__}
    raise TypeError(f"No command-line form for {dest}: {hint!r}")


def describe(agent: type[OffPolicyAgent]) -> list[dict[str, Any]]:
    """One option per hyperparameter of ``agent`` (destinations ``agent.<name>`` / ``agent.<net>.<field>``).

    Plain data: what :mod:`benchmarks.rl.agent_options` stores, so that ``--help`` needs no import of the agent.
    """
    hints = typing.get_type_hints(agent.__init__)
    helps, net_helps = argument_help(agent), argument_help(NetworkConfig)
    net_hints = typing.get_type_hints(NetworkConfig)
    options = []
    loop_helps, loop_hints = argument_help(LoopConfig), typing.get_type_hints(LoopConfig)
    for name, default in agent_defaults(agent).items():
        flag = "--" + name.replace("_", "-")
        if name == "loop":
            for field in dataclasses.fields(LoopConfig):
                if field.name not in RUN_OWNED_LOOP:
                    field_flag = "--" + field.name.replace("_", "-")
                    value, text = getattr(default, field.name), loop_helps.get(field.name, "")
                    options.append(_option(field_flag, f"agent.loop.{field.name}", loop_hints[field.name], value, text))
        elif _plain(hints[name]) is NetworkConfig:
            for field in dataclasses.fields(NetworkConfig):
                dest = f"agent.{name}.{field.name}"
                text = f"{name}: {net_helps.get(field.name, '')}"
                field_flag = f"{flag}-{field.name.replace('_', '-')}"
                options.append(_option(field_flag, dest, net_hints[field.name], getattr(default, field.name), text))
        else:
            options.append(_option(flag, f"agent.{name}", hints[name], default, helps.get(name, "")))
    return options


def add_agent_arguments(parser: argparse.ArgumentParser, agent: type[OffPolicyAgent]) -> None:
    """Add one option per hyperparameter of ``agent`` (see :func:`describe`)."""
    from .agent_options import add_options

    add_options(parser, agent.__name__, describe(agent))


def read_agent_arguments(args: argparse.Namespace, agent: type[OffPolicyAgent]) -> dict[str, Any]:
    """The agent's keyword arguments from parsed options (networks rebuilt as ``NetworkConfig``)."""
    values = vars(args)
    kwargs: dict[str, Any] = {}
    for name, default in agent_defaults(agent).items():
        if isinstance(default, LoopConfig):
            fields = {f.name: values[f"agent.loop.{f.name}"] for f in dataclasses.fields(LoopConfig)
                      if f.name not in RUN_OWNED_LOOP}  # fmt: skip
            kwargs[name] = dataclasses.replace(default, **fields)
        elif isinstance(default, NetworkConfig):
            fields = {f.name: values[f"agent.{name}.{f.name}"] for f in dataclasses.fields(NetworkConfig)}
            kwargs[name] = NetworkConfig(**fields)
        else:
            value = values[f"agent.{name}"]
            kwargs[name] = tuple(value) if isinstance(default, tuple) else value
    return kwargs


def write_options(path: str) -> str:
    """Write the option table of every registered agent as JSON to ``path``; return it.

    Run ``python -m benchmarks.rl.agent_args`` after changing an agent's signature; a test checks the file.
    """
    from .registry import AGENTS

    text = json.dumps({name: describe(cls) for name, cls in sorted(AGENTS.items())}, indent=1) + "\n"
    Path(path).write_text(text)
    return text


if __name__ == "__main__":
    from .agent_options import OPTIONS_FILE

    write_options(sys.argv[1] if len(sys.argv) > 1 else str(OPTIONS_FILE))
