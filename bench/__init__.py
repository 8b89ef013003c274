"""Benchmarks: each prints a table with a baseline measured in the same run and the ratio."""

import os

# Benchmarks commit to real git repositories; a bare machine has no git identity.
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
                "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}


def use_git_identity() -> None:
    for key, value in GIT_IDENTITY.items():
        os.environ.setdefault(key, value)


def use_bytecode() -> None:
    """Time the command line as an installed package runs: from compiled bytecode (pip compiles a
    package when it installs it). A checkout run with PYTHONDONTWRITEBYTECODE set would otherwise
    compile every one of the reconciler's modules again in every process it starts."""
    import compileall
    from pathlib import Path

    import reconciler

    compileall.compile_dir(Path(reconciler.__file__).parent, quiet=1)
