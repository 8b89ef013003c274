"""The finish of a build: record its success, switch, reload, read the log and release the lock in
one command, and the report that command ends with (`FINISH_MARK`, read by core/wire.py)."""

from __future__ import annotations

from reconciler.core.layout import LOG_NAME, MANIFEST_NAME, SitePaths
from reconciler.remote.protocol.seam import EXIT_RECORD, SH, Command, one_line, quote
from reconciler.remote.protocol.site_steps import RELOAD_NAME, release_if_ours, switch

FINISH_MARK = "@@finish"


def finish_release(paths: SitePaths, release: str, manifest: str, reload_code: str | None,
                   lock_owner: str | None, log_bytes: int) -> Command:
    """The end of a deploy in one round trip: record the release's success (its manifest,
    atomically), switch the site to it (`switch`), run the reload command, release the lock
    when `lock_owner` is ours (nothing else is left to do under it), and print the log's last
    `log_bytes`, then one line `FINISH_MARK <reload exit> <unlock exit>` (core.wire.finish_report).

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
