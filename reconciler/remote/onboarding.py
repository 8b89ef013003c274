"""Onboarding an existing BrokeForge fleet (`reconciler import`): survey each server in one
command (`survey`; the command and its strict reader are remote/protocol/importing.py), and turn
what the servers hold into one declaration per site (`propose`), or the reason it cannot be.

Why the declarations pin the live release. A release built outside the reconciler has no
manifest, so nobody knows the script and shared list it was built with (its build key): the
planner adopts it as a successful release, but never as the build of a branch, tag or commit
(core/rollout.py; tests/core/test_plan.py "head-release-without-manifest" deploys). A pin is the
one declaration the first pass settles on an adopted release as it is: Synced, nothing built,
nothing switched. The import cannot know the deploy script either (BrokeForge keeps it in its
database), so following the branch at once would build the next commit with an empty script;
held by the pin, a site waits until its operator has added `script` (php, reload, [health]) and
runs `reconciler unpin D`, whose first deploy is the reconciler's own. The declared ref (branch,
else an exact tag, else the commit) is what the site follows then.

What else keeps the first pass from changing anything: `shared` is the live release's links into
shared/ (a default entry that is not a link there would be relinked, replacing the release's
own copy); `keep` is raised to the releases the server holds (pruning would delete the oldest).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reconciler.core import wire
from reconciler.core.declaration_files import parse_site
from reconciler.core.declarations import DEFAULT_BASE_PATH, DEFAULT_SHARED, SITES_DIR, InvalidSite, SiteDeclaration
from reconciler.errors import TransportError
from reconciler.remote.protocol.importing import FoundSite, Survey, import_command, parse_import
from reconciler.remote.transport import Transport

DEFAULT_KEEP = SiteDeclaration.model_fields["keep"].default


@dataclass(frozen=True)
class Proposal:
    """A declaration for `domain`, checked as `reconciler validate` checks it."""

    domain: str
    servers: tuple[str, ...]
    release: str
    text: str

    @property
    def filename(self) -> str:
        return f"{SITES_DIR}/{self.domain}.toml"


@dataclass(frozen=True)
class Refusal:
    """A site that cannot be imported: its name (printable), where, and why."""

    name: str
    servers: tuple[str, ...]
    reason: str


def check_base_path(value: str) -> str:
    """`value` as a declaration's base_path (normalised), or ValueError saying why it is not one:
    the same rule, since the generated declarations carry it."""
    return SiteDeclaration._base_path(value)  # the field's own validator, not a second copy


async def survey(transport: Transport, base_path: str, timeout: float) -> Survey:
    """What the server holds under `base_path`, in one command. Raises TransportError when it
    cannot be reached or its answer is not the command's framing."""
    command = import_command(base_path)
    result = await transport.run(command.text, stdin=command.stdin, timeout=timeout)
    if not result.ok:
        raise TransportError(f"{transport.name}: the import command failed (exit {result.exit_status}): "
                             f"{wire.display(result.tail(2), 200)}")
    return parse_import(result.stdout, base_path)


def propose(surveys: Mapping[str, Survey], base_path: str) -> tuple[list[Proposal], list[Refusal]]:
    """One declaration per site found on the servers (in the order given), or why not. A site
    found on several servers becomes one `servers = [...]` declaration when every server runs the
    same live release of the same repository and ref."""
    by_name: dict[str, list[tuple[str, FoundSite]]] = {}
    for server, found in surveys.items():
        for site in found.sites:
            by_name.setdefault(site.name, []).append((server, site))
    proposals: list[Proposal] = []
    refusals: list[Refusal] = []
    for name in sorted(by_name):
        result = _one(by_name[name], base_path)
        if isinstance(result, Proposal):
            proposals.append(result)
        else:
            refusals.append(result)
    return proposals, refusals


def _ref(site: FoundSite) -> tuple[str, str]:
    """What the site follows once unpinned: the branch its HEAD is on, else a tag HEAD is exactly
    at, else the commit itself."""
    if site.branch is not None:
        return "branch", site.branch
    if site.tag is not None:
        return "tag", site.tag
    assert site.commit is not None  # FoundSite: no problem means a commit
    return "commit", site.commit


def _one(places: Sequence[tuple[str, FoundSite]], base_path: str) -> Proposal | Refusal:
    servers = tuple(server for server, _ in places)
    name = wire.display(places[0][1].name, 120)
    troubled = [(server, site.problem) for server, site in places if site.problem is not None]
    if troubled:
        reason = "; ".join(f"{server}: {why}" if len(places) > 1 else why for server, why in troubled)
        return Refusal(name, servers, reason)
    shapes = {(site.origin, _ref(site), site.release, tuple(sorted(site.shared))) for _, site in places}
    if len(shapes) > 1:
        seen = ", ".join(f"{server}: {site.release} ({_ref(site)[0]} {_ref(site)[1]})" for server, site in places)
        return Refusal(name, servers, f"the servers run different live releases ({seen}); a pin names one release "
                                      "on every server: declare this site by hand")
    site = places[0][1]
    text = render(site, servers, base_path, max(found.releases for _, found in places))
    checked = parse_site(f"{SITES_DIR}/{site.name}.toml", text.encode())
    if isinstance(checked, InvalidSite):
        return Refusal(name, servers, "; ".join(checked.errors))
    assert site.release is not None
    return Proposal(site.name, servers, site.release, text)


def _toml(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's; DEL too, which JSON leaves raw)."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def render(site: FoundSite, servers: Sequence[str], base_path: str, releases: int) -> str:
    """The declaration of a surveyed site (checked by the caller, as `validate` would)."""
    assert site.release is not None and site.commit is not None and site.origin is not None
    where = ", ".join(servers)
    lines = [f"# Imported by `reconciler import` from {where}: live release {site.release}, "
             f"commit {site.commit[:12]}.",
             "# The pin holds the site on that release: the first pass adopts it and deploys nothing.",
             "# Add the deploy `script` (and php, reload, [health]) the site needs, then run",
             f"# `reconciler unpin {site.name}` to follow the {_ref(site)[0]} below.",
             f"server = {_toml(servers[0])}" if len(servers) == 1
             else "servers = [" + ", ".join(_toml(server) for server in servers) + "]"]
    if base_path != DEFAULT_BASE_PATH:
        lines.append(f"base_path = {_toml(base_path)}")
    kind, ref = _ref(site)
    lines += [f"repository = {_toml(site.origin)}", f"{kind} = {_toml(ref)}", f"pin = {_toml(site.release)}"]
    if set(site.shared) != set(DEFAULT_SHARED):
        ordered = [entry for entry in DEFAULT_SHARED if entry in site.shared] + \
                  sorted(entry for entry in site.shared if entry not in DEFAULT_SHARED)
        lines.append("# What the live release links into shared/ (the default list would relink the others).")
        lines.append("shared = [" + ", ".join(_toml(entry) for entry in ordered) + "]")
    if releases > DEFAULT_KEEP:
        lines.append(f"# The server holds {releases} releases: kept, so the first pass prunes none. Lower it to prune.")
        lines.append(f"keep = {releases}")
    return "\n".join(lines) + "\n"
