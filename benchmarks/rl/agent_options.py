"""The agents' command-line options as plain data (``agent_options.json``), so that ``--help`` imports no torch.

The table is generated from the agents' signatures and docstrings by ``python -m benchmarks.rl.agent_args``;
``tests/test_rl_agents.py`` checks that it matches them.
"""

from __future__ import annotations

import argparse
import json
from functools import cache
from pathlib import Path
from typing import Any

OPTIONS_FILE = Path(__file__).with_name("agent_options.json")
_TYPES = {"int": int, "float": float, "str": str}


@cache
def options() -> dict[str, list[dict[str, Any]]]:
    """Per agent name, its options: ``flag``, ``dest``, ``kind``, ``default``, ``help`` (and ``choices``)."""
    return json.loads(OPTIONS_FILE.read_text())


def agent_names() -> tuple[str, ...]:
    """The registered agents' command-line names."""
    return tuple(sorted(options()))


def add_options(parser: argparse.ArgumentParser, title: str, described: list[dict[str, Any]]) -> None:
    """Add the described options to ``parser`` in a group named after the agent."""
    group = parser.add_argument_group(f"{title} hyperparameters (python -m benchmarks.rl --agent NAME --help)")
    for o in described:
        common = {"dest": o["dest"], "default": o["default"], "help": o["help"]}
        kind = o["kind"]
        if kind == "bool":
            group.add_argument(o["flag"], action=argparse.BooleanOptionalAction, **common)
        elif kind == "choice":
            group.add_argument(o["flag"], choices=o["choices"], **common)
        elif kind.startswith("list:"):
            item = kind.split(":", 1)[1]
            group.add_argument(o["flag"], type=_TYPES[item], nargs="*", metavar=item.upper(), **common)
        else:
            group.add_argument(o["flag"], type=_TYPES[kind], metavar=kind.upper(), **common)
