"""Benchmarks and demos for regrama-lightning (run them as ``python -m benchmarks.<name>``)."""
