"""The steps of changing a site on a server: provision, claim a release, clone, link shared
entries, copy entries from the live release, run the deploy script, record a manifest, run a
reload or `script_once`, switch the site symlink (atomically), remove releases, read a release's
log."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from reconciler.core import wire
from reconciler.core.layout import LOG_NAME, MANIFEST_NAME, SitePaths, is_release, shared_link_target
from reconciler.remote.mirror import mirror_path
from reconciler.remote.protocol import copying
from reconciler.remote.protocol.gitenv import GIT_PREAMBLE
from reconciler.remote.protocol.seam import (
    EXIT_CLAIM,
    EXIT_COPY,
    EXIT_LOCK_KEPT,
    EXIT_NOT_A_SYMLINK,
    EXIT_RELEASE_MISSING,
    EXIT_SHARED,
    SH,
    Command,
    one_line,
    quote,
)

# Code staged inside a release directory, run from there, removed after the run.
SCRIPT_NAME = ".reconciler-script"
SHARED_NAME = ".reconciler-shared"  # the shared entries to link, staged by the claim for the build
RELOAD_NAME = ".reconciler-reload"


# --- the steps of changing a site ---------------------------------------------------------------


def provision(paths: SitePaths) -> Command:
    """Create the site's layout: deployments/{domain}/shared/."""
    return Command(f"mkdir -p -- {quote(paths.shared)}")


def claim_release(paths: SitePaths, release: str, manifest: str, header: str, script: str | None,
                  shared: Iterable[str] = (), *, script_in_lock: bool = False) -> Command:
    """Claim a new release directory with a plain `mkdir` (two deploys can never share one),
    write its manifest and the first line of its log, and stage what the later, tied steps need
    (a tied command cannot take stdin without a round trip of its own): the `shared` entries
    for `build_release` and the deploy `script`.

    stdin: the manifest (one line of JSON), the log header (one line), the shared entries' lines
    (`_shared_lines`), then the script, unless `script_in_lock`: the lock's acquisition staged it
    (`lock_acquire`), and it is moved from there."""
    entries = _shared_lines(paths, release, shared)
    lines = [
        # Whatever stops it (`set -e`: a clash of names), stdin is read to its end (lock_acquire).
        "trap 'cat > /dev/null' EXIT",
        "set -e",
        f"mkdir -p -- {quote(paths.shared)}",
        f"mkdir -- {quote(paths.release(release))}",
        f"cd -- {quote(paths.release(release))}",
        f"IFS= read -r line; printf '%s\\n' \"$line\" > {quote(MANIFEST_NAME + '.tmp')}",
        f"mv -f -- {quote(MANIFEST_NAME + '.tmp')} {quote(MANIFEST_NAME)}",
        # The log holds what the script prints and `sh -x` traces (expanded secrets too): owner-only.
        f"IFS= read -r line; (umask 077 && printf '%s\\n' \"$line\" > {quote(LOG_NAME)})",
        # `read` takes one byte at a time from a pipe: exactly these lines, the script stays unread.
        f"i=0; while [ $i -lt {len(entries)} ]; do IFS= read -r line; printf '%s\\n' \"$line\"; i=$((i + 1)); done"
        f" > {quote(SHARED_NAME)}",
    ]
    if script_in_lock:
        # Staged by lock_acquire (untied, with stdin) while the plan was not known yet.
        lines.append(f"mv -f -- {quote(paths.lock + '/' + SCRIPT_NAME)} {quote(SCRIPT_NAME)}")
    elif script is not None:
        lines.append(f"(umask 077 && cat > {quote(SCRIPT_NAME)})")
    tail = "" if script_in_lock else (script or "")
    data = one_line(manifest, "a manifest") + one_line(header, "a log header") + "".join(entries) + tail
    return Command("\n".join(lines) + "\n", data)


# A claim's data (manifest, log header, shared entries: no code, no secret) may travel in the
# build command's argv, base64-encoded (nothing to quote, so no growth over SSH), when it is this
# small: far below MAX_ARG_BYTES with the rest of the command. Larger, the claim is a command of
# its own with stdin, one round trip more.
CLAIM_ARG_BYTES = 16 * 1024


def claim_fits(claim: Command) -> bool:
    return claim.stdin is not None and 4 * (len(claim.stdin.encode()) + 2) // 3 <= CLAIM_ARG_BYTES


def write_manifest(paths: SitePaths, release: str, manifest: str) -> Command:
    """Replace a release's manifest atomically (a temp file renamed over it). stdin: the JSON."""
    target = paths.manifest(release)
    return Command(f"cat > {quote(target + '.tmp')} && mv -f -- {quote(target + '.tmp')} {quote(target)}\n",
                   one_line(manifest, "a manifest"))


def record_failure(paths: SitePaths, release: str, manifest: str, note: str) -> Command:
    """Mark a release failed: its manifest (atomically), then `note` appended to its log."""
    return record_manifest(paths, release, manifest, note)


def record_manifest(paths: SitePaths, release: str, manifest: str, note: str) -> Command:
    """Rewrite a release's manifest (atomically), then append `note` to its log.
    stdin: the manifest (one line), then the note (any length, any lines)."""
    target = paths.manifest(release)
    return Command(
        f"IFS= read -r line && printf '%s\\n' \"$line\" > {quote(target + '.tmp')} && "
        f"mv -f -- {quote(target + '.tmp')} {quote(target)}\n"
        f"cat >> {quote(paths.log(release))}\n",
        one_line(manifest, "a manifest") + note + ("" if note.endswith("\n") else "\n"),
    )


# The mirror keeps every branch and tag of the repository (a tag site's commit may be on no branch).
# Given on the command line, so a mirror made before tags were followed fetches them too.
_MIRROR_REFSPECS = "'+refs/heads/*:refs/heads/*' '+refs/tags/*:refs/tags/*'"


def clone(paths: SitePaths, repository: str, branch: str | None, commit: str, release: str) -> Command:
    """Refresh the site's mirror (remote/mirror.py) and build `release` at exactly `commit` from
    it; output goes to the release's log. Run tied: it takes no stdin.

    With a `branch` (a branch site) the release's work tree is on that branch, tracking
    origin's; without (a tag or commit site) HEAD is detached at `commit`: there is no branch
    the release belongs to, and a script must not push or pull one by accident.

    The mirror fetches every branch and tag. A commit none of them reaches (a `commit` site's
    commit on a deleted branch, say) is then asked for by id, which git hosts that serve any
    reachable commit allow (GitHub, protocol v2 over ssh and file); when the mirror still does
    not have it the step fails with that reason, on stderr and in the log."""
    wanted = quote(commit + "^{commit}")
    # The mirror's branch follows what was fetched for it (a release's origin/<branch> comes from it).
    keep_branch = (f'      git -C "$M" update-ref {quote("refs/heads/" + branch)} {quote(commit)} || :\n'
                   if branch is not None else "")
    why = quote(f"commit {commit} is not in the repository: no branch or tag reaches it, "
                "and the git host does not send it by id")
    if branch is not None:
        checkout = (f"  git checkout --quiet -B {quote(branch)} {quote(commit)} --\n"
                    f"  git branch --quiet --set-upstream-to={quote('origin/' + branch)} || true\n")
    else:
        checkout = f"  git checkout --quiet --detach {quote(commit)} --\n"
    return Command(
        GIT_PREAMBLE
        + f"set -e\nM={quote(mirror_path(paths))}; R={quote(repository)}\n"
        "refresh() {\n"
        '  if [ -d "$M" ] && [ "$(git -C "$M" config --get remote.origin.url 2>/dev/null)" = "$R" ]; then\n'
        # Already there (only the script or shared list changed): no connection to the git host.
        f'    git -C "$M" cat-file -e {wanted} 2>/dev/null && return 0\n'
        # The probe resolved the commit: ask for just it (one connection, only its objects), then
        # everything, from a host that does not serve commits by id.
        f'    if git -C "$M" fetch --quiet --no-tags origin {quote(commit)} 2>/dev/null'
        f' && git -C "$M" cat-file -e {wanted} 2>/dev/null; then\n'
        f'{keep_branch}'
        '      return 0\n'
        '    fi\n'
        f'    git -C "$M" fetch --quiet --prune origin {_MIRROR_REFSPECS} && return 0\n'
        "  fi\n"
        "  printf '==> (re)creating the repository cache\\n'\n"
        '  rm -rf -- "$M" "$M.tmp"\n'
        '  git clone --quiet --bare -- "$R" "$M.tmp"\n'
        "  git -C \"$M.tmp\" config remote.origin.fetch '+refs/heads/*:refs/heads/*'\n"
        '  mv -T -- "$M.tmp" "$M"\n'
        "}\n"
        f"cd -- {quote(paths.release(release))}\n"
        "exec 3>&2\n"  # the step's own stderr, for the one message that must reach the operator
        "{ printf '==> clone\\n'\n"
        "  refresh\n"
        f'  if ! git -C "$M" cat-file -e {wanted} 2>/dev/null; then\n'
        f'    git -C "$M" fetch --quiet origin {quote(commit)} || :\n'
        f'    if ! git -C "$M" cat-file -e {wanted} 2>/dev/null; then\n'
        f"      why={why}\n"
        "      printf '==> %s\\n' \"$why\"; printf '%s\\n' \"$why\" >&3; exit 1\n"
        "    fi\n"
        "  fi\n"
        '  git clone --quiet --no-checkout -- "$M" .reconciler-clone\n'
        "  mv .reconciler-clone/.git .git && rmdir .reconciler-clone\n"
        '  git remote set-url origin "$R"\n'
        + checkout
        + f"}} >> {quote(LOG_NAME)} 2>&1 < /dev/null\n"
        f'test "$(git rev-parse HEAD)" = {quote(commit)}\n'
        # Author and subject for history and notifications, on stdout (`commit_info`, below).
        "git log -1 --format='%an <%ae>%x00%s%x00' HEAD | head -c 4096\n"
    )


# Fixed text: every value arrives on stdin: the release dir, the shared dir, then three lines per
# entry (kind, entry, link target). Paths hold no line breaks: the validator refuses control
# characters. An app repository controls what the release holds, symlinks included: no
# directory between the release and an entry may be a symlink, the entry's parent
# must resolve inside the release, and seeding never copies a symlink. Seeding never widens access
# either: `cp -a` keeps the repository's modes, but a shared file is where secrets
# go (.env), so a seeded file is owner-only (go-rwx), and a seeded directory loses group/world write.
_LINK_SHARED_BODY = """IFS= read -r R <&3; IFS= read -r S <&3
P=$(cd -P -- "$R" && pwd -P)
refuse() { printf 'shared entry %s: %s\\n' "$e" "$1" >&2; exit 1; }
while IFS= read -r kind <&3 && IFS= read -r e <&3 && IFS= read -r t <&3; do
  s=$S/$e; r=$R/$e; q=; rest=$e
  while :; do
    case $rest in */*) ;; *) break ;; esac
    q=${q:+$q/}${rest%%/*}; rest=${rest#*/}
    [ ! -L "$R/$q" ] || refuse "$q is a symlink in the release; refusing to follow it"
  done
  mkdir -p -- "$(dirname -- "$r")"
  case $(cd -P -- "$(dirname -- "$r")" && pwd -P)/ in
    "$P"/*) ;;
    *) refuse "its parent resolves outside the release" ;;
  esac
  if [ ! -e "$s" ] && [ ! -L "$s" ]; then
    mkdir -p -- "$(dirname -- "$s")"
    if [ -e "$r" ] && [ ! -L "$r" ]; then
      cp -a -- "$r" "$s"
      find "$s" -type l -exec rm -f -- {} +
      if [ -d "$s" ]; then chmod -R go-w -- "$s"; else chmod go-rwx -- "$s"; fi
    elif [ "$kind" = file ]; then (umask 077 && : > "$s")
    else mkdir -- "$s"; fi
  fi
  rm -rf -- "$r"
  ln -s -- "$t" "$r"
done
"""


def link_shared(paths: SitePaths, release: str, shared: Iterable[str]) -> Command:
    """Link every shared entry into the release. A path the repository ships (Laravel's
    storage/) is removed and replaced by the link; linking into it would make storage/storage.
    A missing shared entry is seeded from the repository's copy, else created empty (a file
    when its name starts with '.', else a directory).

    Symlinks the repository ships are never followed (threat model: an app committer cannot
    make a deploy touch files outside its release and shared dir). An entry with a symlink
    between it and the release (`public -> /elsewhere` for `public/uploads`), or whose parent
    resolves outside the release, fails the step with the entry named, before anything is
    removed, copied or linked. A symlink at the entry itself is replaced by our link and never
    copied: the shared entry is then created empty, as if the repository did not ship it. A
    directory seeded from the repository keeps none of its symlinks.

    Seeding never widens access: a file seeded from the repository (an app-shipped .env) is
    owner-only whatever its mode there, a seeded directory loses group and world write; an
    entry created empty is owner-only (file) or takes the umask (directory)."""
    return Command("set -e\nexec 3<&0 < /dev/null\n" + _LINK_SHARED_BODY,
                   "".join(_shared_lines(paths, release, shared)))


def _shared_lines(paths: SitePaths, release: str, shared: Iterable[str]) -> list[str]:
    """What the shared-link loop reads: the release dir, the shared dir, then three lines per
    entry (kind, entry, link target)."""
    data = [one_line(paths.release(release), "a release path"), one_line(paths.shared, "a shared path")]
    for entry in shared:
        kind = "file" if entry.rsplit("/", 1)[-1].startswith(".") else "dir"
        for value in (kind, entry, shared_link_target(entry)):
            data.append(one_line(value, "a shared entry"))
    return data


def build_release(paths: SitePaths, repository: str, branch: str | None, commit: str, release: str,
                  claim: Command | None = None, previous: str | None = None, copy: Sequence[str] = ()) -> Command:
    """[`claim`,] `clone`, then link the shared entries the claim staged (`link_shared`), then
    copy the `copy` entries from the live release `previous` (`copying.copy_previous`), in one
    tied command: a deploy's steps that need no answer in between are one round trip.
    The claim's stdin arrives in argv, base64 (`claim_fits` says when it may). A failed claim
    exits EXIT_CLAIM, a failure to link EXIT_SHARED, a failure to copy EXIT_COPY, with the reason
    on stderr; any other failure is the clone's. stdout: the commit's author and subject, as
    `clone` prints them.

    Each part runs in a subshell statement of its own with `set -e`: inside `( ... ) || exit`,
    sh would ignore `set -e`, and a failed `mkdir` of the claim must stop it."""
    text = ""
    if claim is not None:
        if not claim_fits(claim):
            raise ValueError("the claim's data is too long for argv; send claim_release on its own")
        blob = base64.b64encode((claim.stdin or "").encode()).decode()
        text = ("set +e\n"
                f"t=$(umask 077 && mktemp) || exit {EXIT_CLAIM}\n"
                f"printf '%s' {quote(blob)} | base64 -d > \"$t\" || {{ rm -f -- \"$t\"; exit {EXIT_CLAIM}; }}\n"
                f"(\n{claim.text}) < \"$t\"\n"
                f"rc=$?; rm -f -- \"$t\"; [ $rc -eq 0 ] || exit {EXIT_CLAIM}\n")
    staged = quote(SHARED_NAME)
    return Command(
        text
        + clone(paths, repository, branch, commit, release).text
        + f"set +e\n( set -e; exec 3< {staged} < /dev/null; rm -f -- {staged}\n"
        + _LINK_SHARED_BODY
        + f")\n[ $? -eq 0 ] || exit {EXIT_SHARED}\n"
        + (f"( set -e\n{copying.copy_text(paths, release, previous, copy)})\n"
           f"[ $? -eq 0 ] || exit {EXIT_COPY}\n" if copy else "")
    )


# The file in the lock directory that names its owner, and how much of it a refused taker reads.
OWNER_FILE = "owner"
OWNER_READ_BYTES = 1024


def release_if_ours(paths: SitePaths, owner_json: str, status: str) -> str:
    """sh that removes the site's lock when its owner file holds `owner_json`; `$status` becomes
    EXIT_LOCK_KEPT when it is ours and stays."""
    lock = quote(paths.lock)
    one_line(owner_json, "a lock owner")
    return (f"if [ \"$(cat {lock}/{quote(OWNER_FILE)} 2>/dev/null)\" = {quote(owner_json)} ]; then "
            f"rm -rf -- {lock} || {status}={EXIT_LOCK_KEPT}; fi")


def run_script(paths: SitePaths, release: str, env: Mapping[str, str], trace: bool = True) -> Command:
    """Run the staged deploy script (claim_release) in the release with `sh -e` (and `-x` when
    `trace`), output and trace to the release's log, stdin /dev/null; the staged file is removed
    afterwards. Tied: it takes no stdin."""
    assignments = " ".join(f"{name}={quote(value)}" for name, value in env.items())
    flags = "-e -x" if trace else "-e"
    return Command(
        f"cd -- {quote(paths.release(release))} || exit 1\n"
        f"{{ printf '==> script\\n'; env {assignments} {SH} {flags} ./{SCRIPT_NAME}; }}"
        f" >> {quote(LOG_NAME)} 2>&1 < /dev/null\n"
        f"rc=$?; rm -f -- {quote(SCRIPT_NAME)}; exit $rc\n"
    )


ENV_NAME = ".env"


def write_env(paths: SitePaths, text: str) -> Command:
    """Write `text` (a site's decrypted .env) to shared/.env: a private temp file in the same
    directory (mode 0600 from the start), then rename(2) over the old one, so a reader sees the
    old file or the new, never half of one. stdin: the content (a secret never travels in argv)."""
    shared = quote(paths.shared)
    return Command(
        f"mkdir -p -- {shared} && cd -- {shared} || {{ cat > /dev/null; exit 1; }}\n"
        f"t=$(umask 077 && mktemp ./{ENV_NAME}.reconciler.XXXXXX) || {{ cat > /dev/null; exit 1; }}\n"
        f"if cat > \"$t\" && chmod 600 -- \"$t\" && mv -fT -- \"$t\" {ENV_NAME}; then exit 0; fi\n"
        "rm -f -- \"$t\"; exit 1\n",
        text,
    )


def reload(paths: SitePaths, release: str, code: str) -> Command:
    """Run the reload command (code, any length) with `sh -e` in the release, output to its
    log. stdin: the code, staged into a file first so that it runs with stdin /dev/null."""
    return _staged(paths, release, code, "reload")


def run_once(paths: SitePaths, release: str, code: str) -> Command:
    """Run a site's `script_once` (migrations: one server per deploy) like `reload`."""
    return _staged(paths, release, code, "script_once")


def _staged(paths: SitePaths, release: str, code: str, label: str) -> Command:
    return Command(
        f"cd -- {quote(paths.release(release))} || {{ cat > /dev/null; exit 1; }}\n"
        f"(umask 077 && cat > {quote(RELOAD_NAME)}) || exit 1\n"
        f"{{ printf '==> {label}\\n'; {SH} -e ./{RELOAD_NAME}; }} >> {quote(LOG_NAME)} 2>&1 < /dev/null\n"
        f"rc=$?; rm -f -- {quote(RELOAD_NAME)}; exit $rc\n",
        code,
    )


def switch(paths: SitePaths, release: str) -> Command:
    """Atomically point the site symlink at `release`: a new link under a unique temporary
    name in the same directory, then rename(2) over the old one (`mv -T`). Never
    `ln -sfn`, which is unlink+symlink on many systems and leaves a moment with no site at all.
    Refuses to replace a real directory or file (EXIT_NOT_A_SYMLINK) and to point at a
    release that is not there (EXIT_RELEASE_MISSING)."""
    link = paths.site_link
    temp = f"{paths.base_path}/.{paths.domain}.reconciler-{secrets.token_hex(6)}"
    return Command(
        f"if [ -e {quote(link)} ] && [ ! -L {quote(link)} ]; then "
        f"echo {quote(link + ' is not a symlink; refusing to replace it')} >&2; exit {EXIT_NOT_A_SYMLINK}; fi\n"
        f"test -d {quote(paths.release(release))} || "
        f"{{ echo 'release directory is missing' >&2; exit {EXIT_RELEASE_MISSING}; }}\n"
        f"ln -s -- {quote(paths.link_target(release))} {quote(temp)} || exit 1\n"
        f"mv -T -- {quote(temp)} {quote(link)} || {{ rm -f -- {quote(temp)}; exit 1; }}\n"
    )


def remove_releases(paths: SitePaths, releases: Iterable[str], lock_owner: str | None = None) -> Command:
    """`rm -rf` release directories (prune, an aborted build). Only release names are accepted:
    nothing else under deployments/ is ever removed here. With `lock_owner`, then release the
    site's lock if it is ours (`_release_if_ours`)."""
    names = list(releases)
    for name in names:
        if not is_release(name):
            raise ValueError(f"{name!r} is not a release name")
    targets = " ".join(f'"$d"/{quote(name)}' for name in names)
    if lock_owner is None:
        return Command(f"d={quote(paths.deployments)}\nrm -rf -- {targets}\n")
    # The last step under the lock releases it too: exits EXIT_LOCK_KEPT when it stays; when the
    # removal fails, its status, and the lock is left for its holder to release.
    return Command(f"d={quote(paths.deployments)}\nrm -rf -- {targets} || exit\nur=0\n"
                   f"{release_if_ours(paths, lock_owner, 'ur')}\nexit $ur\n")


def tail_log(path: str, max_bytes: int) -> Command:
    """The last `max_bytes` of a log."""
    return Command(f"tail -c {int(max_bytes)} -- {quote(path)}")


def read_log_base64(path: str, offset: int) -> Command:
    """A log from byte `offset` on, base64-encoded so the bytes arrive exact."""
    return Command(f"tail -c +{int(offset) + 1} -- {quote(path)} | base64")


# --- the reader of the build command's commit line ----------------------------------------------

@dataclass(frozen=True)
class CommitInfo:
    """Who wrote a commit and its subject line, as an app repository says (untrusted: escaped,
    bounded). Empty when the server did not say."""

    author: str = ""
    subject: str = ""


def commit_info(text: str) -> CommitInfo:
    """Parse `git log -1 --format='%an <%ae>%x00%s%x00'` output. Never raises: this is news for
    history and notifications, not a reason to fail a deploy, so anything else is an empty result."""
    fields = text.split("\0")
    if len(fields) != 3 or fields[2].strip():
        return CommitInfo()
    author, subject = (wire.display(" ".join(f.split()), wire.MAX_COMMIT_TEXT) for f in fields[:2])
    return CommitInfo(author, subject)
