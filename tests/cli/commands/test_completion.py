"""`reconciler completion bash`: prints a bash completion script that, sourced into a real bash,
completes the command names and their aliases (the site names it offers are tested hostile in
tests/hostile/test_completion.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler.cli.main import main as cli


def _complete(script: Path, *words: str) -> list[str]:
    probe = (f'source {script}; COMP_WORDS=(reconciler {" ".join(words)}); COMP_CWORD={len(words)}; _reconciler; '
             'printf "%s\\n" "${COMPREPLY[@]}"')
    result = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True)
    return result.stdout.split()


@pytest.fixture(name="script")
def script_fixture(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Path:
    assert cli(["completion", "bash"]) == 0
    script = tmp_path / "completion.sh"
    script.write_text(capsys.readouterr().out)
    return script


def test_bash_completion_completes_commands(script: Path) -> None:
    assert _complete(script, "ro") == ["rollback"]


def test_aliases_and_global_flags_complete_too(script: Path) -> None:
    assert _complete(script, "pl") == ["plan"]
    assert _complete(script, "--st") == ["--state-dir"]
    assert sorted(_complete(script, "r")) == ["reconcile", "redeploy", "retry", "rollback", "run"]


def test_only_bash_is_offered(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli(["completion", "zsh"])
    assert caught.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
