# The two front-door commands: `make demo` and `make test`. Each creates .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint docs bench clean

# Tested versions come from requirements.lock; the project itself is installed without resolving again.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

demo: $(STAMP)
	$(PY) -m reconciler.cli.demo

lint: $(STAMP)
	$(PY) -m ruff check reconciler tests bench docgen
	$(PY) -m mypy reconciler docgen
	$(VENV)/bin/lint-imports

# The documentation site (docs/, mkdocs.yml) into site/; --strict: a broken link or anchor fails.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

# System parts first (sshd, chromium, nginx, gpg: installed when root, else named), then lint, then tests.
test:
	./.ci/deps
	$(MAKE) lint
	$(MAKE) docs
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) site state/demo state/reconciler.db state/logs
