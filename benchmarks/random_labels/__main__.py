"""``python -m benchmarks.random_labels ...``: see :mod:`benchmarks.random_labels.cli`."""

from .cli import main

if __name__ == "__main__":
    main()
