"""The bash completion script (cli.completion): it is generated only from command names that fit
[a-z0-9.-], offers the global flags beside them, and never hands a word to `compgen -W` (the
hostile site names are tests/hostile/test_completion.py's)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler.cli.completion import bash_script


@pytest.mark.parametrize("bad", ["", "Roll", "roll back", "x$(id)", "ä"])
def test_a_command_name_outside_the_allowed_characters_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="command names outside"):
        bash_script(["status", bad])


def test_the_commands_and_global_flags_are_offered_sorted_once() -> None:
    script = bash_script(["status", "diff", "status"])
    offered = script.split("<<'RECONCILER_COMMANDS'\n", 1)[1].split("\nRECONCILER_COMMANDS", 1)[0].splitlines()
    assert offered == ["--config", "--help", "--repo", "--state-dir", "diff", "status"]
    assert "compgen" not in script.replace("no compgen -W", "")


def test_the_script_is_valid_bash_that_completes_what_it_was_given(tmp_path: Path) -> None:
    script = tmp_path / "completion.sh"
    script.write_text(bash_script(["alpha", "alps", "beta"]))
    probe = f'source {script}; COMP_WORDS=(reconciler al); COMP_CWORD=1; _reconciler; echo "${{COMPREPLY[@]}}"'
    done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["alpha", "alps"]
