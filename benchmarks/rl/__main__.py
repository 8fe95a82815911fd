"""``python -m benchmarks.rl ...``: see :mod:`benchmarks.rl.cli`."""

from .cli import main

if __name__ == "__main__":
    main()
