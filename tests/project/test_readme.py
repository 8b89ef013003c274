"""The README's declaration key reference lists every key a site file may hold:
a key added to the model without documentation fails here."""

from __future__ import annotations

import re
from pathlib import Path

from reconciler.config import Settings
from reconciler.core.declarations import SiteDeclaration

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_declaration_key_is_in_the_readme_reference() -> None:
    text = README.read_text()
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", text, flags=re.MULTILINE))
    assert set(SiteDeclaration.model_fields) <= documented, sorted(set(SiteDeclaration.model_fields) - documented)
    assert "UTC clock" in text


def test_every_configuration_key_is_in_a_readme_toml_example() -> None:
    """reconciler.toml keys (`shard` among them): each appears as `key = ...` (or `[[key]]`), maybe
    commented out, in one of the README's configuration examples."""
    text = README.read_text()
    missing = [key for key in Settings.model_fields
               if not re.search(rf"^#? *(\[\[{key}\]\]|{key} *=)", text, flags=re.MULTILINE)]
    assert not missing, missing
