"""`python -m docgen [ROOT]`: write docs/reference/*.md and man/* under ROOT (default: this checkout)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from docgen import markdown, roff

CHECKOUT = Path(__file__).resolve().parents[1]
OUTPUTS: dict[str, dict[str, Callable[[], str]]] = {"docs/reference": markdown.PAGES, "man": roff.PAGES}


def write(root: Path) -> list[Path]:
    """Every page, written under `root`; the paths written."""
    written = []
    for folder, pages in OUTPUTS.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name, render in pages.items():
            path = root / folder / name
            path.write_text(render())
            written.append(path)
    return written


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else CHECKOUT
    for path in write(root):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
