# The two front-door commands: `make demo` and `make test`. Each creates .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean

# Tested versions come from requirements.lock; the project itself is installed without resolving again.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

demo: $(STAMP)
	$(PY) -m reconciler.cli.demo

lint: $(STAMP)
	$(PY) -m ruff check reconciler tests bench
	$(PY) -m mypy reconciler
	$(VENV)/bin/lint-imports

# System parts first (sshd, chromium, nginx, gpg: installed when root, else named), then lint, then tests.
test:
	./.ci/deps
	$(MAKE) lint
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) state/demo state/reconciler.db state/logs
