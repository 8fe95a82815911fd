"""The agent registry: command-line names of the :class:`~benchmarks.rl.agent.OffPolicyAgent` subclasses.

The runner, the command line and ``perf.py`` only go through this table, so a new agent is one module and one
``register`` call (here, for the project's own agents).
"""

from __future__ import annotations

from .agent import OffPolicyAgent

AGENTS: dict[str, type[OffPolicyAgent]] = {}


def register(name: str, agent: type[OffPolicyAgent]) -> type[OffPolicyAgent]:
    """Make ``agent`` available as ``--agent name``.

    Args:
        name: The command-line name.
        agent: An ``OffPolicyAgent`` subclass.

    Returns:
        ``agent``.

    Raises:
        ValueError: If ``agent`` is no ``OffPolicyAgent`` subclass or ``name`` is taken by another class.
    """
    if not (isinstance(agent, type) and issubclass(agent, OffPolicyAgent)):
        raise ValueError(f"`agent` must be an OffPolicyAgent subclass, got {agent!r}.")
    if AGENTS.get(name, agent) is not agent:
        raise ValueError(f"Agent name {name!r} is taken by {AGENTS[name].__name__}; choose another name.")
    AGENTS[name] = agent
    return agent


def agent_class(name: str) -> type[OffPolicyAgent]:
    """The agent registered as ``name``.

    Raises:
        ValueError: On an unknown name, listing the known ones.

    Example:
        >>> agent_class("sac").__name__
        'SAC'
    """
    if name not in AGENTS:
        raise ValueError(f"`agent` must be one of {sorted(AGENTS)}, got {name!r}.")
    return AGENTS[name]


def _register_builtin() -> None:
    from .bro import BRO
    from .dacer import DACER
    from .sac import SAC

    for name, agent in (("sac", SAC), ("bro", BRO), ("dacer", DACER)):
        register(name, agent)


_register_builtin()
