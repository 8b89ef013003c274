"""The process's way out: `entry` runs the command line and then leaves at once.

A command that connected over SSH and opened the state database has 60,000 Python objects and
the C libraries of asyncssh, cryptography, pygit2 and pydantic loaded; the interpreter's normal
finalization (module teardown, garbage collection, each extension's own clean-up) takes about
as long as a one-shot rollback's whole SSH conversation. Everything the command owes is done by
then: its database writes are committed, its connections closed, its files written. So after
flushing what a person or a script is owed (the standard streams, the log handlers) and running
the registered exit functions (temporary files), the process ends with `os._exit`.

When a thread other than the main one is still alive, the interpreter's own exit runs instead:
it waits for that thread as Python promises.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from typing import NoReturn

from reconciler.cli.main import main

# CPython's own exit status when flushing standard output fails at shutdown (a closed pipe).
_FLUSH_FAILED = 120


def entry() -> NoReturn:
    """`reconciler ...` and `python -m reconciler ...`."""
    code = main()
    if threading.active_count() > 1:
        raise SystemExit(code)
    atexit._run_exitfuncs()
    logging.shutdown()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        code = code or _FLUSH_FAILED
    os._exit(code)
