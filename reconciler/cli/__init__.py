"""The command line: argument parsing and dispatch (`main`), terminal rendering, live
progress, bash completion, nginx snippets and the demo. Thin: each command calls the engine."""

from reconciler.cli.main import main

__all__ = ["main"]
