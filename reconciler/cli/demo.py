"""`make demo`: a throwaway sandbox under state/demo/ that walks through the main job.

It builds a Laravel-like app repository and a declarations repository, starts the real
daemon (`reconciler run`, local transport, SQLite) and commits changes for it to converge:
declare a site -> new app commit -> pin (rollback) -> unpin -> a hand-made drift -> a failed
deploy -> `retry` once the cause is fixed -> `redeploy` -> an encrypted environment set and edited with
`reconciler env set` and `env edit` and written to the server's shared/.env, printing `reconciler status` after
each. On a terminal the daemon then keeps running until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from reconciler.cli.main import main as cli
from reconciler.engine import sealed

DOMAIN = "shop.example.test"
POLL_SECONDS = 3


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _commit(repo: Path, message: str) -> str:
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


def _step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m" if sys.stdout.isatty() else f"\n== {title}", flush=True)


def _reconciler(root: Path, *args: str) -> int:
    argv = ["--config", str(root / "reconciler.toml"), *args]
    print("$ reconciler " + " ".join(args), flush=True)
    code = cli(argv)
    sys.stdout.flush()
    return code


def build_sandbox(root: Path) -> None:
    if root.exists():
        shutil.rmtree(root)
    app, decl = root / "app", root / "declarations"
    (app / "public").mkdir(parents=True)
    (app / "storage" / "logs").mkdir(parents=True)
    (app / "storage" / "logs" / ".gitkeep").write_text("")
    (app / "public" / "index.php").write_text("<?php echo 'Hello from v1';\n")
    _git(app, "init", "-q", "-b", "main")
    _commit(app, "v1")
    (decl / "sites.d").mkdir(parents=True)
    _git(decl, "init", "-q", "-b", "main")
    (decl / "sites.d" / f"{DOMAIN}.toml").write_text(
        '# The demo site: deployed on this machine (server = "local").\n'
        'server     = "local"\n'
        f'base_path  = "{root / "srv"}"\n'
        f'repository = "{app}"\n'
        'branch     = "main"\n'
        'script     = """\n'
        'echo "composer install --no-dev (simulated)"\n'
        'cat public/index.php\n'
        '"""\n'
        "keep       = 5\n"
    )


def _site_says(root: Path) -> str:
    link = root / "srv" / DOMAIN
    if not link.is_symlink():
        return f"{link} does not exist yet"
    index = link / "public" / "index.php"
    return f"{link} -> {os.readlink(link)}  serves: {index.read_text().strip()}"


def _active(root: Path) -> str | None:
    link = root / "srv" / DOMAIN
    return os.readlink(link) if link.is_symlink() else None


def _wait_for_change(root: Path, before: str | None, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    while time.monotonic() < deadline:
        if _active(root) != before:
            print(f"   ... {what} after {time.monotonic() - started:.1f}s", flush=True)
            _wait_for_sync(root, "Synced")  # and recorded, so the status printed next agrees
            return
        time.sleep(0.05)
    print(f"   ... no change within {timeout:.0f}s; see the daemon's lines above", flush=True)


def _wait_for_sync(root: Path, sync: str, timeout: float = 60.0) -> None:
    """Until the state database says the demo site is `sync` (read-only, like any observer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(sqlite3.Error):
            db = sqlite3.connect(f"file:{root / 'state' / 'reconciler.db'}?mode=ro", uri=True)
            try:
                row = db.execute("select sync from sites where domain = ?", (DOMAIN,)).fetchone()
            finally:
                db.close()
            if row is not None and row[0] == sync:
                return
        time.sleep(0.1)
    print(f"   ... not {sync} within {timeout:.0f}s; see the daemon's lines above", flush=True)


def _relay(stream: IO[str]) -> None:
    for line in stream:
        print(f"   daemon | {line.rstrip()}", flush=True)


def main() -> int:
    for key, value in {"GIT_AUTHOR_NAME": "reconciler-demo", "GIT_AUTHOR_EMAIL": "demo@localhost",
                       "GIT_COMMITTER_NAME": "reconciler-demo", "GIT_COMMITTER_EMAIL": "demo@localhost"}.items():
        os.environ.setdefault(key, value)
    root = (Path("state") / "demo").resolve()
    build_sandbox(root)
    decl = root / "declarations"
    _git(decl, "commit", "-q", "--allow-empty", "-m", "an empty declarations repository")
    identity = prepare_env(root)
    # The demo site lives on this machine (server = "local"): its script runs as you. A real
    # configuration refuses that unless it opts in, as this sandbox's does.
    (root / "reconciler.toml").write_text(
        f'repo = "{decl}"\nstate_dir = "{root / "state"}"\ninterval = {POLL_SECONDS}\n'
        '# server = "local" sites run their script as the reconciler user on this host: opted in.\n'
        "allow_local = true\n"
        "# The reconciler's age key: it decrypts sites.d/<domain>.env.age.\n"
        f'age_identity_file = "{identity}"\n')

    _step(f"Starting the daemon: reconciler run (polls app branches every {POLL_SECONDS}s)")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "--config", str(root / "reconciler.toml"), "run"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert daemon.stderr is not None
    threading.Thread(target=_relay, args=(daemon.stderr,), daemon=True).start()
    try:
        time.sleep(1.5)
        for scene in (_declare_and_deploy, _rollback_and_unpin, _drift, _failure_retry_redeploy, _encrypted_env):
            scene(root)
        if sys.stdin.isatty() and not os.environ.get("CI"):
            _step("The daemon keeps running. Press Ctrl-C to stop it.")
            print(f"Next, try in another terminal:\n"
                  f"  edit {decl / 'sites.d' / (DOMAIN + '.toml')} (e.g. make the script fail: add a line `false`)\n"
                  f"  git -C {decl} commit -am 'break it'\n"
                  f"  .venv/bin/reconciler --config {root / 'reconciler.toml'} status")
            with contextlib.suppress(KeyboardInterrupt):
                daemon.wait()
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
    print(f"\nDaemon stopped (exit {daemon.returncode}). The sandbox stays in {root}.")
    return 0 if daemon.returncode in (0, -signal.SIGINT) else 1


def _declare_and_deploy(root: Path) -> None:
    _step("1. Commit a site declaration: the daemon provisions and deploys it")
    before = _active(root)
    _commit(root / "declarations", f"declare {DOMAIN}")
    _wait_for_change(root, before, "live")
    _reconciler(root, "status")
    print(_site_says(root))

    _step("2. A new commit on the app branch: deployed at the next poll")
    app = root / "app"
    (app / "public" / "index.php").write_text("<?php echo 'Hello from v2';\n")
    before = _active(root)
    _commit(app, "v2")
    _wait_for_change(root, before, "new release live")
    _reconciler(root, "history", DOMAIN)
    print(_site_says(root))


def _rollback_and_unpin(root: Path) -> None:
    for title, command, seen in (
            ("3. Roll back: `reconciler rollback` commits a pin; the daemon switches back, no rebuild", "rollback",
             "rolled back"),
            ("4. Unpin: back to the branch head, again without rebuilding", "unpin", "rolled forward")):
        _step(title)
        before = _active(root)
        _reconciler(root, command, DOMAIN)
        _wait_for_change(root, before, seen)
        _reconciler(root, "status")
        print(_site_says(root))


def _drift(root: Path) -> None:
    _step("5. Drift: someone points the site at the old release by hand")
    before = _active(root)
    releases = sorted(p.name for p in (root / "srv" / "deployments" / DOMAIN).iterdir() if p.name[0].isdigit())
    old = next(name for name in releases if f"/{name}" not in (before or ""))
    (root / "srv" / "drift").symlink_to(f"deployments/{DOMAIN}/{old}")
    os.replace(root / "srv" / "drift", root / "srv" / DOMAIN)
    print(f"   hand-made change: {_site_says(root)}")
    drifted = _active(root)
    _wait_for_change(root, drifted, "corrected by the next poll")
    print(_site_says(root))


def _failure_retry_redeploy(root: Path) -> None:
    _step("6. A deploy fails: the script needs a package mirror that is down")
    decl = root / "declarations"
    site_file = decl / "sites.d" / f"{DOMAIN}.toml"
    mirror = root / "mirror-up"
    site_file.write_text(site_file.read_text().replace(
        'echo "composer install --no-dev (simulated)"\n',
        f"test -e {mirror}  # is the package mirror up? (if not, the deploy fails)\n"
        'echo "composer install --no-dev (simulated)"\n'))
    _commit(decl, "composer needs the package mirror")
    _wait_for_sync(root, "Failed")
    _reconciler(root, "status")
    print(f"   the old release keeps serving: {_site_says(root)}")
    print("   the failure is remembered: the daemon does not retry it in a loop")

    _step("7. The mirror is back: `reconciler retry` forgets the failure and builds now")
    mirror.touch()
    _reconciler(root, "retry", DOMAIN)
    print(_site_says(root))

    _step("8. `reconciler redeploy`: the same commit again as a fresh release (e.g. after a .env change)")
    _reconciler(root, "redeploy", DOMAIN)
    _reconciler(root, "history", DOMAIN)



def prepare_env(root: Path) -> Path:
    """The reconciler's age key (as `age-keygen -o` makes it) outside the repository, and the
    repository's recipients file naming its public key (committed with the site)."""
    identity = root / "age.key"
    public = sealed.generate_key(identity)
    recipients = root / "declarations" / ".reconciler" / "recipients"
    recipients.parent.mkdir(parents=True, exist_ok=True)
    recipients.write_text("# age public keys the env files are encrypted to: the reconciler's, then the team's\n"
                          f"{public}\n")
    return identity


def env_says(root: Path) -> str:
    """What the server's shared/.env holds, shown by digest and non-secret keys only."""
    env = root / "srv" / "deployments" / DOMAIN / "shared" / ".env"
    if not env.is_file():
        return f"{env} does not exist yet"
    data = env.read_bytes()
    shown = [line for line in data.decode(errors="replace").splitlines() if line.startswith(("APP_ENV=", "MAIL_HOST="))]
    return (f"{env}: mode {env.stat().st_mode & 0o777:o}, sha256 {hashlib.sha256(data).hexdigest()[:12]}, "
            + ", ".join(shown))


def _encrypted_env(root: Path) -> None:
    _step("9. An encrypted environment: `reconciler env set` and `env edit` commit sites.d/<domain>.env.age; "
          "the daemon writes shared/.env (0600) on the server")
    env = root / "srv" / "deployments" / DOMAIN / "shared" / ".env"
    before = env.read_bytes() if env.is_file() else b""
    _reconciler(root, "env", "set", DOMAIN, "APP_ENV=production", "DB_PASSWORD=demo-only-secret")
    before = _landed(env, before)
    print(f"   on the server: {env_says(root)}")
    # `env edit` runs $EDITOR on a private decrypted copy; the demo's "editor" appends one line.
    editor = root / "demo-editor"
    editor.write_text(f"#!{sys.executable}\nimport sys\n"
                      "with open(sys.argv[1], 'a') as env:\n    env.write('MAIL_HOST=smtp.example.com\\n')\n")
    editor.chmod(0o700)
    saved = os.environ.get("EDITOR")
    os.environ["EDITOR"] = str(editor)
    try:
        _reconciler(root, "env", "edit", DOMAIN)
    finally:
        if saved is None:
            os.environ.pop("EDITOR", None)
        else:
            os.environ["EDITOR"] = saved
    _reconciler(root, "env", "keys", DOMAIN)
    print(f"   in git: {_git(root / 'declarations', 'log', '-1', '--stat', '--format=%s')}")
    _landed(env, before)
    print(f"   on the server: {env_says(root)}")


def _landed(env: Path, before: bytes) -> bytes:
    """The server's shared/.env once the daemon rewrote it (at most a minute), as it is then."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not env.is_file() or env.read_bytes() == before):
        time.sleep(0.1)
    return env.read_bytes() if env.is_file() else b""


if __name__ == "__main__":
    raise SystemExit(main())
