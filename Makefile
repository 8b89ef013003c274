# The two front-door commands: `make demo` and `make test`. Each creates .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: $(STAMP)
	$(PY) -m reconciler.cli.demo

lint: $(STAMP)
	$(PY) -m ruff check reconciler tests bench
	$(PY) -m mypy reconciler
	$(VENV)/bin/lint-imports

# Tests commit to real git repositories: give them an identity on a machine without one.
test: export GIT_AUTHOR_NAME     ?= reconciler-test
test: export GIT_AUTHOR_EMAIL    ?= test@localhost
test: export GIT_COMMITTER_NAME  ?= reconciler-test
test: export GIT_COMMITTER_EMAIL ?= test@localhost

# System parts first (sshd, chromium, nginx, gpg: installed when root, else named), then lint, then tests.
test:
	./.ci/deps
	$(MAKE) lint
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) state/demo state/reconciler.db state/logs
