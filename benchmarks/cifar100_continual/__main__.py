"""``python -m benchmarks.cifar100_continual run|plot ...``."""

from benchmarks.cifar100_continual.cli import main

if __name__ == "__main__":
    main()
