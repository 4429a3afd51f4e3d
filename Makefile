# Two commands do all their own set-up on a fresh machine: `make test` and `make serve`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DATA ?= ../shared/data

.PHONY: install browser test lint format serve image check_image clean

# uv installs the same ranges from PyPI in less than half of pip's time (23-30 s against 56 s
# on a fresh clone here, uv's own download included); pip remains the fallback. Bytecode is
# compiled at install, as pip does: without it the suite's first imports compiled it, in
# every process at once (the first `make test` after a bare uv install: 580 s of pytest and
# 1,101 CPU-s, against 497 s and 928 CPU-s on the same clone once compiled).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	( $(PY) -m pip install -q 'uv>=0.9,<1' && \
	  $(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -e '.[dev]' ) || \
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Debian's headless Chromium for the web page's tests (Playwright drives it; it downloads no
# browser of its own). Without root or apt the page's tests skip and say why.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; } || \
	  echo "make: could not install chromium; the web page's tests will skip"; \
	else echo "make: chromium is missing and needs root to install; the web page's tests will skip"; fi

browser: $(CHROMIUM)

# Three workers on two cores: a third of the suite waits on servers and subprocesses, so a
# third worker fills the gaps (10 min 37 s against 11 min 49 s with two, here).
# The venv and the browser are set up side by side: uv's install and apt's download and
# unpacking take 23 s and 37 s alone on a fresh machine here, and wait on different things.
test:
	@$(MAKE) --no-print-directory -j2 install browser
	$(PY) -m pytest -q -ra -n 3 --dist loadfile --no-loadscope-reorder tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Serve ./models on gRPC 8500 / REST 8501; installs the pretrained catalogue (pretrained/) first.
serve: $(STAMP)
	$(PY) -m catalogue.bootstrap --models models
	$(VENV)/bin/zoo serve --port 8500 --rest_api_port 8501 --model_config_file models/models.config --model_config_file_poll_wait_seconds 30 --enable_web_ui

# The server's image (podman or docker, whichever is present): BASE=... picks the base image.
image:
	bash -c 'source scripts/container_env.sh && build_image'

# Builds the image on a local Debian base, runs it with the pretrained zoo, and checks it from
# the host (every family over REST, gRPC and the Open Inference Protocol, probes, non-root,
# read-only root, SIGTERM); too slow for `make test`.
check_image: $(STAMP)
	bash scripts/check_image.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
