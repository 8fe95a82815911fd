"""Package list: ``regrama_lightning`` as is, and ``benchmarks/`` installed as ``regrama_benchmarks``.

A top-level package named ``benchmarks`` could clash with a user's own; installed under a name of its own, the
benchmarks run from any directory (``python -m regrama_benchmarks.rl``), while ``python -m benchmarks.rl`` keeps
working from the repository root (the benchmarks import each other relatively, so either name works).
"""

from setuptools import find_packages, setup

core = find_packages(include=["regrama_lightning", "regrama_lightning.*"])
bench = [
    "regrama_benchmarks" + name[len("benchmarks") :] for name in find_packages(include=["benchmarks", "benchmarks.*"])
]
setup(packages=core + bench, package_dir={"regrama_benchmarks": "benchmarks"})
