"""Moved to tests.support (repos, config). This shim keeps modules outside that refactor
importing (tests/faults/test_faults.py, tests/test_facts.py, tests/test_mirror.py); new code
imports tests.support."""

from tests.support.config import reconcile, settings_for
from tests.support.repos import app_commit, git, make_app_repo, make_decl_repo, remove_site, toml_value, write_site

__all__ = ["app_commit", "git", "make_app_repo", "make_decl_repo", "reconcile", "remove_site", "settings_for",
           "toml_value", "write_site"]
