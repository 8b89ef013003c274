"""The tests mirror the package: every module `reconciler/<path>/<name>.py` has its own test file
`tests/<path>/test_<name>.py`, so whoever changes a module knows where its tests are, and a new
module without tests fails here. Test files say what behaviour they prove, not which issue or
review asked for it: a reader years later has the code, not the tracker."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "reconciler"
TESTS = ROOT / "tests"
# Entry points with nothing of their own to test: `python -m reconciler` calls cli.main.
NO_TEST_FILE = {"__main__.py"}
HISTORY = re.compile(r"\b[Ii]ssues? #?\d+|\([Ii]tem \d+\)")


def expected_test_file(module: Path) -> Path:
    relative = module.relative_to(PACKAGE)
    return TESTS / relative.parent / f"test_{relative.stem}.py"


def test_every_module_has_a_test_file_named_after_it() -> None:
    modules = [m for m in PACKAGE.rglob("*.py") if m.name != "__init__.py" and m.name not in NO_TEST_FILE]
    assert len(modules) > 100  # the walk found the package
    missing = sorted(str(expected_test_file(m).relative_to(ROOT)) for m in modules
                     if not expected_test_file(m).is_file())
    assert not missing, "modules without their test file:\n" + "\n".join(missing)


def test_every_test_folder_is_a_package_so_equal_file_names_do_not_collide() -> None:
    folders = {path.parent for path in TESTS.rglob("test_*.py")}
    missing = sorted(str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").is_file())
    assert not missing, missing


def test_no_test_file_introduces_itself_by_issue_number() -> None:
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if HISTORY.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "say what the test proves instead:\n" + "\n".join(found)
