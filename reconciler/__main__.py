"""`python -m reconciler ...` runs the command line."""

from reconciler.cli.entry import entry

entry()
