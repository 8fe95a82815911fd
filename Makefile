# Set-up is idempotent: the virtual environment is created once and the project (re)installed into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch/torchvision pinned to the releases this project is tested with (served from the machine's wheel cache).
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test lint format install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml setup.py
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[bench,dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python -m benchmarks.rl.demo

test: install lint
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV)
