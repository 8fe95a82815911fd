"""``python -m benchmarks.overhead ...``: see :mod:`benchmarks.overhead.cli`."""

from .cli import main

if __name__ == "__main__":
    main()
