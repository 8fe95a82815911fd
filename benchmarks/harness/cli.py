"""What every benchmark command line shares: help that shows defaults, checked numbers, one-line usage errors.

This module imports nothing heavy (no torch, no Lightning), and the command lines build their parsers from it and
from other light modules only, so that ``--help`` prints at once; the training code is imported after parsing.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's line breaks (examples) and appends ``(default: ...)`` to a flag's help.

    Not where it says nothing: a default of ``None`` (the help says what happens then) or an on/off switch
    (``--resume``: off unless given).
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or (action.nargs == 0 and action.default is False):
            return action.help
        return super()._get_help_string(action)


def make_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with :class:`HelpFormatter`.

    Args:
        prog: The command as typed (``python -m benchmarks.rl``).
        description: Text above the flags (usually the module docstring).

    Returns:
        The parser.
    """
    return argparse.ArgumentParser(prog=prog, description=plain_text(description), formatter_class=HelpFormatter)


def plain_text(text: str | None) -> str | None:
    """A docstring as a terminal shows it: no reStructuredText markup (````code````, ``:mod:`~a.b```).

    Example:
        >>> plain_text("Run ``python -m x``; see :mod:`~benchmarks.rl.cli`.")
        'Run python -m x; see cli.'
    """
    if text is None:
        return None
    return re.sub(r":\w+:`~?(?:[\w]+\.)*([\w]+)`", r"\1", text).replace("``", "")


def _number(kind: Callable[[str], T], test: Callable[[T], bool], what: str) -> Callable[[str], T]:
    def parse(text: str) -> T:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


positive_int = _number(int, lambda v: v > 0, "a positive integer")
non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: v > 0, "a number > 0")
non_negative_float = _number(float, lambda v: v >= 0, "a number >= 0")
fraction = _number(float, lambda v: 0 < v <= 1, "a number in (0, 1]")


@contextmanager
def usage_errors(
    parser: argparse.ArgumentParser, *kinds: type[Exception], aliases: dict[str, str] | None = None
) -> Iterator[None]:
    """Turn ``ValueError`` (or ``kinds``) raised by settings checks into ``parser.error``.

    That prints the usage line and a one-line message and exits with status 2, as for any other bad argument.
    Wrap only code that checks arguments, never training, so that a real failure keeps its traceback. The message
    names flags, not parameters (:func:`as_flags`, with ``aliases``).
    """
    caught = kinds or (ValueError,)
    try:
        yield
    except caught as error:
        parser.error(as_flags(parser, " ".join(str(error).split()), aliases))


def as_flags(parser: argparse.ArgumentParser, message: str, aliases: dict[str, str] | None = None) -> str:
    """``message`` with every backquoted parameter that is also a flag of ``parser`` written as that flag.

    ```` `name` ```` becomes ``--name``, ```` `name=value` ```` becomes ``--name value``; ``aliases`` renames
    parameters whose flag has another name first.

    Example:
        >>> p = make_parser("prog", None)
        >>> _ = p.add_argument("--target-tau")
        >>> as_flags(p, "`target_tau` must be in (0, 1], got 5.0.")
        '--target-tau must be in (0, 1], got 5.0.'
        >>> as_flags(p, "`polyak=5` is too big; lower `polyak`.", aliases={"polyak": "target_tau"})
        '--target-tau 5 is too big; lower --target-tau.'
    """
    flags = {s for action in parser._actions for s in action.option_strings}  # argparse keeps no public list

    def flag(match: re.Match[str]) -> str:
        name = "--" + (aliases or {}).get(match.group(1), match.group(1)).replace("_", "-")
        value = f" {match.group(2)}" if match.group(2) is not None else ""
        return name + value if name in flags else match.group(0)

    return re.sub(r"`(\w+)(?:=([^`]*))?`", flag, message)


def flags_without_help(parser: argparse.ArgumentParser) -> list[str]:
    """Every flag or positional of ``parser`` and its subcommands that has no help text (for tests)."""
    missing = []
    for action in parser._actions:  # argparse exposes no public list of actions
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += [f"{name} {flag}" for flag in flags_without_help(sub)]
        elif not action.help and not isinstance(action, argparse._HelpAction):
            missing.append("/".join(action.option_strings) or action.dest)
    return missing


def command(package: str | None, module: str = "") -> str:
    """The command as the user typed it: ``python -m <package>[.<module>]``.

    The benchmarks install as ``regrama_benchmarks`` and run as ``benchmarks`` from the repository root; pass
    ``__package__`` so that usage lines and errors name the one in use.

    Example:
        >>> command("benchmarks.rl", "plot")
        'python -m benchmarks.rl.plot'
    """
    return "python -m " + ".".join(p for p in (package or "benchmarks", module) if p)
