"""A server layout for probe tests: release directories with manifests, site links of every
kind and other sites on the same base path, built on real disk; and running a probe command
with a real /bin/sh (tests/remote/test_probe.py, tests/remote/protocol/test_probing.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from reconciler.core.layout import MANIFEST_NAME
from reconciler.core.manifest import Manifest
from reconciler.remote.protocol import seam
from tests.support import git

DOMAIN = "shop.example.com"
HEAD = "a" * 40
OLD = "b" * 40
R_OK = "31072025-143022"
R_NEWER = "01082025-091245"
R_FAIL = "15072025-100000"
R_UPD = "02082025-080000"
R_CORRUPT = "10072025-000000"
R_EMPTY_MANIFEST = "11072025-000000"
R_ADOPT = "01072025-120000"
R_BARE = "05072025-120000"  # a release dir with neither manifest nor git
R_FILE = "03082025-000000"  # release-shaped name that is a plain file
R_LINK = "04082025-000000"  # release-shaped name that is a symlink to a release
R_BADDATE = "31022025-101010"  # release-shaped dir with an impossible date
MAIN = "refs/heads/main"  # heads are probed by full ref (refs/heads/<branch>, refs/tags/<tag>)

def manifest(commit: str, status: str, **extra: str) -> Manifest:
    return Manifest(commit=commit, branch="main", repository="/srv/git/shop.git", build_key="0123456789abcdef",
                    status=status, started_at="2025-07-31T14:30:22Z", completed_at="2025-07-31T14:31:00Z",
                    **extra)


def release(deployments: Path, name: str, data: Manifest | str | None) -> Path:
    path = deployments / name
    path.mkdir(parents=True)
    (path / "deployment.log").write_text("==> done\n")
    if isinstance(data, Manifest):
        (path / MANIFEST_NAME).write_text(data.to_json())
    elif isinstance(data, str):
        (path / MANIFEST_NAME).write_text(data)
    return path


def build_server(base: Path) -> dict[str, object]:
    """A server holding every kind of thing a probe can meet. Returns what the test must find."""
    base.mkdir(parents=True)
    deployments = base / "deployments" / DOMAIN
    (deployments / "shared" / "storage").mkdir(parents=True)
    ok = manifest(HEAD, "success", message="it's \"fine\"; $(touch pwned)\nsecond line",
                  declarations_commit="d" * 40)
    newer = manifest(OLD, "success")
    failed = manifest(OLD, "failed", message="deploy script failed (exit 3)")
    building = manifest(HEAD, "updating")
    release(deployments, R_OK, ok)
    release(deployments, R_NEWER, newer)
    release(deployments, R_FAIL, failed)
    release(deployments, R_UPD, building)
    release(deployments, R_CORRUPT, '{"commit": "abc", "status": ')
    release(deployments, R_EMPTY_MANIFEST, "")
    release(deployments, R_BARE, None)
    release(deployments, R_BADDATE, manifest(HEAD, "success"))
    adopted = release(deployments, R_ADOPT, None)
    git(adopted, "init", "-q", "-b", "main")
    (adopted / "index.php").write_text("<?php\n")
    git(adopted, "add", "-A")
    git(adopted, "commit", "-q", "-m", "adopted")
    adopted_head = git(adopted, "rev-parse", "HEAD")
    (deployments / "junk").mkdir()
    (deployments / "20250731-143022").mkdir()  # ISO order: the glob shape, but day 20 month 25
    (deployments / R_FILE).write_text("not a release\n")
    os.symlink(R_OK, deployments / R_LINK)
    (deployments / "notes.txt").write_text("x\n")
    os.symlink(f"deployments/{DOMAIN}/{R_OK}", base / DOMAIN)

    # other sites on the same server
    os.symlink("deployments/dangling.example.com/01012025-000000", base / "dangling.example.com")
    (base / "dir.example.com" / "public").mkdir(parents=True)
    (base / "file.example.com").write_text("<html>\n")
    locked = base / "deployments" / "locked.example.com"
    (locked / ".reconciler-lock").mkdir(parents=True)
    (locked / ".reconciler-lock" / "owner").write_text("host-1 4242 token-xyz\nsecond line is not read\n")
    os.symlink("/somewhere/else/entirely", base / "foreign.example.com")
    other = base / "deployments" / "other.example.com"
    release(other, R_OK, manifest(HEAD, "success"))
    os.symlink(f"deployments/other.example.com/{R_OK}", base / "other.example.com")
    return {"ok": ok, "newer": newer, "failed": failed, "building": building, "adopted_head": adopted_head}


SITE_NAMES = ["shop.example.com", "dangling.example.com", "dir.example.com", "file.example.com",
              "new.example.com", "locked.example.com", "foreign.example.com"]


def run_probe(command: seam.Command, cwd: Path) -> bytes:
    """The probe's raw output: bytes, as a server sends them (parse_probe decodes with replace)."""
    result = subprocess.run(seam.local_argv(command.text), input=(command.stdin or "").encode(), cwd=cwd,
                            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def no_pwned(*roots: Path) -> None:
    for root in roots:
        found = [str(p) for p in root.rglob("*pwned*") if p.name == "pwned"]
        assert found == [], f"a value was executed as code: {found}"
