"""Bash completion treats site names as data.

Site names reach the completion script from `reconciler status --json`, which lists invalid
declarations under their file-name stem, so any committer to the declarations branch picks
them. Fed to `compgen -W`, a name like `$(echo${IFS}<base64>|base64${IFS}-d|sh)` ran at TAB
as the operator. Here real bash sources the real script and completes against a real
declarations repository holding such names: no canary may appear, the valid names are still
offered, and a name outside [a-z0-9.-] is not offered at all.

`RECONCILER_UNDER_TEST=<checkout>` runs another checkout's `reconciler` (tests/support/process.py);
against the code before the fix the canaries appear.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import make_decl_repo, write_config, write_site
from tests.support.process import ROOT, check_code_under_test, clean_env, code_under_test

VALID = ("web.example.com", "api.example.com")
BROKEN = "broken.example.com"  # an invalid declaration with a clean name: still offered
UNOFFERED = ("Shop.example.com", "sp ace.example.com", "semi;colon.example.com")
# The command and the word being completed arrive as $1 and $2, so the probe itself quotes nothing.
PROBE = ('source <(reconciler completion bash); COMP_WORDS=(reconciler "$1" "$2"); COMP_CWORD=2; '
         '_reconciler; printf "%s\\n" "${COMPREPLY[@]}"')


def encoded(command: str) -> str:
    """base64 of `command` (padded with spaces until the encoding holds no '/', which no file name can)."""
    while "/" in (text := base64.b64encode(command.encode()).decode()):
        command += " "
    return text


@dataclass
class Completion:
    cwd: Path
    env: dict[str, str]
    canaries: list[Path]

    def complete(self, command: str, cur: str = "") -> list[str]:
        done = subprocess.run(["bash", "-c", PROBE, "bash", command, cur], cwd=self.cwd, env=self.env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done
        return [line for line in done.stdout.splitlines() if line]


@pytest.fixture
def completion(tmp_path: Path) -> Completion:
    decl = make_decl_repo(tmp_path / "decl")
    for domain in VALID:
        write_site(decl, domain, server="local", base_path=str(tmp_path / "srv"), repository=str(tmp_path / "app"))
    write_site(decl, BROKEN, server="local", keep=0)
    canaries = [tmp_path / "PWNED_subst", tmp_path / "PWNED_backquote", tmp_path / "PWNED_brace"]
    hostile = [
        f"$(echo${{IFS}}{encoded(f'touch {canaries[0]}')}|base64${{IFS}}-d|sh)",
        f"`echo${{IFS}}{encoded(f'touch {canaries[1]}')}|base64${{IFS}}-d|sh`",
        f"x${{IFS:$(echo${{IFS}}{encoded(f'touch {canaries[2]}')}|base64${{IFS}}-d|sh)}}",
    ]
    for stem in (*hostile, *UNOFFERED):
        write_site(decl, stem, commit=False, raw='server = "local"\n')
    subprocess.run(["git", "add", "-A"], cwd=decl, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "hostile names"], cwd=decl, check=True)
    assert {p.stem for p in (decl / "sites.d").iterdir()} >= set(hostile)

    # The script calls `reconciler` from PATH: a wrapper running the code under test.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "reconciler"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m reconciler "$@"\n')
    wrapper.chmod(0o755)
    source = check_code_under_test() if code_under_test() != ROOT else None
    env = clean_env({"PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}, source)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    write_config(cwd / "reconciler.toml", repo=decl, state=tmp_path / "state")
    return Completion(cwd, env, canaries)


def test_hostile_names_run_nothing_and_valid_names_still_complete(completion: Completion) -> None:
    offered = completion.complete("status")
    assert [c for c in completion.canaries if c.exists()] == [], "completion ran code from a file name"
    assert sorted(offered) == sorted([*VALID, BROKEN]), offered
    assert os.listdir(completion.cwd) == ["reconciler.toml"]


def test_prefix_filtering_is_literal(completion: Completion) -> None:
    assert completion.complete("logs", "we") == ["web.example.com"]
    assert completion.complete("history", "*") == []  # a glob in the typed word is a literal prefix
    assert completion.complete("status", "$(") == []
    assert [c for c in completion.canaries if c.exists()] == []


def test_commands_still_complete(completion: Completion) -> None:
    probe = ('source <(reconciler completion bash); COMP_WORDS=(reconciler ro); COMP_CWORD=1; _reconciler; '
             'printf "%s\\n" "${COMPREPLY[@]}"')
    done = subprocess.run(["bash", "-c", probe], cwd=completion.cwd, env=completion.env, capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout.split() == ["rollback"]


def test_the_script_never_hands_data_to_compgen(completion: Completion) -> None:
    done = subprocess.run(["reconciler", "completion", "bash"], cwd=completion.cwd, env=completion.env,
                          capture_output=True, text=True, timeout=60, check=True)
    code = "\n".join(line for line in done.stdout.splitlines() if not line.lstrip().startswith("#"))
    assert "compgen" not in code and "eval" not in code, done.stdout
