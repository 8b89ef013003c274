"""The finish of a build: record its success, switch, reload, read the log and release the lock in
one command, and the report that command ends with (`FINISH_MARK`, read by core/wire.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from reconciler.core import wire
from reconciler.core.layout import LOG_NAME, MANIFEST_NAME, SitePaths
from reconciler.remote.protocol.seam import EXIT_RECORD, SH, Command, one_line, quote
from reconciler.remote.protocol.site_steps import RELOAD_NAME, release_if_ours, switch

FINISH_MARK = "@@finish"


def finish_release(paths: SitePaths, release: str, manifest: str, reload_code: str | None,
                   lock_owner: str | None, log_bytes: int) -> Command:
    """The end of a deploy in one round trip: record the release's success (its manifest,
    atomically), switch the site to it (`switch`), run the reload command, release the lock
    when `lock_owner` is ours (nothing else is left to do under it), and print the log's last
    `log_bytes`, then one line `FINISH_MARK <reload exit> <unlock exit>` (`finish_report`, below).

    Exits EXIT_RECORD when the manifest could not be written (nothing switched), a `switch` exit
    code when the switch failed (the success is recorded: the next pass activates the release).
    stdin: the manifest (one line), then the reload code."""
    lines = [
        # All of stdin first, before anything can exit (see lock_acquire): the manifest line, then
        # the reload code into the release (owner-only), where it runs from.
        "IFS= read -r line || line=",
        f"cd -- {quote(paths.release(release))} || {{ cat > /dev/null; exit {EXIT_RECORD}; }}",
        *([f"trap 'rm -f -- {RELOAD_NAME}' EXIT", f"(umask 077 && cat > {quote(RELOAD_NAME)}) || rr=1"]
          if reload_code is not None else []),
        f"[ -n \"$line\" ] && printf '%s\\n' \"$line\" > {quote(MANIFEST_NAME + '.tmp')} && "
        f"mv -f -- {quote(MANIFEST_NAME + '.tmp')} {quote(MANIFEST_NAME)} || exit {EXIT_RECORD}",
        switch(paths, release).text.rstrip("\n"),
        "rr=${rr:-0}; ur=0",
    ]
    if reload_code is not None:
        lines += [f"if [ $rr -eq 0 ]; then {{ printf '==> reload\\n'; {SH} -e ./{RELOAD_NAME}; }}"
                  f" >> {quote(LOG_NAME)} 2>&1 < /dev/null; rr=$?; fi"]
    if lock_owner is not None:
        lines.append(release_if_ours(paths, lock_owner, "ur"))
    lines += [f"tail -c {int(log_bytes)} -- {quote(LOG_NAME)}",
              f"printf '\\n{FINISH_MARK} %s %s\\n' \"$rr\" \"$ur\"", "exit 0"]
    return Command("\n".join(lines) + "\n", one_line(manifest, "a manifest") + (reload_code or ""))


# --- the reader ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class FinishReport:
    """What a deploy's finish command (remote.protocol.finishing.finish_release) reports after its switch."""

    log: str          # the release log's tail
    reload_exit: int  # 0: the reload command ran fine (or there is none)
    unlock_exit: int  # 0: the lock is released (or was not asked to be); else it stays


_FINISH_RE = re.compile(r"([0-9]{1,3}) ([0-9]{1,3})\n?")


def finish_report(text: str, mark: str = FINISH_MARK) -> FinishReport:
    """Parse the finish command's output: the log tail, then a newline, `mark` and two exit
    statuses on the last line. The log comes from the release (the app's script writes it), so
    only the last mark counts: ours is printed after it. wire.WireError for anything else."""
    log, found, trailer = text.rpartition(f"\n{mark} ")
    match = _FINISH_RE.fullmatch(trailer) if found else None
    if match is None:
        raise wire.WireError(f"the finish command's report is missing or malformed: {wire.display(text[-80:])!r}")
    return FinishReport(log, int(match.group(1)), int(match.group(2)))
