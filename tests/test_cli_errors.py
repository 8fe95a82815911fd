"""Every usage error of the benchmark commands, as a user meets it: a real process, exit status 2, one line that
names the flag, no traceback, and nothing left on disk.

The processes (each imports torch and Lightning: seconds apiece) run a few at a time, then each case is checked.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
RL = ["-m", "benchmarks.rl", "--env", "Pendulum-v1", "--steps", "300", "--learning-starts", "100"]
CIFAR = ["-m", "benchmarks.cifar100_continual", "run", "--data-dir", "data", "--no-verify-integrity"]
CIFAR += ["--max-classes", "4", "--initial-classes", "2", "--accelerator", "cpu"]
CIFAR_PROG = "python -m benchmarks.cifar100_continual run: error: "
# A proxy on a closed local port: a download fails as it does offline, on any machine.
OFFLINE = {"https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9", "no_proxy": ""}
GPU = torch.cuda.is_available()  # then --accelerator gpu is no error

CASES = {
    "rl-target-tau": ([*RL, "--target-tau", "5"], "--target-tau must be in (0, 1], got 5.0"),
    "rl-batch-size": ([*RL, "--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
    "rl-networks": ([*RL, "--networks", "critc"], "--networks ['critc'] are not networks of SAC; choose among"),
    "rl-out-file": ([*RL, "--out", "a_file"], "--out a_file: a_file is a file, not a folder"),
    "rl-config": ([*RL, "--config", "missing.yaml"], "--config missing.yaml: [Errno 2] No such file or directory"),
    "rl-wandb": ([*RL, "--logger", "wandb"], "--logger wandb needs the wandb package, which is not installed here"),
    "rl-gpu": ([*RL, "--accelerator", "gpu"], "--accelerator gpu with --devices 1 cannot run on this machine"),
    "cifar-out-file": ([*CIFAR, "--out", "a_file"], "--out a_file: a_file is a file, not a folder"),
    "cifar-val-per-class": ([*CIFAR, "--val-per-class", "30"], "--val-per-class 30 holds out every training image"),
    "cifar-max-classes": ([*CIFAR, "--max-classes", "9"], "--max-classes 9 but the data has only 5 classes"),
    "cifar-wandb": ([*CIFAR, "--logger", "wandb"], "--logger wandb needs the wandb package, which is not installed"),
    "cifar-gpu": ([*CIFAR, "--accelerator", "gpu"], "--accelerator gpu with --devices 1 cannot run on this machine"),
    "cifar-download": (
        ["-m", "benchmarks.cifar100_continual", "run", "--data-dir", "new/data", "--download", "--accelerator", "cpu"],
        "--download could not fetch https://www.cs.toronto.edu/",
    ),
}


def files(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Each case run in a folder of its own (5 CIFAR-format classes of 20 images, a plain file ``a_file``)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_cifar100_continual import write_cifar100

    folders = {}
    for name in CASES:
        if (GPU and name.endswith("-gpu")) or (name.endswith("-wandb") and importlib.util.find_spec("wandb")):
            continue
        folder = folders[name] = tmp_path_factory.mktemp(name)
        write_cifar100(folder / "data")
        (folder / "a_file").write_text("not a folder")

    def run(name):
        before = files(folders[name])
        env = {**os.environ, "PYTHONPATH": str(ROOT), **(OFFLINE if name == "cifar-download" else {})}
        done = subprocess.run([sys.executable, *CASES[name][0]], cwd=folders[name], env=env, capture_output=True,
                              text=True, timeout=600)  # fmt: skip
        return done, before == files(folders[name])

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(folders, pool.map(run, folders), strict=True))


@pytest.mark.parametrize("name", list(CASES))
def test_usage_error(results, name):
    if name not in results:
        pytest.skip("no error here: a GPU is there (--accelerator gpu), or wandb is installed (--logger wandb)")
    done, unchanged = results[name]
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and not done.stdout.strip(), done.stderr[-3000:]
    assert lines[0].startswith("usage: ") and all(line.startswith((" ", "usage: ")) for line in lines[:-1]), lines
    prog = CIFAR_PROG if name.startswith("cifar") else "python -m benchmarks.rl: error: "
    assert lines[-1].startswith(prog) and CASES[name][1] in lines[-1], lines[-1]  # one line, naming the flag
    assert unchanged  # no run folder, no data folder, nothing half-made
