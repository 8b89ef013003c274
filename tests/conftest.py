"""Shared fixtures. The SSH fixtures start a real OpenSSH sshd on 127.0.0.1 (tests/sshd.py)."""

from __future__ import annotations

import os

from tests.sshd import sshd, sshd_session  # noqa: F401

# Tests commit to real git repositories; a bare CI machine has no git identity.
for _key, _value in {
    "GIT_AUTHOR_NAME": "reconciler-tests", "GIT_AUTHOR_EMAIL": "tests@localhost",
    "GIT_COMMITTER_NAME": "reconciler-tests", "GIT_COMMITTER_EMAIL": "tests@localhost",
}.items():
    os.environ.setdefault(_key, _value)
