"""service/systemd.py and the shipped unit: the unit file passes `systemd-analyze verify` and says
what the daemon relies on; the Notifier sends sd_notify messages as single datagrams to a real
socket (path or abstract), is a no-op outside systemd and derives the watchdog interval."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from reconciler.config import Settings, validate_settings
from reconciler.service.systemd import Notifier
from reconciler.settings_file import read_settings_file

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "reconciler.service"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser


def test_unit_is_a_hardened_notify_service() -> None:
    service = _unit()["Service"]
    assert service["Type"] == "notify"
    assert service["Restart"] == "on-failure"
    assert service["StateDirectory"] == "reconciler"
    assert service["WatchdogSec"]
    for key, value in {"ProtectSystem": "strict", "ProtectHome": "true", "PrivateTmp": "true",
                       "NoNewPrivileges": "true"}.items():
        assert service[key] == value, key


@pytest.mark.parametrize("repo_exists", [True, False], ids=["local-repo", "repo-url"])
def test_systemd_analyze_verify(tmp_path: Path, repo_exists: bool) -> None:
    """The unit passes `systemd-analyze verify` with a local declarations repository at its
    ReadWritePaths= and without one (a repository URL: nothing at that path)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze not found (install systemd; .ci/run does)")
    repo = tmp_path / "sites.git"
    if repo_exists:
        repo.mkdir()
    # verify checks that ExecStart exists: point it at this checkout's interpreter, and the
    # repository path at this test's, unchanged otherwise.
    text = UNIT.read_text().replace("/opt/reconciler/.venv/bin/reconciler run", f"{sys.executable} -m reconciler run")
    assert "/srv/sites.git" in text
    text = text.replace("/srv/sites.git", str(repo))
    unit = tmp_path / "reconciler.service"
    unit.write_text(text)
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    # verify exits 0 on unknown keys and bad values ("ignoring"): any line about our file is a defect.
    problems = [line for line in result.stderr.splitlines() if str(unit) in line]
    assert problems == [], result.stderr


# --- Notifier against a real datagram socket ---------------------------------------------------------


def _receive(listener: socket.socket) -> str:
    return listener.recv(65536).decode()


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_notifier_sends_each_message_as_one_datagram(short_dir: Path, kind: str) -> None:
    address = str(short_dir / "n.sock") if kind == "path" else f"@reconciler-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + address[1:] if address.startswith("@") else address)
        listener.settimeout(5)
        notifier = Notifier({"NOTIFY_SOCKET": address})
        assert notifier.enabled
        notifier.ready("first pass scheduled")
        assert _receive(listener).split("\n") == ["READY=1", "STATUS=first pass scheduled"]
        notifier.status("2 synced, 1 failed")
        assert _receive(listener) == "STATUS=2 synced, 1 failed"
        notifier.watchdog()
        assert _receive(listener) == "WATCHDOG=1"
        notifier.stopping()
        assert "STOPPING=1" in _receive(listener).split("\n")


def test_notifier_is_a_no_op_outside_systemd_and_survives_a_dead_socket(short_dir: Path) -> None:
    quiet = Notifier({})
    assert not quiet.enabled and quiet.watchdog_interval is None
    quiet.ready("x")
    quiet.watchdog()
    # The socket path exists in the environment but nobody listens (systemd went away).
    gone = Notifier({"NOTIFY_SOCKET": str(short_dir / "nobody.sock")})
    gone.ready("x")
    gone.status("y")
    gone.stopping()
    Notifier({"NOTIFY_SOCKET": f"@reconciler-test-{uuid.uuid4().hex}"}).watchdog()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "1000000"}, 0.5),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_notifier_watchdog_interval_is_half_of_watchdog_usec(environ: dict[str, str], expected: float | None) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": "@reconciler-test", **environ})
    assert notifier.watchdog_interval == expected


# --- the shipped settings template: complete, and what the unit expects -------------------------

TEMPLATE = ROOT / "systemd" / "reconciler.toml"
_OPTIONAL = re.compile(r"# ?([a-z_]+) *= ")  # "# key = example": an optional setting, shown commented


def _template_settings(text: str, path: Path) -> Settings:
    path.write_text(text)
    return validate_settings(read_settings_file(path, {}), path)


def _uncommented(text: str) -> str:
    """The template with every optional setting and table example ([[notify]], [[window]])
    switched on (a key that is already set, like a second `repo` example, stays a comment)."""
    set_keys = {line.split("=")[0].strip() for line in text.splitlines() if re.match(r"[a-z_]+ *=", line)}
    out = []
    for line in text.splitlines():
        match = _OPTIONAL.match(line)
        if (match and match.group(1) not in set_keys) or re.match(r"# \[\[[a-z_]+\]\]", line):
            line = line[2:] if line.startswith("# ") else line[1:]
        out.append(line)
    return "\n".join(out) + "\n"


def test_the_settings_template_loads_as_shipped_and_with_every_option_on(tmp_path: Path) -> None:
    """systemd/reconciler.toml is read by the real loader as shipped (the service's settings),
    and with every optional setting and both [[notify]] examples switched on: no example in it
    is a configuration error."""
    shipped = _template_settings(TEMPLATE.read_text(), tmp_path / "reconciler.toml")
    assert (shipped.repo, shipped.state_dir) == (Path("/srv/sites.git"), Path("/var/lib/reconciler"))
    assert shipped.identity_file == Path("/etc/reconciler/id_ed25519") and shipped.listen is None
    everything = _template_settings(_uncommented(TEMPLATE.read_text()), tmp_path / "all.toml")
    assert everything.listen == "127.0.0.1:9180" and everything.http_hosts == ["deploy.example.com"]
    assert [target.chat for target in everything.notify] == [False, True]
    assert [(w.kind, w.hours) for w in everything.window] == [("deny", "18:00-08:00")]
    assert everything.age_identity_file == Path("/etc/reconciler/age.key")
    assert everything.repo_token_file == Path("/etc/reconciler/repo_token")


def test_the_settings_template_names_every_setting() -> None:
    """Every key the configuration accepts is in the template, set or shown commented, so an
    operator finds listen, api_token, notify, repo_* and http_hosts in one file."""
    text = TEMPLATE.read_text()
    named = {m.group(1) for line in text.splitlines() if (m := re.match(r"(?:# ?)?([a-z_]+) *= ", line))}
    named |= set(re.findall(r"^# ?\[\[([a-z_]+)\]\]", text, flags=re.MULTILINE))  # tables: [[notify]], [[window]]
    assert sorted(set(Settings.model_fields) - named) == []


@pytest.mark.parametrize("repo", ["/srv/sites.git", "git@github.com:acme/sites.git"])
def test_the_unit_can_start_with_either_kind_of_repo(tmp_path: Path, repo: str) -> None:
    """Every path the daemon writes under the template's settings is writable in the unit's
    namespace (its StateDirectory= or ReadWritePaths=), and every ReadWritePaths= entry that
    may not exist carries the '-' prefix: with a repository URL there is no /srv/sites.git, and
    systemd refuses to start a unit whose ReadWritePaths= names a missing path (226/NAMESPACE)."""
    text = TEMPLATE.read_text().replace('repo          = "/srv/sites.git"', f'repo = "{repo}"')
    settings = _template_settings(text, tmp_path / "reconciler.toml")
    service = _unit()["Service"]
    writable = service.get("ReadWritePaths", "").split()
    assert all(entry.startswith("-") for entry in writable), writable  # each may be missing on a host
    writable_paths = [Path(entry.lstrip("-")) for entry in writable]
    state = Path("/var/lib") / service["StateDirectory"]
    written = [settings.state_dir, settings.local_repo]  # a URL's mirror lives in the state dir
    for path in written:
        assert path == state or state in path.parents or path in writable_paths, path
