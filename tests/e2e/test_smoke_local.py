"""End to end on the local transport: declare, deploy, status."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support import make_app_repo, make_decl_repo, reconcile, settings_for, write_site


def test_first_declaration_deploys_locally(tmp_path: Path) -> None:
    app = make_app_repo(tmp_path / "app")
    decl = make_decl_repo(tmp_path / "decl")
    base = tmp_path / "srv"
    write_site(decl, "shop.example.com", server="local", base_path=str(base), repository=str(app),
               script="echo built-by-script\n")
    settings = settings_for(decl, tmp_path / "state")
    outcome = reconcile(settings)["shop.example.com"]
    assert (outcome.sync, outcome.health) == ("Synced", "Healthy"), outcome.message
    link = base / "shop.example.com"
    target = os.readlink(link)
    assert target.startswith("deployments/shop.example.com/")
    release = link.resolve()
    assert os.readlink(release / "storage") == "../shared/storage"
    assert "built-by-script" in (release / "deployment.log").read_text()
    assert (base / "shop.example.com" / "public" / "index.php").is_file()
