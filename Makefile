# Two commands do all their own set-up on a fresh machine: `make test` and `make serve`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DATA ?= ../shared/data

.PHONY: install test lint format serve clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -ra -n 2 --dist loadfile tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Serve ./models on gRPC 8500 / REST 8501; installs the pretrained catalogue (pretrained/) first.
serve: $(STAMP)
	$(PY) -m training.bootstrap --models models
	$(VENV)/bin/zoo serve --port 8500 --rest_api_port 8501 --model_config_file models/models.config --model_config_file_poll_wait_seconds 30 --enable_web_ui

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
