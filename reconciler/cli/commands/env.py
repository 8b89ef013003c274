"""`reconciler env keys|set|edit D`: a site's encrypted environment (sites.d/D.env.age).

`keys` prints the variable names (never a value). `set D KEY=VALUE...` and `edit D` decrypt the
file at the branch tip with `age_identity_file`, change it, encrypt it again to every key of
`.reconciler/recipients` and commit it, the person running the command as its author; the
reconciler then writes it to shared/.env on every server of the site. `edit` works on a private
copy (0600, in a 0700 directory) that is removed whatever happens; an editor that fails, or an
unchanged file, commits nothing (like `sops`)."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from reconciler.cli.acting import act
from reconciler.cli.invocation import Invocation
from reconciler.cli.person import person
from reconciler.core import site_env
from reconciler.engine import env_edits
from reconciler.engine.converge import Reconciler
from reconciler.errors import ReconcilerError


class EditorFailed(ReconcilerError):
    """$EDITOR exited non-zero or could not be started: nothing is committed."""


def handle(invocation: Invocation, args: argparse.Namespace) -> int:
    if args.action != "set" and args.assignments:
        print(f"reconciler env {args.action}: takes no KEY=VALUE", file=sys.stderr)
        return 2
    if args.action == "set" and not args.assignments:
        print("reconciler env set: give at least one KEY=VALUE (or KEY, its value on stdin)", file=sys.stderr)
        return 2

    async def work(reconciler: Reconciler) -> int:
        base = await env_edits.read(reconciler, args.domain)
        if args.action == "keys":
            for key in site_env.keys(base.text):
                print(key)
            return 0
        if args.action == "set":
            text, message = _assigned(base.text, args.assignments), f"env of {args.domain}: set " + ", ".join(
                a.partition("=")[0] for a in args.assignments)
        else:
            text, message = edited(base.text, args.domain), f"env of {args.domain}: edited"
        commit = await env_edits.commit(reconciler, base, text, message, args.author or person())
        if commit is None:
            print(f"{args.domain}: env unchanged; nothing committed")
        else:
            print(f"{args.domain}: env committed ({commit[:12]}); the next pass writes shared/.env on "
                  f"{', '.join(_servers(reconciler, args.domain)) or 'its servers'}", flush=True)
        return 0

    return act(invocation, work)


def _assigned(text: str, assignments: list[str]) -> str:
    for assignment in assignments:
        key, equals, value = assignment.partition("=")
        if not equals:
            value = sys.stdin.readline().rstrip("\r\n")
        try:
            text = site_env.set_value(text, key, value)
        except ValueError as exc:
            raise EditorFailed(str(exc)) from None
    return text


def edited(text: str, domain: str) -> str:
    """`text` as the person leaves it in $VISUAL or $EDITOR (default vi), on a private copy that is
    always removed. EditorFailed when the editor fails: nothing is to be committed."""
    # Words split on blanks ("code --wait"): no shell runs it, so nothing in it is interpreted.
    editor = (os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi").split()
    private = Path(tempfile.mkdtemp(prefix="reconciler-env-"))  # 0700
    try:
        file = private / f"{domain}.env"
        descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
        try:
            done = subprocess.run([*editor, str(file)], check=False)
        except OSError as exc:
            raise EditorFailed(f"the editor {editor[0]!r} could not be started ({exc.strerror}); nothing "
                               "committed") from None
        if done.returncode != 0:
            raise EditorFailed(f"the editor exited with status {done.returncode}; nothing committed")
        new = file.read_text()
        if problem := site_env.check_text(new):
            raise EditorFailed(f"the edited file {problem}; nothing committed")
        return new
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _servers(reconciler: Reconciler, domain: str) -> list[str]:
    try:
        site = reconciler.load().sites.get(domain)
    except ReconcilerError:
        return []
    return list(site.targets) if site is not None else []
