"""What every benchmark command line shares: help that shows defaults, checked numbers, one-line usage errors.

This module imports nothing heavy (no torch, no Lightning), and the command lines build their parsers from it and
from other light modules only, so that ``--help`` prints at once; the training code is imported after parsing.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
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


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE``: a YAML file of settings, one key per flag (see :func:`with_config`)."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="YAML file of settings, one key per flag (batch_size: 64, methods: [vanilla, regrama], resume: true); "
        "flags given on the command line win",
    )


def with_config(parser: argparse.ArgumentParser, argv: list[str] | None, check_keys: bool = True) -> list[str]:
    """``argv`` with the settings of its ``--config FILE`` written out as flags in front (the command line wins).

    Keys are flag names with ``_`` or ``-`` (``batch_size`` or ``batch-size``); a list is the flag's values, ``true``
    gives an on/off flag, ``false`` its ``--no-`` form where the flag has one (else nothing). Every value then
    goes through the flag's own checks.

    Args:
        parser: The command's parser (its flags, its usage line for errors).
        argv: The command line (``None``: ``sys.argv[1:]``).
        check_keys: Refuse keys that are no flag of ``parser`` (off for a first pass that only looks for a key
            which chooses the parser, like ``agent``).

    Returns:
        The command line to parse.

    Raises:
        SystemExit: A usage error naming ``--config`` for a missing or malformed file or an unknown key.

    Example:
        >>> p = make_parser("prog", None)
        >>> _ = p.add_argument("--batch-size", type=int)
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "run.yaml"
        >>> _ = path.write_text("batch_size: 64")
        >>> with_config(p, ["--config", str(path), "--batch-size", "32"])
        ['--batch-size', '64', '--batch-size', '32']
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--config", default=None)
    known, rest = first.parse_known_args(argv)
    if known.config is None:
        return argv
    import yaml

    try:
        settings = yaml.safe_load(Path(known.config).read_text())
    except (OSError, yaml.YAMLError) as error:
        parser.error(f"--config {known.config}: {' '.join(str(error).split())}")
    if not isinstance(settings, dict):
        parser.error(f"--config {known.config}: expected a mapping of flag names to values, got {settings!r}")
    flags = {s for action in parser._actions for s in action.option_strings}
    tokens: list[str] = []
    for key, value in settings.items():
        flag = "--" + str(key).replace("_", "-")
        if check_keys and (flag not in flags or flag == "--config"):
            parser.error(f"--config {known.config}: unknown setting {key!r} (there is no flag {flag})")
        if value is True:
            tokens.append(flag)
        elif value is False:
            tokens += [f"--no-{flag[2:]}"] if f"--no-{flag[2:]}" in flags else []
        elif isinstance(value, list):
            tokens += [flag, *map(str, value)]
        else:
            tokens += [flag, str(value)]
    return tokens + rest
