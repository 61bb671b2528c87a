# Everything installs into .venv, created with whichever python3 (3.11+) is on the PATH.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck system-deps clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,loadtest]'
	touch $(STAMP)

## run: start the server (offline model, no configuration needed)
run: $(STAMP)
	$(BIN)/quart-sse $(ARGS)

## lint: ruff
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## typecheck: mypy --strict
typecheck: $(STAMP)
	$(BIN)/mypy

## system-deps: redis-server and chromium for the Redis and browser tests (apt-get, as root)
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing$$missing (apt-get)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else \
			echo "note:$$missing missing and not root: the tests that need them are skipped"; \
		fi; \
	fi

## test: lint, types, then the whole test suite, with its coverage (server processes included)
COVERAGE_FLOOR ?= 90
test: system-deps lint typecheck
	rm -f .coverage .coverage.*
	$(BIN)/python -m pytest --cov --cov-report=term:skip-covered --cov-fail-under=$(COVERAGE_FLOOR) $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache

.PHONY: procfile requirements

## procfile: the Procfile's web line under honcho, as a PaaS runs it, on $PORT (default 8000)
PORT ?= 8000
procfile: $(STAMP)
	exec env PORT=$(PORT) PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start web

## requirements: regenerate requirements.txt (what a PaaS installs) after pyproject.toml's dependencies change
requirements: $(STAMP)
	echo . | $(BIN)/uv pip compile - --universal --python-version "$$(cat .python-version)" \
		--custom-compile-command "make requirements" --quiet --output-file requirements.txt
