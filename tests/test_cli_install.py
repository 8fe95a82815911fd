"""The benchmarks as installed: under their own package name, runnable from any directory (README commands)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The project built as a wheel (from its tracked sources) and unpacked into a folder outside the checkout."""
    tmp = tmp_path_factory.mktemp("install")
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                            text=True)  # fmt: skip
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    source = tmp / "source"
    with tarfile.open(tmp / "src.tar", "w") as tar:
        for name in listed.stdout.split():
            if not name.startswith(("benchmarks/results/", "tests/")) and (ROOT / name).is_file():
                tar.add(ROOT / name, arcname=name)
    with tarfile.open(tmp / "src.tar") as tar:
        tar.extractall(source, filter="data")
    wheels = tmp / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source), "-w"]
    subprocess.run([*build, str(wheels)], check=True, capture_output=True, cwd=tmp)
    site = tmp / "site"
    with zipfile.ZipFile(next(wheels.glob("*.whl"))) as wheel:
        wheel.extractall(site)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}  # the installed copy first; the checkout is not on the path
    return site, elsewhere, env


def run(args, installed, **kwargs):
    _, elsewhere, env = installed
    return subprocess.run([sys.executable, *args], cwd=elsewhere, env=env, capture_output=True, text=True, **kwargs)


def test_the_benchmarks_install_under_their_own_name_only(installed):
    site = installed[0]
    assert (site / "regrama_benchmarks" / "harness" / "runs.py").exists()
    assert (site / "regrama_benchmarks" / "rl" / "agent_options.json").exists()  # package data: --help needs it
    assert not (site / "benchmarks").exists()  # no top-level name that could clash with a user's package
    done = run(["-c", "import benchmarks"], installed)
    assert "No module named 'benchmarks'" in done.stderr


def test_every_readme_command_runs_outside_the_checkout(installed):
    modules = sorted(set(re.findall(r"python -m (regrama_benchmarks[\w.]*)", README)))
    assert {
        "regrama_benchmarks.rl",
        "regrama_benchmarks.cifar100_continual",
        "regrama_benchmarks.random_labels",
    } <= set(modules)
    for module in modules:
        done = run(["-m", module, "--help"], installed)
        assert done.returncode == 0, (module, done.stderr[-500:])
        assert f"usage: python -m {module}" in done.stdout  # the usage line names the command as typed
    # A real (tiny) run, and the README's Python example of the RL pieces, from outside the checkout.
    tiny = ["--phases", "2", "--epochs-per-phase", "1", "--samples", "32", "--width", "8", "--methods", "regrama"]
    done = run(["-m", "regrama_benchmarks.random_labels", *tiny], installed)
    assert done.returncode == 0 and "regrama" in done.stdout, done.stderr[-500:]
    written = installed[1] / "runs" / "random_labels"  # by default: the CSV, its figure and the table over seeds
    assert {p.name for p in written.iterdir()} >= {"random_labels.csv", "random_labels.png", "random_labels_seeds.csv"}
    (pieces,) = [b for b in re.findall(r"```python\n(.*?)```", README, re.S) if "regrama_benchmarks.rl" in b]
    done = run(["-c", pieces], installed, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("600 401"), done.stderr[-500:]
