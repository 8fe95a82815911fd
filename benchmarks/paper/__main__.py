"""``python -m benchmarks.paper``."""

from .cli import main

main()
