"""The benchmark scripts run end to end on tiny settings (their timings and learning curves are not asserted)."""

import csv
import json
import re
from pathlib import Path

import pytest

from benchmarks.harness import style
from benchmarks.overhead import cli as overhead
from benchmarks.overhead import timing as overhead_timing
from benchmarks.random_labels import cli as random_labels
from benchmarks.random_labels.fit import PhaseRow
from benchmarks.random_labels.plot import draw_phases

TINY = ["--phases", "3", "--epochs-per-phase", "2", "--samples", "96", "--width", "16", "--batch-size", "32"]


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_random_label_demo_writes_one_row_per_method_and_phase_and_is_deterministic(tmp_path):
    args = [*TINY, "--reset-every", "2", "--grama-tau", "0.5", "--redo-tau", "0.5"]
    random_labels.main([*args, "--seeds", "0", "1", "--out", str(tmp_path / "a.csv")])
    random_labels.main([*args, "--methods", "regrama", "--out", str(tmp_path / "b.csv")])
    assert (tmp_path / "a.png").stat().st_size > 10_000  # the figure, next to the CSV
    both = _rows(tmp_path / "a.csv")
    expected = [(m, s, p) for m in random_labels.METHODS for s in (0, 1) for p in range(3)]
    assert [(r["method"], int(r["seed"]), int(r["phase"])) for r in both] == expected
    assert [r["accuracy"] for r in both if r["seed"] == "0"] != [r["accuracy"] for r in both if r["seed"] == "1"]
    rows = [r for r in both if r["seed"] == "0"]
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)
    assert all(int(r["reset"]) == 0 for r in rows if r["method"] == "vanilla")
    assert sum(int(r["reset"]) for r in rows if r["method"] == "regrama") > 0  # tau=0.5 flags neurons
    # Same seed, same result: the regrama rows of a second, separate run are identical.
    assert [r for r in rows if r["method"] == "regrama"] == _rows(tmp_path / "b.csv")
    # The table over seeds next to the CSV: per method the last phase's accuracy over the two seeds, whose
    # 95% percentile bootstrap interval spans both values.
    # The figure: every method in its colour of every plot.
    phase_rows = [PhaseRow(r["method"], int(r["phase"]), float(r["accuracy"]), float(r["grama"]), float(r["dormant"]),
                           int(r["reset"]), float(r["rank"]), int(r["seed"])) for r in both]  # fmt: skip
    ax = draw_phases(phase_rows).axes[0]
    colours = {line.get_label(): line.get_color() for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert colours == {style.label(m): style.color(m) for m in random_labels.METHODS}
    table = _rows(tmp_path / "a_seeds.csv")
    assert [r["method"] for r in table] == list(random_labels.METHODS) and {r["seeds"] for r in table} == {"2"}
    for row in table:
        last = [float(r["accuracy"]) for r in both if r["method"] == row["method"] and r["phase"] == "2"]
        assert float(row["last_acc_mean"]) == pytest.approx(sum(last) / 2)
        assert (float(row["last_acc_ci_low"]), float(row["last_acc_ci_high"])) == (min(last), max(last))


def test_overhead_gate_runs_the_callback_on_every_other_step_only(tmp_path):
    out = tmp_path / "overhead.json"
    overhead.main(["--models", "mlp", "--configs", "grama-weight@1", "--pairs", "4", "--warmup", "2", "--rounds", "1",
                   "--out", str(out)])  # fmt: skip
    results = json.loads(out.read_text())["results"]
    assert [r["config"] for r in results] == ["bare", "grama-weight@1"]
    assert all(r["pairs"] + r["dropped"] == 4 for r in results)

    inner = overhead_timing.CONFIGS["grama-weight@1"]()
    pairs = overhead_timing.time_one("mlp", inner, overhead_timing.make_pool("mlp", 0), warmup=2, pairs=3, seed=0)
    assert len(pairs) == 3
    assert inner._steps == [4]  # 8 batches, the even ones "on": the callback stepped only on those


def test_overhead_rejects_bad_arguments():
    with pytest.raises(SystemExit):
        overhead.parse_args(["--pairs", "1"])


def test_benchmarks_import_each_other_relatively_so_that_they_run_under_their_installed_name():
    # Installed as regrama_benchmarks (setup.py), run as benchmarks from the repository root: an absolute
    # `benchmarks.` import would load a second copy of the package, or fail outside the checkout.
    root = Path(__file__).resolve().parents[1] / "benchmarks"
    absolute = re.compile(r"^\s*(from|import)\s+benchmarks\b", re.M)
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py") if absolute.search(p.read_text())]
    assert not offenders
    packages = {p.parent.name for p in root.glob("*/__init__.py")}
    assert {"harness", "rl", "cifar100_continual", "random_labels", "overhead"} <= packages


def test_the_csv_logger_writes_one_row_per_step_and_overwrites_nothing(tmp_path):
    import csv

    from benchmarks.harness.csv_logger import StepCSVLogger

    logger = StepCSVLogger(tmp_path, name="run", version=0, flush_logs_every_n_steps=3)
    logger.log_metrics({"train/loss": 1.0}, step=5)
    logger.log_metrics({"grama/ratio": 0.5}, step=5)  # joins step 5's row
    logger.log_metrics({"train/episode_return": -3.0}, step=7)
    logger.log_metrics({"train/episode_return": -4.0}, step=7)  # a second episode at step 7: its own row
    # Three rows pending: those before step 7 are written, step 7's stay open for more of its values.
    path = tmp_path / "run" / "version_0" / "metrics.csv"
    assert len(path.read_text().splitlines()) == 2
    logger.log_metrics({"dormant/ratio": 0.25}, step=7)
    logger.save()
    with path.open(newline="") as f:
        rows = [{k: v for k, v in row.items() if v} for row in csv.DictReader(f)]
    assert rows == [
        {"step": "5", "train/loss": "1.0", "grama/ratio": "0.5"},
        {"step": "7", "train/episode_return": "-3.0", "dormant/ratio": "0.25"},
        {"step": "7", "train/episode_return": "-4.0"},
    ]


def test_the_seed_table_leaves_out_missing_values_and_says_so():
    from benchmarks.harness.seed_table import Metric, format_seed_table, seed_rows

    runs = [
        {"method": "vanilla", "ret": 10.0, "ratio": 0.5},
        {"method": "vanilla", "ret": 20.0, "ratio": None},  # never measured
        {"method": "vanilla", "ret": 60.0, "ratio": float("nan")},
        {"method": "vanilla", "ret": 30.0, "ratio": 0.25},
        {"method": "regrama", "ret": 7.0, "ratio": None},
    ]
    metrics = [Metric("ret", "return", 1, iqm=True), Metric("ratio", "ratio", 2)]
    vanilla, regrama = seed_rows(runs, metrics)
    assert (vanilla["seeds"], vanilla["ret_mean"], vanilla["ret_seeds"]) == (4, 30.0, 4)
    assert vanilla["ret_iqm"] == pytest.approx((20.0 + 30.0) / 2)  # the middle half of 10, 20, 30, 60
    assert (vanilla["ratio_mean"], vanilla["ratio_seeds"]) == (0.375, 2)
    assert regrama["ratio_mean"] is None and regrama["ratio_seeds"] == 0
    lines = format_seed_table([vanilla, regrama], metrics).splitlines()
    assert lines[0].split() == ["method", "seeds", "return", "return", "IQM", "ratio"]
    assert "30.0 [" in lines[1] and "0.38 [0.25, 0.50]" in lines[1]
    assert lines[2].split()[:4] == ["regrama", "1", "7.0", "7.0"]  # one seed: the value, no interval
    assert lines[2].endswith("not measured")
    assert lines[3] == "vanilla: ratio of 2 of 4 seeds (the others measured none)"


def test_the_benchmarks_examples_are_collected_as_doctests():
    import tomllib

    config = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    options = config["tool"]["pytest"]["ini_options"]
    assert "benchmarks" in options["testpaths"] and "--doctest-modules" in options["addopts"]


def _relative_imports(root):
    """Module -> the benchmark modules it imports (at any level: lazy and type-only imports count too)."""
    import ast

    def name(path):
        parts = path.relative_to(root.parent).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    modules = {name(p): p for p in root.rglob("*.py")}
    graph = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
                found |= {t for t in [target, *(f"{target}.{a.name}" for a in node.names)] if t in modules}
        graph[module] = found - {module}
    return graph


def test_no_benchmark_module_imports_one_that_imports_it_back():
    graph = _relative_imports(Path(__file__).resolve().parents[1] / "benchmarks")
    assert graph["benchmarks.random_labels.cli"] >= {"benchmarks.random_labels.fit"}  # the graph sees lazy imports

    def reaches(start, goal, seen):
        return any(n == goal or (n not in seen and not seen.add(n) and reaches(n, goal, seen)) for n in graph[start])

    circles = sorted(m for m in graph if reaches(m, m, set()))
    assert not circles  # e.g. random_labels.fit <-> cli, overhead.timing <-> cli before the layout change


def test_each_method_list_is_defined_once():
    from benchmarks.cifar100_continual.config import METHODS as CIFAR
    from benchmarks.harness.methods import method_names
    from benchmarks.rl.methods import METHODS as RL

    assert (tuple(RL), tuple(CIFAR), tuple(random_labels.METHODS)) == tuple(
        tuple(method_names(b)) for b in ("rl", "cifar100_continual", "random_labels")
    )
    # No benchmark writes its list out (paper/ picks the methods of each of the paper's experiments from these).
    root = Path(__file__).resolve().parents[1] / "benchmarks"
    literal = re.compile(r"^METHODS\s*(:[^=]*)?=\s*[\[\(\{]", re.M)  # a list written out, not method_names(...)
    written = [str(p.relative_to(root)) for p in root.rglob("*.py") if literal.search(p.read_text())]
    assert [p for p in written if not p.startswith("paper/")] == ["harness/methods.py"]
