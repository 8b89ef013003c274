"""The probe: ONE remote command per server that gathers the facts of every site on it.

The probe reports, per site, the site path (symlink target, or a directory/file that is
in the way), the release directories with their manifests, the shared dir and the lock,
and resolves every (repository, branch) head with `git ls-remote` run in parallel on the
server, which reaches the repositories exactly as deploys will. Cost grows with servers,
not with sites.
"""

from __future__ import annotations

from collections.abc import Iterable

from reconciler.core.facts import BranchHead, ProbeSite, ReleaseFacts, ServerFacts, SiteFacts
from reconciler.core.layout import MANIFEST_NAME, is_release
from reconciler.core.manifest import Manifest
from reconciler.errors import TransportError
from reconciler.remote.shell import quote
from reconciler.remote.transport import Transport

_PROBE_FUNCTIONS = r"""
export GIT_TERMINAL_PROMPT=0 GIT_SSH_COMMAND="${GIT_SSH_COMMAND:-ssh -o BatchMode=yes}" LC_ALL=C
probe_site() {
  d="$2/deployments/$1"; link="$2/$1"
  printf '@site %s\n' "$1"
  if [ -L "$link" ]; then
    printf '@link %s\n' "$(readlink "$link")"
    [ -e "$link" ] || printf '@dangling\n'
  elif [ -d "$link" ]; then printf '@path dir\n'
  elif [ -e "$link" ]; then printf '@path file\n'
  fi
  [ -d "$d" ] || return 0
  printf '@provisioned\n'
  [ -d "$d/shared" ] && printf '@shared\n'
  if [ -d "$d/.reconciler-lock" ]; then
    o=; IFS= read -r o < "$d/.reconciler-lock/owner" 2>/dev/null || :
    printf '@lock %s\n' "$o"
  fi
  for r in "$d"/[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]-[0-9][0-9][0-9][0-9][0-9][0-9]; do
    [ -e "$r" ] || [ -L "$r" ] || continue
    n=${r##*/}
    if [ -L "$r" ] || [ ! -d "$r" ]; then printf '@notdir %s\n' "$n"; continue; fi
    printf '@release %s\n' "$n"
    if [ -f "$r/$3" ]; then
      # The shell's own `read`: no process per release (a manifest is one line of JSON).
      m=; IFS= read -r m < "$r/$3" || :
      printf '@manifest %s\n' "$m"
    elif [ -e "$r/.git" ]; then
      printf '@head %s\n' "$(git -C "$r" rev-parse -q --verify HEAD 2>/dev/null)"
    fi
  done
}
probe_head() {
  out=$(git ls-remote -- "$1" "refs/heads/$2" 2>&1); rc=$?
  printf '@heads %s %s\n' "$3" "$rc"
  printf '%s\n' "$out" | head -c 4096 | sed 's/^/|/'
}
"""


HEADS_AT_ONCE = 8
# The probe grows with the sites on a server; an argument is capped at 128 KiB by the kernel,
# so the script travels on stdin into a temporary file and runs from there.
_RUN_FROM_STDIN = 'f=$(mktemp) || exit 1; cat > "$f"; sh "$f" < /dev/null; rc=$?; rm -f -- "$f"; exit $rc'


def probe_command(sites: Iterable[ProbeSite], heads: Iterable[tuple[str, str]]) -> str:
    """The one shell command that gathers a server's facts. All values are quoted."""
    lines = [_PROBE_FUNCTIONS, 'tmp=$(mktemp -d) || exit 1', "trap 'rm -rf \"$tmp\"' EXIT"]
    for index, (repository, branch) in enumerate(sorted(set(heads))):
        lines.append(
            f"probe_head {quote(repository)} {quote(branch)} {index} > \"$tmp/{index}\" 2>&1 &"
        )
        # At most HEADS_AT_ONCE lookups in flight: a git host's sshd drops a burst (MaxStartups).
        if index % HEADS_AT_ONCE == HEADS_AT_ONCE - 1:
            lines.append("wait")
    for site in sites:
        lines.append(f"probe_site {quote(site.domain)} {quote(site.base_path)} {quote(MANIFEST_NAME)}")
    lines += ["wait", 'cat "$tmp"/* 2>/dev/null', "exit 0"]
    return "\n".join(lines) + "\n"


def parse_probe(output: str, sites: Iterable[ProbeSite], heads: Iterable[tuple[str, str]]) -> ServerFacts:
    wanted = {site.domain: site for site in sites}
    head_keys = sorted(set(heads))
    facts = ServerFacts()
    site: SiteFacts | None = None
    release: ReleaseFacts | None = None
    head_key: tuple[str, str] | None = None
    head_lines: list[str] = []
    head_rc = 0

    def finish_head() -> None:
        if head_key is None:
            return
        text = "\n".join(head_lines)
        sha = None
        # ls-remote matches ref *suffixes* (zzz/refs/heads/main too): take the exact ref only.
        # 40 hex is SHA-1, 64 is SHA-256.
        for line in head_lines:
            parts = line.split()
            if len(parts) == 2 and parts[1] == f"refs/heads/{head_key[1]}" and len(parts[0]) in (40, 64):
                sha = parts[0]
        if head_rc != 0:
            facts.heads[head_key] = BranchHead(None, text.strip() or f"git ls-remote exited {head_rc}")
        elif sha is None:
            facts.heads[head_key] = BranchHead(None, f"branch {head_key[1]!r} not found in {head_key[0]}")
        else:
            facts.heads[head_key] = BranchHead(sha)

    for raw in output.splitlines():
        if raw.startswith("|"):
            head_lines.append(raw[1:])
            continue
        tag, _, value = raw.partition(" ")
        if tag == "@heads":
            finish_head()
            index, _, rc = value.partition(" ")
            head_key = head_keys[int(index)] if index.isdigit() and int(index) < len(head_keys) else None
            head_rc = int(rc) if rc.lstrip("-").isdigit() else 1
            head_lines = []
        elif tag == "@site":
            known = wanted.get(value)
            site = SiteFacts(value, known.base_path) if known else None
            if site is not None:
                facts.sites[value] = site
            release = None
        elif site is None:
            continue
        elif tag == "@link":
            site.link_target, site.path_kind = value, "symlink"
        elif tag == "@dangling":
            site.dangling = True
        elif tag == "@path":
            site.path_kind = value
        elif tag == "@provisioned":
            site.provisioned = True
        elif tag == "@shared":
            site.shared = True
        elif tag == "@lock":
            site.lock = value.strip()
        elif tag == "@notdir":
            site.not_dirs.append(value)
        elif tag == "@release":
            # The shell glob only matches the shape; a name must also be a real date/time.
            release = site.releases.setdefault(value, ReleaseFacts(value)) if is_release(value) else None
        elif tag == "@manifest" and release is not None:
            release.manifest = Manifest.from_json(value)
            release.corrupt = release.manifest is None
        elif tag == "@head" and release is not None:
            release.head = value.strip() or None
    finish_head()
    for domain, known in wanted.items():
        facts.sites.setdefault(domain, SiteFacts(domain, known.base_path))
    return facts


async def gather(
    transport: Transport, sites: list[ProbeSite], heads: list[tuple[str, str]], *, timeout: float
) -> ServerFacts:
    result = await transport.run(_RUN_FROM_STDIN, stdin=probe_command(sites, heads), timeout=timeout)
    if not result.ok:
        raise TransportError(f"{transport.name}: probe failed (exit {result.exit_status}): {result.tail(5)}")
    return parse_probe(result.stdout, sites, heads)
