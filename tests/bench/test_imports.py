"""Every benchmark module imports: `make bench` runs them all in one process, and a name that
moved in the package must fail here, not half-way through a 12-minute run (bench/atomic.py
imported a function that had been gone for weeks)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

import bench

MODULES = sorted(info.name for info in pkgutil.iter_modules([str(Path(bench.__file__).parent)])
                 if info.name != "__main__")


@pytest.mark.parametrize("name", MODULES)
def test_benchmark_module_imports(name: str) -> None:
    module = importlib.import_module(f"bench.{name}")
    assert module.__doc__, f"bench/{name}.py says what it measures"


def test_make_bench_runs_every_benchmark_with_a_main() -> None:
    runner = (Path(bench.__file__).parent / "__main__.py").read_text()
    with_main = [name for name in MODULES if hasattr(importlib.import_module(f"bench.{name}"), "main")]
    missing = [name for name in with_main if f"{name}.main" not in runner]
    assert not missing, f"not run by make bench: {missing}"
