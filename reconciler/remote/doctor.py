"""What a server needs for its declared sites, checked in one command (`reconciler doctor`):
which checks apply (`requirements`), running them (`examine`), and for each one missing, the fix.
The command and the strict reader of its answers are remote/protocol/doctoring.py's."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from reconciler.core import wire
from reconciler.core.declarations import SiteDeclaration
from reconciler.errors import TransportError
from reconciler.remote.protocol.doctoring import Answer, Check, Kind, doctor, parse_answers
from reconciler.remote.transport import Transport

MIN_FREE_KIB = 1024 * 1024  # below 1 GiB free on base_path's file system, a release may not fit
GIT_SECONDS = 20  # one `git ls-remote` of an app repository (as a probe's, heads.DEFAULT_GIT_TIMEOUT)


@dataclass(frozen=True)
class Requirement:
    """One thing the server needs: what it is (`what`), why (`why`), the check, and the fix."""

    what: str
    why: str
    check: Check
    fix: str


@dataclass(frozen=True)
class Finding:
    requirement: Requirement
    answer: Answer

    @property
    def ok(self) -> bool:
        return self.answer.ok


def _program(name: str, why: str, fix: str) -> Requirement:
    return Requirement(name, why, Check(Kind.PROGRAM, (name,)), fix)


def requirements(sites: Iterable[SiteDeclaration]) -> list[Requirement]:
    """What a server hosting `sites` needs, each once."""
    sites = list(sites)
    found = [
        _program("git", "every deploy clones and fetches the app with git",
                 "install git on the server (Debian/Ubuntu: apt-get install git)"),
        _program("timeout", "bounds git ls-remote in the probe and [health] command checks",
                 "install GNU coreutils (Debian/Ubuntu: apt-get install coreutils)"),
        Requirement("GNU find", "the probe reads every site link with one find -printf (else one readlink per site)",
                    Check(Kind.GNU_FIND), "install GNU findutils (Debian/Ubuntu: apt-get install findutils)"),
    ]
    if any(site.health is not None and site.health.url is not None for site in sites):
        found.append(_program("curl", "[health] url checks fetch the URL with curl",
                              "install curl on the server (Debian/Ubuntu: apt-get install curl)"))
    for repository in sorted({site.repository for site in sites}):
        found.append(Requirement(
            f"git access to {repository}", "each deploy fetches the app repository from the server, as the deploy user",
            Check(Kind.GIT_REMOTE, (repository,)), _git_fix(repository)))
    # `php = "V"` reloads with sudo unless the site says its own `reload`; either way an FPM reload
    # drops in-flight requests without process_control_timeout.
    for php in sorted({site.php for site in sites if site.php is not None and site.reload is None}):
        words = ("service", f"php{php}-fpm", "reload")
        found.append(Requirement(
            f"passwordless sudo for {' '.join(words)}", f'php = "{php}" reloads PHP-FPM after every switch, '
            "with sudo -n (nobody is there to type a password)", Check(Kind.SUDO, words),
            f"install sudo and add a sudoers line on the server (visudo -f /etc/sudoers.d/reconciler): "
            f"DEPLOY_USER ALL=(root) NOPASSWD: /usr/sbin/service php{php}-fpm reload"))
    for php in sorted({site.php for site in sites if site.php is not None}):
        conf = f"/etc/php/{php}/fpm/php-fpm.conf"
        found.append(Requirement(
            f"PHP-FPM {php} process_control_timeout", "without it a reload ends in-flight requests (HTTP 502)",
            Check(Kind.FPM, (conf,)),
            f"set process_control_timeout = 10s in the [global] section of {conf} (the FPM's own config "
            "if it lives elsewhere), then restart PHP-FPM once"))
    for base in sorted({site.base_path for site in sites}):
        found.append(Requirement(
            f"disk space for {base}", f"each release is a checkout of its app (at least {MIN_FREE_KIB // 1024} MiB "
            "free wanted)", Check(Kind.DISK, (base, str(MIN_FREE_KIB))),
            "free space there, lower the sites' `keep`, or run reconciler prune"))
    return found


def _git_fix(repository: str) -> str:
    host = _host(repository)
    if host is None:
        return "make the repository readable by the deploy user on the server (path and permissions)"
    if repository.lower().startswith(("https://", "http://")):
        return f"as the deploy user on the server: a git credential for {host} (git config credential.helper)"
    return (f"as the deploy user on the server: give it a key the git host accepts (e.g. ~/.ssh/id_ed25519, "
            f"its .pub added as a deploy key of the repository) and the host's key in ~/.ssh/known_hosts "
            f"(ssh-keyscan -H {host} >> ~/.ssh/known_hosts, then check the fingerprint)")


def _host(repository: str) -> str | None:
    """The git host a repository URL names (for the fix), None for a local path."""
    rest = repository.split("://", 1)[1] if "://" in repository else repository
    authority = rest.split("/", 1)[0]
    if "://" not in repository and ":" not in authority:
        return None
    host = authority.rpartition("@")[2]
    if host.startswith("["):
        return host[1:].partition("]")[0] or None
    return host.partition(":")[0] or None


def explain(finding: Finding) -> str:
    """Why a missing requirement failed, from its (already sanitised) answer: for git access,
    which of the key or known_hosts is missing when ssh said so."""
    detail = finding.answer.detail
    if finding.requirement.check.kind is Kind.GIT_REMOTE:
        if "Host key verification failed" in detail:
            return "the git host's key is not in the deploy user's known_hosts (" + detail + ")"
        if "Permission denied" in detail:
            return "the git host refused the deploy user's key, or it has none (" + detail + ")"
    return detail


async def examine(transport: Transport, needs: list[Requirement], timeout: float) -> list[Finding]:
    """Check `needs` on the server in one command; one finding each, in order. Raises
    TransportError when the server cannot be reached or the command cannot run."""
    if not needs:
        return []
    command = doctor([need.check for need in needs], GIT_SECONDS)
    result = await transport.run(command.text, stdin=command.stdin, timeout=max(timeout, GIT_SECONDS + 15))
    if not result.ok:
        raise TransportError(f"{transport.name}: the doctor's command failed (exit {result.exit_status}): "
                             f"{wire.display(result.tail(2), 200)}")
    return [Finding(need, answer) for need, answer in zip(needs, parse_answers(result.stdout, len(needs)),
                                                         strict=True)]
