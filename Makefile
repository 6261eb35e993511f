# Two commands set everything up on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test lint openapi bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml scripts/install.sh | $(BIN)/python
	sh scripts/install.sh $(BIN)/python
	touch $@

$(VENV)/.installed-test: pyproject.toml scripts/install.sh | $(BIN)/python
	sh scripts/install.sh $(BIN)/python test
	touch $@ $(VENV)/.installed

serve: $(VENV)/.installed
	$(BIN)/difference-finder serve --host $(HOST) --port $(PORT)

test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .

openapi: $(VENV)/.installed
	$(BIN)/python -m service.openapi > openapi/openapi.json

bench: $(VENV)/.installed-test
	$(BIN)/python -m benchmarks.quality
	$(BIN)/python -m benchmarks.speed

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
