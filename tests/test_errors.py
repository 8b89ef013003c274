"""reconciler.errors: the exception tree is the one the module documents (the type of an error
decides whether it is retried, so a class moved to another branch changes behaviour), and the
errors that carry data keep it: a temporary error its shortest sensible wait, a failed step its
command's name, exit status, output and detail."""

from __future__ import annotations

import re

import pytest

from reconciler import errors

TREE_LINE = re.compile(r"^[ │├└─]*(?P<name>[A-Z][A-Za-z]+)  ")


def documented_tree() -> dict[str, str | None]:
    """Each class of the docstring's tree and the class it is drawn under (None: the root): the
    nearest line above it whose name starts further left."""
    assert errors.__doc__
    parents: dict[str, str | None] = {}
    above: list[tuple[int, str]] = []
    for line in errors.__doc__.splitlines():
        if match := TREE_LINE.match(line):
            column = match.start("name")
            while above and above[-1][0] >= column:
                above.pop()
            parents[match["name"]] = above[-1][1] if above else None
            above.append((column, match["name"]))
    return parents


def test_the_classes_form_the_documented_tree() -> None:
    tree = documented_tree()
    defined = {name for name, value in vars(errors).items()
               if isinstance(value, type) and issubclass(value, Exception) and value.__module__ == errors.__name__}
    assert set(tree) == defined, "every error is in the tree, and the tree names no other"
    for name, parent in tree.items():
        cls = getattr(errors, name)
        assert cls.__bases__ == ((getattr(errors, parent),) if parent else (Exception,)), name


@pytest.mark.parametrize("cls", [errors.TransportError, errors.RepoUnreachable, errors.SiteLocked])
def test_temporary_errors_carry_their_shortest_wait(cls: type[errors.TemporaryError]) -> None:
    assert cls("later", delay=2.5).delay == 2.5
    error = cls("later")
    assert error.delay is None and str(error) == "later"


def test_a_failed_step_keeps_its_data_and_says_what_failed() -> None:
    failed = errors.StepFailed("deploy script", 3, output="boom\n", detail="php artisan migrate")
    assert (failed.step, failed.exit_status, failed.output, failed.detail) == \
        ("deploy script", 3, "boom\n", "php artisan migrate")
    assert str(failed) == "deploy script failed (exit 3): php artisan migrate"
    assert str(errors.StepFailed("clone", 128)) == "clone failed (exit 128)"
    assert isinstance(failed, errors.PermanentError) and not isinstance(failed, errors.TemporaryError)
