"""The per-site lock: deployments/{domain}/.reconciler-lock/owner, taken with an atomic mkdir
(the lock command also probes the site, may stage the deploy script and may switch a pin),
refreshed by a heartbeat, released only by its owner (remote/lock.py reads what they print)."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from reconciler.core import wire
from reconciler.core.facts import ProbeSite
from reconciler.core.layout import SitePaths
from reconciler.remote.protocol.gitenv import GIT_PREAMBLE
from reconciler.remote.protocol.heads import DEFAULT_GIT_TIMEOUT, FIND_TIMEOUT
from reconciler.remote.protocol.probing import probe_script
from reconciler.remote.protocol.seam import Command, json_pair, one_line, quote
from reconciler.remote.protocol.site_steps import OWNER_FILE, OWNER_READ_BYTES, SCRIPT_NAME, release_if_ours, switch

# --- the per-site lock (remote/lock.py): deployments/{domain}/.reconciler-lock/owner -----------

# The first line of the acquire command's output: the lock is ours (the site's probe follows),
# or `LOCK_HELD <now> <mtime of the lock dir>`, the owner file's first OWNER_READ_BYTES, and last
# a line `LOCK_BEATING 1` when a command that heartbeats the lock (`beating`) still runs, else
# `LOCK_BEATING 0`.
LOCK_ACQUIRED = "@@acquired"
LOCK_HELD = "@@held"
LOCK_BEATING = "@@beating"
# In the lock dir: the PID of the shell of the command that heartbeats it (`beating`).
BEAT_FILE = "beat"
EXIT_LOCK_LOST = 10  # lock_refresh: the lock is no longer ours (taken over, or removed by hand)


SWITCHED = "@@switched"  # lock_acquire with `activate`: `SWITCHED <switch exit>`, or `SWITCHED -` (not tried)


@dataclass(frozen=True)
class HeadCheck:
    """For `lock_acquire(activate=...)` of an unpin: the release is switched to only when the
    branch head is still `commit` and the release was built from it with this `build_key`."""

    repository: str
    ref: str  # refs/heads/<branch>
    commit: str
    build_key: str
    seconds: int = DEFAULT_GIT_TIMEOUT  # the ls-remote's own bound (`head_bounds`): a silent git host
                                        # costs the lock command this much, then the round probes


def lock_acquire(paths: SitePaths, owner_json: str, shared: tuple[str, ...] = (),
                 script: str | None = None, activate: str | None = None,
                 head: HeadCheck | None = None, env: bool = False) -> Command:
    """Take the site's lock with an atomic `mkdir`, write `owner_json` (one line) into it and,
    in the same command, probe the site: the facts nobody else can change while we hold it.
    With `script` (stdin), stage the deploy script in the lock for a claim (`claim_release`
    `script_in_lock`): the build that follows is tied and takes no stdin.

    With `activate` (a pin that just landed: one round trip from commit to live), switch
    the site to that release under the lock, before the probe, when the release is a directory
    whose manifest records success (our own compact JSON: `"status":"success"` cannot occur inside
    a JSON string) and the site does not point at it yet; a line `SWITCHED <exit>` (or
    `SWITCHED -`) precedes the probe, which then shows the site as it is after the switch."""
    lock, owner = quote(paths.lock), quote(OWNER_FILE)
    one_line(owner_json, "a lock owner")
    stage = f"  (umask 077 && cat > {lock}/{quote(SCRIPT_NAME)})\n" if script is not None else ""
    then = ""
    if activate is not None:
        switch_text = switch(paths, activate).text
        manifest = quote(paths.manifest(activate))
        checks = "".join(f" && grep -qF -- {quote(json_pair(key, value))} {manifest} 2>/dev/null"
                         for key, value in [("status", "success")] + (
                             [("commit", head.commit), ("build_key", head.build_key)] if head else []))
        if head is not None:
            # An unpin: the release must still be the branch head's build (one ls-remote, exact ref).
            then = GIT_PREAMBLE + FIND_TIMEOUT + (
                f"  h=$(${{gto:+$gto {int(head.seconds)}}} git ls-remote -- {quote(head.repository)} {quote(head.ref)}"
                " 2>/dev/null"
                f" | R={quote(head.ref)} awk -F '\t' '$2 == ENVIRON[\"R\"] {{ print $1 }}')\n")
            checks += f' && [ "$h" = {quote(head.commit)} ]'
        # The planner's rule (core/rollout.py): a release whose run-once step is owed never goes live.
        checks += f" && ! grep -qF -- {quote(json_pair('once', 'pending'))} {manifest} 2>/dev/null"
        then += (f"  if [ -d {quote(paths.release(activate))} ] && [ ! -L {quote(paths.release(activate))} ]"
                  f"{checks}"
                  f" && [ \"$(readlink -- {quote(paths.site_link)})\" != {quote(paths.link_target(activate))} ]; then\n"
                  f"    ( {switch_text} ) >&2; echo \"{SWITCHED} $?\"\n"
                  f"  else echo {quote(SWITCHED + ' -')}; fi\n")
    return Command(
        f"mkdir -p -- {quote(paths.deployments)} || exit 1\n"
        f"if mkdir -- {lock} 2>/dev/null; then\n"
        f"  printf '%s\\n' {quote(owner_json)} > {lock}/{owner}\n"
        + stage +
        f"  echo {quote(LOCK_ACQUIRED)}\n"
        + then
        + f"{probe_script([ProbeSite(paths.domain, paths.base_path, shared, env)], [])}"
        "  true\n"
        "else\n"
        # Read the script we were sent even so: a command that exits with its stdin unread races
        # the client's write, and asyncssh takes what sshd sends after that for a broken connection.
        + ("  cat > /dev/null\n" if script is not None else "")
        + f"  echo \"{LOCK_HELD} $(date +%s) $(stat -c %Y {lock} 2>/dev/null || echo 0)\"\n"
        f"  head -c {OWNER_READ_BYTES} {lock}/{owner} 2>/dev/null || true\n"
        # Is the command that heartbeats the lock still running here? A PID (never 0: `kill -0 0`
        # signals our own group) that is alive. Printed last: the owner's text cannot shadow it.
        + _ALIVE +
        f"  p=; IFS= read -r p < {lock}/{quote(BEAT_FILE)} 2>/dev/null || :\n"
        f"  case $p in ''|0*|*[!0-9]*) b=0 ;; *) if reconciler_alive \"$p\"; then b=1; else b=0; fi ;; esac\n"
        f"  printf '\\n{LOCK_BEATING} %s\\n' \"$b\"\n"
        "fi\n",
        script,
    )


# sh: `reconciler_alive PID` succeeds while that process runs. `kill -0` alone also finds a
# zombie: a killed command's shell stays one until its new parent reaps it (as PID 1 of a
# container may do late, or never), so /proc's state (Linux) must not say Z (zombie) or X (dead).
_ALIVE = """reconciler_alive() {
  kill -0 "$1" 2>/dev/null || return 1
  [ -r "/proc/$1/status" ] || return 0
  while IFS= read -r l; do
    case $l in State:*[ZX]*) return 1 ;; State:*) return 0 ;; esac
  done < "/proc/$1/status"
  return 0
}
"""


@dataclass(frozen=True)
class Beat:
    """A long command's heartbeat on the site's lock (`beating`): `owner_json` is the lock's owner
    as written, `interval` the seconds between refreshes, `limit` the seconds after which the
    command would have been stopped by its owner (its timeout): no beat outlives that."""

    lock: str
    owner_json: str
    interval: int
    limit: int


def _ours(lock: str, owner_json: str) -> str:
    """sh test: the lock's owner file holds `owner_json`."""
    one_line(owner_json, "a lock owner")
    return f'[ "$(cat {quote(lock)}/{quote(OWNER_FILE)} 2>/dev/null)" = {quote(owner_json)} ]'


def beating(command: Command, beat: Beat | None) -> Command:
    """`command`, with a heartbeat of the site's lock while it runs (remote/lock.py explains why it
    lives here): its shell writes its PID into the lock (`BEAT_FILE`, so a taker can see the
    command still running: `lock_acquire`), and a background loop touches the lock dir every
    `interval` seconds while the lock is still ours, that shell still lives (`reconciler_alive
    $$`: a killed shell runs no EXIT trap) and for at most `limit` seconds. The EXIT trap ends the loop
    with the command and touches the lock a last time (the holder counts its next interval from
    there). The loop holds none of the command's streams (a local command's output ends when the
    last holder of its pipe closes it; over SSH, the terminal's)."""
    if beat is None:
        return command
    lock, mine = quote(beat.lock), _ours(beat.lock, beat.owner_json)
    step, limit = max(1, int(beat.interval)), max(1, int(beat.limit))
    last = quote(f'kill "$reconciler_beat" 2>/dev/null; {mine} && touch -c -- {lock}; :')
    return Command(
        _ALIVE
        + f"{mine} && printf '%s\\n' $$ > {lock}/{quote(BEAT_FILE)}\n"
        f"( n=0; while [ $n -lt {limit} ] && reconciler_alive $$ && {mine}; do\n"
        f"    touch -c -- {lock}; sleep {step}; n=$((n + {step}))\n"
        "  done ) < /dev/null > /dev/null 2>&1 &\n"
        "reconciler_beat=$!\n"
        f"trap {last} EXIT\n"
        + command.text,
        command.stdin,
    )


def lock_refresh(paths: SitePaths, owner_json: str) -> Command:
    """Touch the lock dir (its mtime is the lock's heartbeat) when it is still ours; exit
    EXIT_LOCK_LOST when it is not."""
    return Command(f"{_ours(paths.lock, owner_json)} || exit {EXIT_LOCK_LOST}\ntouch -c -- {quote(paths.lock)}\n")


def lock_release(paths: SitePaths, owner_json: str) -> Command:
    """Remove the lock, only if its owner file still holds `owner_json` (only the owner releases).
    Exits 0 when the lock is gone or was not ours, EXIT_LOCK_KEPT when it is ours and stays: the
    one release rule, as the last step under a lock (a finish, a prune) carries it too."""
    return Command(f"ur=0\n{release_if_ours(paths, owner_json, 'ur')}\nexit $ur\n")


def _takeover(paths: SitePaths) -> str:
    aside = quote(f"{paths.lock}.stale-{secrets.token_hex(4)}")
    return f"mv -T -- {quote(paths.lock)} {aside} 2>/dev/null && rm -rf -- {aside}; exit 0"


def lock_takeover(paths: SitePaths) -> Command:
    """Remove a stale lock: moved aside first (atomic), so two takers cannot both delete a fresh one."""
    return Command(_takeover(paths))


def unlock(paths: SitePaths) -> Command:
    """Print the lock's owner file, then a newline, and remove the lock whoever holds it."""
    return Command(f"cat {quote(paths.lock)}/{quote(OWNER_FILE)} 2>/dev/null; echo; {_takeover(paths)}")


# --- the reader of the lock command's switch line --------------------------------------------

def switched(line: str, mark: str = SWITCHED) -> int | None:
    """Parse the lock command's `mark <exit>` line (remote.protocol.locking.lock_acquire with `activate`):
    the switch's exit status, or None for `mark -` (not tried). wire.WireError for anything else."""
    value = line[len(mark) + 1:] if line.startswith(mark + " ") else None
    if value == "-":
        return None
    status = wire.parse_uint(value, 255) if value is not None else None
    if status is None:
        raise wire.WireError(f"not {mark} <exit>: {wire.display(line, 80)!r}")
    return status


# --- the reader of a refused taker's answer ----------------------------------------------------

_HELD_RE = re.compile(re.escape(LOCK_HELD) + r" ([0-9]{1,20}) ([0-9]{1,20})")


def still_beating(text: str) -> bool:
    """The held answer's last line (after the owner's text, which cannot shadow it) says a
    command that heartbeats the lock still runs."""
    return text.rstrip("\n").rpartition("\n")[2] == f"{LOCK_BEATING} 1"


def held_age(line: str) -> float:
    """Seconds since the lock dir's last heartbeat (its mtime), from `LOCK_HELD <now> <mtime>`;
    0 when unknown."""
    match = _HELD_RE.fullmatch(line)
    if match is None:
        return 0.0
    now, mtime = int(match.group(1)), int(match.group(2))
    return float(now - mtime) if mtime != 0 else 0.0
