"""The README's declaration key reference lists every key a site file may hold (issue 11 item 13):
a key added to the model without documentation fails here."""

from __future__ import annotations

import re
from pathlib import Path

from reconciler.core.declarations import SiteDeclaration

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_declaration_key_is_in_the_readme_reference() -> None:
    text = README.read_text()
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", text, flags=re.MULTILINE))
    assert set(SiteDeclaration.model_fields) <= documented, sorted(set(SiteDeclaration.model_fields) - documented)
    assert "UTC clock" in text
