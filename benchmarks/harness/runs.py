"""Run folders keyed on their full settings: start, skip, resume or refuse, and mark how a run ended.

A run folder holds one run. ``run.json`` records the run's settings, their key (a hash of the settings) and its
status: ``running`` while it trains (also what a killed process leaves), ``interrupted`` (Ctrl-C), ``failed``
(an exception) or ``complete`` (written after ``summary.json``). :func:`begin` decides what a new attempt does:

- an empty or missing folder: a fresh run;
- the same settings, complete: skipped (its ``summary.json`` is returned), unless ``overwrite``;
- the same settings, not complete: continued from its last checkpoint with ``resume`` (started again if it has
  none), started again with ``overwrite``, else refused;
- other settings, or files without ``run.json``: refused (the message names what differs), unless ``overwrite``,
  which deletes the folder first.

So two runs' logs never share a folder, and a changed setting is never mistaken for a finished run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"
CHECKPOINT_FILE = "last.ckpt"
Status = Literal["running", "interrupted", "failed", "complete"]


@dataclass(frozen=True)
class RunControl:
    """What to do with a run folder that already holds a run (the ``--resume`` and ``--overwrite`` flags).

    Args:
        resume: Continue an incomplete run with the same settings from its last checkpoint.
        overwrite: Delete whatever the folder holds and start again.
        checkpoint_every: Periodic checkpoint interval (the benchmark's unit: environment steps, epochs);
            ``None``: the benchmark's default.
    """

    resume: bool = False
    overwrite: bool = False
    checkpoint_every: int | None = None

    def __post_init__(self) -> None:
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite exclude each other: --resume continues a run, --overwrite "
                             "starts it again.")  # fmt: skip
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ValueError(f"--checkpoint-every must be a positive integer, got {self.checkpoint_every}.")


@dataclass(frozen=True)
class Start:
    """The decision of :func:`begin`: ``fresh``, ``resume`` (from ``checkpoint``) or ``skip`` (with ``summary``)."""

    action: Literal["fresh", "resume", "skip"]
    checkpoint: Path | None = None
    summary: dict[str, Any] | None = None


class RunFolderError(ValueError):
    """The folder holds a run that this attempt must not touch without ``--resume`` or ``--overwrite``."""


def canonical(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` as JSON would read them back (paths as strings, tuples as lists), keys sorted."""
    return json.loads(json.dumps(settings, default=str, sort_keys=True))


def settings_key(settings: Mapping[str, Any]) -> str:
    """A 12-hex-digit hash of the settings: equal settings, equal key."""
    text = json.dumps(canonical(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def read_run(folder: Path) -> dict[str, Any] | None:
    """The folder's ``run.json``, or ``None``."""
    path = Path(folder) / RUN_FILE
    return json.loads(path.read_text()) if path.exists() else None


def is_complete(folder: Path) -> bool:
    """Whether the folder holds a finished run (``run.json`` says ``complete`` and ``summary.json`` exists)."""
    run = read_run(folder)
    return run is not None and run.get("status") == "complete" and (Path(folder) / SUMMARY_FILE).exists()


def differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``"name: old -> new"`` for every setting that differs (nested settings as ``a.b``)."""
    found = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            found += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return found


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1, allow_nan=True) + "\n")
    os.replace(tmp, path)  # atomic: an interruption leaves the old file or the new one, never half of one


def _set_status(folder: Path, status: Status) -> None:
    run = read_run(folder)
    if run is not None:
        run["status"] = status
        _write_json(Path(folder) / RUN_FILE, run)


def decide(folder: Path, settings: Mapping[str, Any], control: RunControl | None = None) -> Start:
    """What :func:`begin` will do with ``folder``, without changing anything (to check a whole grid first).

    Raises:
        RunFolderError: See :func:`begin`.
    """
    folder, control = Path(folder), control or RunControl()
    settings = canonical(settings)
    run = read_run(folder)
    if control.overwrite or not (folder.exists() and any(folder.iterdir())):
        return Start("fresh")
    if run is None:
        raise RunFolderError(
            f"{folder} holds files but no {RUN_FILE} (a run from before runs were keyed, or other files): pass "
            "--overwrite to replace them, or --out to write elsewhere."
        )
    if run["key"] != settings_key(settings):
        changed = "; ".join(differences(run["settings"], settings)) or "unknown"
        raise RunFolderError(
            f"{folder} holds a run with other settings ({changed}): pass --out to keep both, or --overwrite to "
            "replace it."
        )
    if is_complete(folder):
        return Start("skip", summary=read_summary(folder))
    if not control.resume:
        raise RunFolderError(
            f"{folder} holds an incomplete run of these settings (status {run['status']!r}): pass --resume to "
            "continue it from its last checkpoint, or --overwrite to start it again."
        )
    checkpoint = folder / CHECKPOINT_FILE
    return Start("resume", checkpoint=checkpoint) if checkpoint.exists() else Start("fresh")


def begin(folder: Path, settings: Mapping[str, Any], control: RunControl | None = None) -> Start:
    """Decide what this attempt does with ``folder`` (see the module docstring) and prepare it.

    For ``fresh`` the folder is emptied and its ``run.json`` says ``running``; for ``resume`` the folder is kept
    and ``run.json`` counts the resume; for ``skip`` nothing changes.

    Args:
        folder: The run's folder.
        settings: Everything that defines the run's result (JSON-serialisable; paths become strings).
        control: ``resume`` / ``overwrite`` (default: neither).

    Returns:
        The decision.

    Raises:
        RunFolderError: When the folder holds another run, or an incomplete one, and neither flag allows
            touching it; the message names the difference and both fixes.
    """
    folder, control = Path(folder), control or RunControl()
    start = decide(folder, settings, control)
    if start.action == "resume":
        run = read_run(folder)
        run["status"], run["resumes"] = "running", run.get("resumes", 0) + 1
        _write_json(folder / RUN_FILE, run)
    elif start.action == "fresh":
        if control.resume and read_run(folder) is not None:
            print(f"{folder}: incomplete run without a checkpoint yet, starting it again", file=sys.stderr)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        settings = canonical(settings)
        _write_json(folder / RUN_FILE, {"key": settings_key(settings), "status": "running", "resumes": 0,
                                        "settings": settings})  # fmt: skip
    return start


def finish(folder: Path, summary: Mapping[str, Any]) -> None:
    """Write ``summary.json`` (with the settings key), then mark the run complete."""
    folder = Path(folder)
    run = read_run(folder) or {}
    _write_json(folder / SUMMARY_FILE, {**summary, "settings_key": run.get("key"), "resumes": run.get("resumes", 0)})
    _set_status(folder, "complete")


def read_summary(folder: Path) -> dict[str, Any]:
    """The folder's ``summary.json``."""
    return json.loads((Path(folder) / SUMMARY_FILE).read_text())


@contextmanager
def attempt(folder: Path) -> Iterator[None]:
    """Around training: mark the run ``interrupted`` (Ctrl-C) or ``failed`` (an exception) and say how to go on.

    Lightning turns Ctrl-C into ``SystemExit(1)`` after its graceful shutdown. The exception is re-raised.
    """
    try:
        yield
    except BaseException as error:
        interrupted = isinstance(error, (KeyboardInterrupt, SystemExit))
        _set_status(Path(folder), "interrupted" if interrupted else "failed")
        has_checkpoint = (Path(folder) / CHECKPOINT_FILE).exists()
        how = "from its last checkpoint" if has_checkpoint else "from the start (no checkpoint was saved yet)"
        print(f"\n{folder}: run {'interrupted' if interrupted else 'failed'}; the same command with --resume "
              f"continues it {how}.", file=sys.stderr)  # fmt: skip
        raise


def check_out(path: Path, flag: str = "--out") -> None:
    """Raise a ``ValueError`` naming ``flag`` if ``path`` (or a folder above it) is a file, not a folder."""
    for part in (Path(path), *Path(path).parents):
        if part.exists() and not part.is_dir():
            raise ValueError(f"{flag} {path}: {part} is a file, not a folder; give a folder for the results.")
