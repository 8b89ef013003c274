"""ONE shell seam (reconciler/remote/protocol/: the seam's quoting and the wire protocols built with
it): nothing else assembles shell text, and what it
builds keeps every value data, whatever the value.

1. The seam, enforced on the AST of every module under reconciler/.
2. Every builder run through a real /bin/sh in a tmp dir with hostile values (spaces, `$(...)`,
   backticks, quotes, `;|&`, leading `-`); a canary file named PWNED must never appear.
3. A valid 60 KB script of quotes travels on stdin and simply runs: quoted into argv it would
   blow up past the kernel's 128 KiB argument limit (E2BIG) and be retried forever.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import errno
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.core.declarations import MAX_FILE_BYTES
from reconciler.core.facts import ProbeSite
from reconciler.core.layout import LOG_NAME, MANIFEST_NAME, SitePaths, shared_link_target
from reconciler.remote.protocol import finishing, locking, probing, seam, site_steps
from reconciler.remote.protocol.probing import parse_probe
from reconciler.remote.transport.local import LocalTransport
from tests.support import git, make_app_repo, make_decl_repo, reconcile, settings_for, write_site

PACKAGE = Path(__file__).resolve().parents[3] / "reconciler"
SEAM = "remote/protocol/"  # the seam (seam.py) and the protocols written with it

# Shell text that only the seam may write: the commands moved into remote/protocol/ (the deploy steps,
# the probe, the lock), how a command is started, and the plumbing around them.
SHELL_TEXT = re.compile(
    r"\brm -r?f\b|\bmv -[fT]\b|\bln -s\b|\bmkdir (-p )?--|\bgit (clone|checkout|fetch|branch|ls-remote) --"
    r"|\bgit -C \"\$|\bgit remote set-url|\btail -c\b|\|\s*base64\b|/bin/sh\b|\bsh -[ecxs]\b|\bcd --|2>&1"
    r"|>>\s*[\"'{$]|< ?/dev/null|\bprintf '|(\|\||&&)\s*exit\b|\bexit \$|\bexit \d+(;|\n|\s*\})"
    r"|GIT_TERMINAL_PROMPT|\bset -e\b"
    r"|\$\(mktemp\b|\btrap '|\bIFS= read\b|\bhead -c \d|\bstat -c\b|\bdate \+%s|\breadlink \""
    r"|\bcat (> )?\"\$|\"\$[0-9]"
)

DOMAIN = "shop.example.com"
RELEASE = "01082025-091245"
HOSTILE = "b a$(touch PWNED)'s `touch PWNED` \"q\";x|y&z -n"
HOSTILE_ENTRIES = ["storage", ".env", "a b/c", "$(touch PWNED)", "`touch PWNED`", "c;touch PWNED", "x/-rf",
                   "it's", "-n", "*"]


def _modules() -> list[tuple[str, ast.Module]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        found.append((name, ast.parse(path.read_text(), filename=str(path))))
    return found


def _docstrings(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _violations(name: str, tree: ast.Module) -> list[str]:
    found: list[str] = []
    docs = _docstrings(tree)
    for node in ast.walk(tree):
        where = f"reconciler/{name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import) and any(alias.name == "shlex" for alias in node.names):
            found.append(f"{where}: imports shlex")
        elif isinstance(node, ast.ImportFrom):
            if node.module == "shlex":
                found.append(f"{where}: imports from shlex")
            if any(alias.name == "quote" for alias in node.names):
                found.append(f"{where}: imports quote")
        elif isinstance(node, ast.Call):
            func = node.func
            if (isinstance(func, ast.Name) and func.id == "quote") or (
                    isinstance(func, ast.Attribute) and func.attr == "quote"):
                found.append(f"{where}: calls quote()")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            if match := SHELL_TEXT.search(node.value):
                found.append(f"{where}: shell text {match.group(0)!r} in {node.value[:60]!r}")
        elif isinstance(node, ast.Compare) and name.startswith("engine/"):
            # Exit codes are named in protocol/seam.py (EXIT_*); only "ok" (0) may be written as a number.
            sides = [node.left, *node.comparators]
            if any(isinstance(s, ast.Attribute) and s.attr in ("exit_status", "returncode") for s in sides) and any(
                    isinstance(s, ast.Constant) and isinstance(s.value, int) and s.value != 0 for s in sides):
                found.append(f"{where}: compares an exit status with a magic number")
    return found


def test_only_the_seam_writes_shell_text() -> None:
    modules = _modules()
    assert any(name.startswith(SEAM) for name, _ in modules)
    problems = [v for name, tree in modules if not name.startswith(SEAM) for v in _violations(name, tree)]
    assert problems == [], "shell text outside reconciler/remote/protocol/:\n" + "\n".join(problems)


def test_the_seam_check_catches_what_it_should() -> None:
    """The check itself: each kind of violation is found (so an empty list above means something)."""
    sample = ast.parse(
        "import shlex\nfrom reconciler.remote.protocol.seam import quote\n"
        "x = quote('a')\ny = shlex.quote('b')\nz = f\"rm -rf -- {x}\"\nw = 'git clone -- a b'\n"
        "if r.exit_status == 3:\n    pass\n"
    )
    assert len(_violations("engine/sample.py", sample)) == 7
    assert _violations("engine/ok.py", ast.parse('"""Uses `mv -T` (a docstring)."""\nok = r.exit_status == 0\n')) == []
    # The kinds of text the probe and the lock used to write outside the seam.
    moved = [
        "tmp=$(mktemp -d) || exit 1", "trap 'rm -rf \"$tmp\"' EXIT", 'cat "$tmp"/* 2>/dev/null',
        'd="$2/deployments/$1"', 'o=; IFS= read -r o < "$d/x"', 'emit @link "$(readlink "$link")"',
        'out=$(git ls-remote -- "$1" "refs/heads/$2" 2>&1)', "head -c 1024 x", 'echo "@@held $(date +%s)"',
        "$(stat -c %Y x)", 'f=$(mktemp) || exit 1; cat > "$f"',
    ]
    for text in moved:
        assert _violations("remote/sample.py", ast.parse(f"x = {text!r}\n")), text


# --- the builders, through a real /bin/sh ---------------------------------------------------------


def _sh(command: seam.Command, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(seam.local_argv(command.text), input=command.stdin, cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def _ok(command: seam.Command, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = _sh(command, cwd)
    assert result.returncode == 0, (result.returncode, result.stderr, command.text)
    return result


@pytest.fixture
def world(tmp_path: Path) -> Iterator[SitePaths]:
    """A hostile base path with the site provisioned; cwd of every command is tmp_path."""
    paths = SitePaths(str(tmp_path / HOSTILE), DOMAIN)
    _ok(site_steps.provision(paths), tmp_path)
    assert Path(paths.shared).is_dir()
    yield paths
    assert not list(tmp_path.rglob("PWNED")), "a value ran as code"
    assert not (Path.cwd() / "PWNED").exists()


def _claim(paths: SitePaths, tmp_path: Path, script: str | None = None, release: str = RELEASE) -> None:
    manifest = json.dumps({"commit": "c" * 40, "message": HOSTILE})
    _ok(site_steps.claim_release(paths, release, manifest, f"==> {HOSTILE}", script), tmp_path)


def test_claim_writes_manifest_header_and_script_exactly_and_never_twice(world: SitePaths, tmp_path: Path) -> None:
    script = "echo '$(touch PWNED)' \"`touch PWNED`\"\n" + "''" * 1000 + "\nno final newline"
    _claim(world, tmp_path, script)
    release = Path(world.release(RELEASE))
    assert json.loads((release / MANIFEST_NAME).read_text()) == {"commit": "c" * 40, "message": HOSTILE}
    assert (release / LOG_NAME).read_text() == f"==> {HOSTILE}\n"
    staged = release / site_steps.SCRIPT_NAME
    assert staged.read_text() == script
    assert staged.stat().st_mode & 0o077 == 0, "the script may hold secrets: owner-only"
    assert sorted(p.name for p in release.iterdir()) == sorted([MANIFEST_NAME, LOG_NAME, site_steps.SCRIPT_NAME,
                                                                site_steps.SHARED_NAME])
    # A release directory is claimed with a plain mkdir: a second claim fails and changes nothing.
    before = (release / MANIFEST_NAME).read_text()
    assert _sh(site_steps.claim_release(world, RELEASE, "{}", "x", None), tmp_path).returncode != 0
    assert (release / MANIFEST_NAME).read_text() == before


def test_claim_without_a_script_stages_nothing(world: SitePaths, tmp_path: Path) -> None:
    _claim(world, tmp_path)
    assert not (Path(world.release(RELEASE)) / site_steps.SCRIPT_NAME).exists()


def test_single_line_values_must_be_single_lines(world: SitePaths) -> None:
    with pytest.raises(ValueError):
        site_steps.claim_release(world, RELEASE, "{}", "two\nlines", None)
    with pytest.raises(ValueError):
        site_steps.write_manifest(world, RELEASE, "{\n}")


def test_manifest_rewrite_and_failure_record(world: SitePaths, tmp_path: Path) -> None:
    _claim(world, tmp_path)
    release = Path(world.release(RELEASE))
    _ok(site_steps.write_manifest(world, RELEASE, '{"status":"success","x":"it\'s $(touch PWNED)"}'), tmp_path)
    assert json.loads((release / MANIFEST_NAME).read_text())["x"] == "it's $(touch PWNED)"
    note = "==> failed: it's `touch PWNED`\nsecond line $(touch PWNED)\n" + "'" * 200_000
    _ok(site_steps.record_failure(world, RELEASE, '{"status":"failed"}', note), tmp_path)
    assert json.loads((release / MANIFEST_NAME).read_text()) == {"status": "failed"}
    assert (release / LOG_NAME).read_text() == f"==> {HOSTILE}\n" + note + "\n"
    left = sorted(p.name for p in release.iterdir())
    assert left == sorted([MANIFEST_NAME, LOG_NAME, site_steps.SHARED_NAME]), "no temp file left"


def test_link_shared_with_hostile_entries(world: SitePaths, tmp_path: Path) -> None:
    _claim(world, tmp_path)
    release = Path(world.release(RELEASE))
    (release / "storage" / "logs").mkdir(parents=True)  # the repository ships storage/: it seeds shared
    (release / "storage" / "logs" / "seed").write_text("from the repository\n")
    _ok(site_steps.link_shared(world, RELEASE, HOSTILE_ENTRIES), tmp_path)
    shared = Path(world.shared)
    for entry in HOSTILE_ENTRIES:
        link = release / entry
        assert os.readlink(link) == shared_link_target(entry), entry
        assert link.resolve() == (shared / entry).resolve(), entry
    assert (shared / "storage" / "logs" / "seed").read_text() == "from the repository\n"
    assert (shared / ".env").is_file() and (shared / ".env").read_text() == ""
    assert (shared / "a b" / "c").is_dir() and (shared / "x" / "-rf").is_dir()
    # Linking again (the next release) keeps the shared data.
    (shared / ".env").write_text("APP_KEY=secret\n")
    _claim(world, tmp_path, release="02082025-091245")
    _ok(site_steps.link_shared(world, "02082025-091245", HOSTILE_ENTRIES), tmp_path)
    assert (Path(world.release("02082025-091245")) / ".env").read_text() == "APP_KEY=secret\n"


def test_run_script_reads_nothing_on_stdin_and_leaves_no_file(world: SitePaths, tmp_path: Path) -> None:
    script = (
        "printf 'stdin:[%s]\\n' \"$(cat)\"\n"          # stdin is /dev/null: not its own source, not ours
        "printf 'env:%s|%s\\n' \"$RECONCILER_BRANCH\" \"$RECONCILER_DOMAIN\"\n"
        "echo '$(touch PWNED)' > out.txt\n"
    )
    _claim(world, tmp_path, script)
    env = {"RECONCILER_DOMAIN": DOMAIN, "RECONCILER_BRANCH": "feat/$(touch PWNED);x|y&z'q\""}
    _ok(site_steps.run_script(world, RELEASE, env), tmp_path)
    release = Path(world.release(RELEASE))
    log = (release / LOG_NAME).read_text()
    assert "==> script\n" in log
    assert "stdin:[]\n" in log
    assert "env:feat/$(touch PWNED);x|y&z'q\"|shop.example.com\n" in log
    assert "+ echo $(touch PWNED)" in log, "sh -x traces the script into the log"
    assert (release / "out.txt").read_text() == "$(touch PWNED)\n"
    assert not (release / site_steps.SCRIPT_NAME).exists()


def test_run_script_failure_keeps_its_exit_status(world: SitePaths, tmp_path: Path) -> None:
    _claim(world, tmp_path, "true\nexit 7\necho never\n")
    result = _sh(site_steps.run_script(world, RELEASE, {}), tmp_path)
    assert result.returncode == 7
    assert "never" not in (Path(world.release(RELEASE)) / LOG_NAME).read_text()
    assert not (Path(world.release(RELEASE)) / site_steps.SCRIPT_NAME).exists()
    _claim(world, tmp_path, "false\necho never\n", release="02082025-091245")  # sh -e stops at the first failure
    assert _sh(site_steps.run_script(world, "02082025-091245", {}), tmp_path).returncode == 1


def test_reload_runs_long_code_from_stdin(world: SitePaths, tmp_path: Path) -> None:
    _claim(world, tmp_path)
    code = ": " + "''" * 30_000 + "\nprintf 'reloaded [%s]\\n' \"$(cat)\"\n"
    _ok(site_steps.reload(world, RELEASE, code), tmp_path)
    release = Path(world.release(RELEASE))
    assert (release / LOG_NAME).read_text().endswith("==> reload\nreloaded []\n")
    assert not (release / site_steps.RELOAD_NAME).exists()
    assert _sh(site_steps.reload(world, RELEASE, "false\ntrue\n"), tmp_path).returncode == 1


def test_remove_releases_only_removes_releases(world: SitePaths, tmp_path: Path) -> None:
    for name in ("01082025-091245", "02082025-091245", "03082025-091245"):
        _claim(world, tmp_path, release=name)
    _ok(site_steps.remove_releases(world, ["01082025-091245", "03082025-091245"]), tmp_path)
    left = sorted(p.name for p in Path(world.deployments).iterdir())
    assert left == ["02082025-091245", "shared"]
    _ok(site_steps.remove_releases(world, ["01082025-091245"]), tmp_path)  # already gone: fine
    for bad in ("shared", ".repo", "..", "-rf", "01082025-091245/..", "*"):
        with pytest.raises(ValueError):
            site_steps.remove_releases(world, [bad])


def test_log_readers_return_exact_bytes(world: SitePaths, tmp_path: Path) -> None:
    _claim(world, tmp_path)
    log = Path(world.log(RELEASE))
    raw = b"abc\xff\xfe\n\xc3" + "ünï ✓\n".encode() * 10
    log.write_bytes(raw)
    assert _ok(site_steps.tail_log(str(log), 5), tmp_path).stdout == raw[-5:].decode(errors="replace")
    out = subprocess.run(seam.local_argv(site_steps.read_log_base64(str(log), 3).text), capture_output=True,
                         check=True).stdout
    assert base64.b64decode(out) == raw[3:]


def test_clone_with_a_hostile_repository_path_and_branch(world: SitePaths, tmp_path: Path) -> None:
    branch = "feat/$(touch${IFS}PWNED)`touch${IFS}PWNED`;x|y&z'q\""
    app = make_app_repo(tmp_path / "app $(touch PWNED) 'q'")
    git(app, "checkout", "-q", "-b", branch)
    commit = git(app, "rev-parse", "HEAD")
    _claim(world, tmp_path)
    _ok(site_steps.clone(world, str(app), branch, commit, RELEASE), tmp_path)
    release = Path(world.release(RELEASE))
    assert git(release, "rev-parse", "HEAD") == commit
    assert git(release, "rev-parse", "--abbrev-ref", "HEAD") == branch
    assert git(release, "remote", "get-url", "origin") == str(app)
    assert (release / "public" / "index.php").is_file()
    assert "==> clone" in (release / LOG_NAME).read_text()


def test_probe_framing_is_one_vocabulary(world: SitePaths, tmp_path: Path) -> None:
    """The writer (probing.probe) and the reader (probing.parse_probe) share RECORD_END and Tag:
    every tag is printed by the script, and the reader knows each as bare or valued."""
    assert set(probing.Tag) == probing.VALUE_TAGS | probing.BARE_TAGS and not probing.VALUE_TAGS & probing.BARE_TAGS
    command = probing.probe([ProbeSite(DOMAIN, world.base_path)], [("/nowhere", "main")])
    assert command.stdin is not None
    for tag in probing.Tag:
        assert tag in command.stdin, tag
    assert len(command.text.encode()) < 200, "the script travels on stdin, not in argv"
    out = _ok(command, tmp_path).stdout
    assert out.endswith(f"{probing.Tag.END}{probing.RECORD_END}")
    facts = parse_probe(out, [ProbeSite(DOMAIN, world.base_path)], [("/nowhere", "main")])
    assert facts.sites[DOMAIN].provisioned and facts.sites[DOMAIN].shared
    assert facts.heads[("/nowhere", "main")].sha is None


def test_lock_commands_with_a_hostile_base_path(world: SitePaths, tmp_path: Path) -> None:
    lock_dir = Path(world.lock)
    mine, theirs = json.dumps({"run": "mine", "x": HOSTILE}), json.dumps({"run": "theirs"})
    acquired = _ok(locking.lock_acquire(world, mine), tmp_path).stdout
    first, _, probed = acquired.partition("\n")
    assert first == locking.LOCK_ACQUIRED
    assert (lock_dir / site_steps.OWNER_FILE).read_text() == mine + "\n"
    site = parse_probe(probed, [ProbeSite(DOMAIN, world.base_path)], []).sites[DOMAIN]
    assert site.lock == mine and site.provisioned, "probed under the lock: our own owner"
    # Held: the time, the lock dir's age and the owner's first bytes; nothing changes.
    held = _ok(locking.lock_acquire(world, theirs), tmp_path).stdout.split("\n")
    assert re.fullmatch(re.escape(locking.LOCK_HELD) + r" [0-9]+ [0-9]+", held[0]) and held[1] == mine
    _ok(locking.lock_release(world, theirs), tmp_path)  # not the owner: the lock stays
    assert (lock_dir / site_steps.OWNER_FILE).read_text() == mine + "\n"
    _ok(locking.lock_release(world, mine), tmp_path)
    assert not lock_dir.exists()
    # Takeover and unlock remove it whoever holds it; unlock prints the owner first.
    _ok(locking.lock_acquire(world, theirs), tmp_path)
    _ok(locking.lock_takeover(world), tmp_path)
    assert not lock_dir.exists() and sorted(p.name for p in Path(world.deployments).iterdir()) == ["shared"]
    _ok(locking.lock_acquire(world, theirs), tmp_path)
    assert _ok(locking.unlock(world), tmp_path).stdout == theirs + "\n\n"
    assert not lock_dir.exists()
    assert _ok(locking.unlock(world), tmp_path).stdout == "\n"  # nothing to remove: fine
    with pytest.raises(ValueError):
        locking.lock_acquire(world, "two\nlines")


def test_staged_stdin_reaches_the_command_and_the_file_is_gone(tmp_path: Path) -> None:
    data = "line 'one' $(touch PWNED)\n" * 5000
    staged = _ok(seam.Command(seam.STAGE_STDIN.text, data), tmp_path).stdout.rstrip("\n")
    assert Path(staged).read_text() == data
    out = _ok(seam.Command(seam.from_staged(staged, "cat; echo end")), tmp_path).stdout
    assert out == data + "end\n"
    assert not Path(staged).exists()
    assert not list(tmp_path.rglob("PWNED"))


# --- a valid 60 KB script of quotes ----------------------------------------------------------------

BIG_SCRIPT = ": " + "''" * 30_000 + "\ntouch script-ran\n"   # a no-op of 60 000 quotes, then a marker


def test_the_old_argv_path_could_not_even_start() -> None:
    """Before: the script went into argv, quoted. 60 000 quotes become 300 000 bytes, over the
    kernel's limit for one argument, so the command never started (E2BIG)."""
    old = f"sh -e -x -c {seam.quote(BIG_SCRIPT)}"
    assert len(old) > seam.MAX_ARG_BYTES and seam.too_long(old)
    with pytest.raises(OSError) as info:
        subprocess.run(seam.local_argv(old), capture_output=True, check=False)
    assert info.value.errno == errno.E2BIG
    # The local transport used to call that a TransportError (temporary: retried forever, a
    # clone every retry). Now it is the command's own failure, as sh reports one that cannot run.
    result = asyncio.run(LocalTransport().run(old, timeout=30))
    assert result.exit_status == seam.EXIT_CANNOT_RUN
    assert "Argument list too long" in result.stderr


def test_a_60kb_script_of_quotes_deploys(tmp_path: Path) -> None:
    app = make_app_repo(tmp_path / "app")
    decl = make_decl_repo(tmp_path / "decl")
    base = tmp_path / "srv"
    site = write_site(decl, DOMAIN, server="local", base_path=str(base), repository=str(app), script=BIG_SCRIPT)
    assert site.stat().st_size <= MAX_FILE_BYTES, "the declaration is valid (within the size limit)"
    outcome = reconcile(settings_for(decl, tmp_path / "state"))[DOMAIN]
    assert (outcome.sync, outcome.health) == ("Synced", "Healthy"), outcome.message
    live = (base / DOMAIN).resolve()
    assert (live / "script-ran").is_file()
    assert not (live / site_steps.SCRIPT_NAME).exists()


def test_one_build_command_claims_clones_and_links_with_hostile_values(world: SitePaths, tmp_path: Path) -> None:
    """The claim rides in the build's argv (base64), the script waits in the lock (staged when it
    was taken), and the shared entries arrive through the claim: one command, same result."""
    branch = "feat/$(touch${IFS}PWNED)`touch${IFS}PWNED`;x|y&z'q\""
    app = make_app_repo(tmp_path / "app $(touch PWNED) 'q'")
    git(app, "checkout", "-q", "-b", branch)
    commit = git(app, "rev-parse", "HEAD")
    script = "echo '$(touch PWNED)' \"`touch PWNED`\"\n"
    owner = json.dumps({"run": HOSTILE})
    assert _ok(locking.lock_acquire(world, owner, script=script), tmp_path).stdout.startswith(locking.LOCK_ACQUIRED)
    manifest = json.dumps({"commit": commit, "message": HOSTILE})
    claim = site_steps.claim_release(world, RELEASE, manifest, f"==> {HOSTILE}", script, HOSTILE_ENTRIES,
                                script_in_lock=True)
    assert site_steps.claim_fits(claim) and claim.stdin is not None and script not in claim.stdin
    _ok(site_steps.build_release(world, str(app), branch, commit, RELEASE, claim), tmp_path)
    release = Path(world.release(RELEASE))
    assert git(release, "rev-parse", "HEAD") == commit
    assert json.loads((release / MANIFEST_NAME).read_text()) == {"commit": commit, "message": HOSTILE}
    assert (release / site_steps.SCRIPT_NAME).read_text() == script
    assert not (release / site_steps.SHARED_NAME).exists() and not (Path(world.lock) / site_steps.SCRIPT_NAME).exists()
    for entry in HOSTILE_ENTRIES:
        assert (release / entry).is_symlink(), entry
    # The same release name again: the claim's plain mkdir fails, and the build says it was the claim.
    again = _sh(site_steps.build_release(world, str(app), branch, commit, RELEASE, claim), tmp_path)
    assert again.returncode == seam.EXIT_CLAIM
    assert json.loads((release / MANIFEST_NAME).read_text())["commit"] == commit


def test_build_reports_a_shared_entry_it_refuses(world: SitePaths, tmp_path: Path) -> None:
    app = make_app_repo(tmp_path / "app")
    (app / "public" / "uploads").parent.mkdir(exist_ok=True)
    (app / "linked").symlink_to("/etc")
    git(app, "add", "-A")
    git(app, "commit", "-q", "-m", "a symlink")
    commit = git(app, "rev-parse", "HEAD")
    claim = site_steps.claim_release(world, RELEASE, "{}", "==> x", None, ["linked/x"])
    done = _sh(site_steps.build_release(world, str(app), "main", commit, RELEASE, claim), tmp_path)
    assert done.returncode == seam.EXIT_SHARED and "symlink" in done.stderr, done


def test_finish_records_switches_reloads_unlocks_and_reports(world: SitePaths, tmp_path: Path) -> None:
    owner = json.dumps({"run": HOSTILE})
    _ok(locking.lock_acquire(world, owner), tmp_path)
    _claim(world, tmp_path)
    reload_code = "echo reloading '$(touch PWNED)'\n: " + "''" * 2000 + "\nexit 3"
    done = _ok(finishing.finish_release(world, RELEASE, json.dumps({"status": "success"}), reload_code, owner, 4096),
               tmp_path)
    report = finishing.finish_report(done.stdout)
    assert (report.reload_exit, report.unlock_exit) == (3, 0)
    assert report.log.startswith(f"==> {HOSTILE}\n") and "==> reload\nreloading $(touch PWNED)" in report.log
    assert json.loads(Path(world.manifest(RELEASE)).read_text()) == {"status": "success"}
    assert os.readlink(world.site_link) == world.link_target(RELEASE)
    assert not Path(world.lock).exists() and not (Path(world.release(RELEASE)) / site_steps.RELOAD_NAME).exists()
    # Someone else's lock is never released; a real directory at the site path is never replaced.
    _ok(locking.lock_acquire(world, json.dumps({"run": "theirs"})), tmp_path)
    again = _ok(finishing.finish_release(world, RELEASE, "{}", None, owner, 10), tmp_path)
    assert finishing.finish_report(again.stdout).unlock_exit == 0 and Path(world.lock).exists()
    os.remove(world.site_link)
    os.mkdir(world.site_link)
    refused = _sh(finishing.finish_release(world, RELEASE, "{}", None, None, 10), tmp_path)
    assert refused.returncode == seam.EXIT_NOT_A_SYMLINK
