"""The command line: the parser and dispatch (`main`), the table of commands (`commands`, one
module per command), what they open (`invocation`, `look`, `state`, `applied`, `acting`,
`passes`, `follow`), terminal rendering, live progress, bash completion, nginx snippets and the
demo. Thin: each command calls the engine."""

from reconciler.cli.main import main

__all__ = ["main"]
