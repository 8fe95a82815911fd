"""``python -m benchmarks.cifar100_continual run|plot ...``: see :mod:`benchmarks.cifar100_continual.cli`."""

from .cli import main

if __name__ == "__main__":
    main()
