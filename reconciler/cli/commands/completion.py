"""`reconciler completion bash`: print the bash completion script (cli.completion writes it)."""

from __future__ import annotations

import argparse

from reconciler.cli.commands import names
from reconciler.cli.completion import bash_script
from reconciler.cli.invocation import Invocation


def handle(invocation: Invocation, args: argparse.Namespace) -> int:
    print(bash_script(names()))
    return 0
