"""The command line is one table of commands (`reconciler.cli.commands.COMMANDS`), each run by
its own module's `handle(invocation, args) -> int`, and a command's module is imported only
when that command runs: `--help` and parsing read the table alone. Real processes, for what a
fresh interpreter imports."""

from __future__ import annotations

import importlib
import inspect
import json
import keyword
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.cli import commands
from reconciler.cli.commands import COMMANDS, canonical, names

ROOT = Path(__file__).resolve().parents[2]

# The entry point in a fresh interpreter; prints the command modules it imported.
PROBE = """
import json, sys
from reconciler.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules if m.startswith("reconciler.cli.commands."))))
"""


def test_every_command_module_is_in_the_table_and_every_entry_has_a_module() -> None:
    modules = {info.name for info in pkgutil.iter_modules(commands.__path__)}
    # A command named by a Python keyword (import) has its module name with a trailing underscore.
    module_of = {name: name + "_" if keyword.iskeyword(name) else name for name in COMMANDS}
    assert modules == set(module_of.values())
    assert all(command.module == f"reconciler.cli.commands.{module_of[name]}" for name, command in COMMANDS.items())


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_the_one_handler_signature(name: str) -> None:
    handle = importlib.import_module(COMMANDS[name].module).handle
    parameters = list(inspect.signature(handle).parameters.values())
    assert [(p.name, p.annotation) for p in parameters] == [("invocation", "Invocation"),
                                                            ("args", "argparse.Namespace")]
    assert inspect.signature(handle).return_annotation == "int"


def test_aliases_name_their_command() -> None:
    assert canonical("plan") == "diff"
    assert canonical("status") == "status"
    assert "plan" in names() and set(COMMANDS) <= set(names())


def _command_modules(tmp_path: Path, *argv: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RECONCILER_CONFIG": ""}
    done = subprocess.run([sys.executable, "-c", PROBE, "--state-dir", str(tmp_path / "state"), *argv],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    modules: list[str] = json.loads(done.stdout.splitlines()[-1])
    return modules


@pytest.mark.parametrize("argv", [("--help",), ("status", "--help"), ("rollback", "--help"), ("nosuch",)])
def test_parsing_imports_no_command_module(tmp_path: Path, argv: tuple[str, ...]) -> None:
    assert _command_modules(tmp_path, *argv) == []


def test_a_command_imports_only_its_own_module(tmp_path: Path) -> None:
    assert _command_modules(tmp_path, "status", "--json") == ["reconciler.cli.commands.status"]
    assert _command_modules(tmp_path, "plan") == ["reconciler.cli.commands.diff"]
