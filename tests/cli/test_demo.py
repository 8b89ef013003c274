"""`make demo`'s sandbox (cli.demo), without the daemon: `build_sandbox` makes an app repository
at v1 and a declarations repository whose site file is valid and, applied by one real pass on
this machine, serves v1; `_site_says` tells what the site serves. The scenes themselves need the
running daemon and its polls (tens of seconds): `make demo` is their test."""

from __future__ import annotations

from pathlib import Path

from reconciler.cli import demo
from tests.support import cli_in_process, git, write_config


def test_the_sandbox_is_built_afresh(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    (root / "leftover").mkdir(parents=True)
    demo.build_sandbox(root)
    assert not (root / "leftover").exists(), "an old sandbox is removed first"
    assert git(root / "app", "log", "--format=%s") == "v1"
    assert (root / "app" / "public" / "index.php").read_text() == "<?php echo 'Hello from v1';\n"
    site = root / "declarations" / "sites.d" / f"{demo.DOMAIN}.toml"
    assert site.is_file()
    assert git(root / "declarations", "status", "--porcelain") == "?? sites.d/", "declared only when committed"


def test_the_demo_site_is_valid_and_one_pass_serves_v1(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    demo.build_sandbox(root)
    assert demo._site_says(root).endswith("does not exist yet")
    decl = root / "declarations"
    config = write_config(root / "reconciler.toml", repo=decl, state=root / "state", interval=None)
    rc, out, err = cli_in_process(["--config", str(config), "validate", str(decl)])
    assert (rc, out) == (0, "1 valid, 0 invalid\n"), err
    demo._commit(decl, "declare the demo site")
    rc, out, err = cli_in_process(["--config", str(config), "reconcile"])
    assert rc == 0, (out, err)
    assert demo._site_says(root).endswith("serves: <?php echo 'Hello from v1';"), demo._site_says(root)
    assert demo._active(root) is not None and "deployments/" in str(demo._active(root))


def test_the_demo_env_scene_lands_an_encrypted_env_on_the_server(tmp_path: Path) -> None:
    """The demo's key and recipients make `env set` work, and one pass writes shared/.env (0600),
    which the demo shows by digest and its non-secret key only."""
    root = tmp_path / "demo"
    demo.build_sandbox(root)
    identity = demo.prepare_env(root)
    decl = root / "declarations"
    config = write_config(root / "reconciler.toml", repo=decl, state=root / "state", interval=None,
                          age_identity_file=str(identity))
    demo._commit(decl, "declare the demo site")
    rc, out, err = cli_in_process(["--config", str(config), "env", "set", demo.DOMAIN, "APP_ENV=production",
                                   "DB_PASSWORD=demo-only-secret"])
    assert rc == 0, (out, err)
    rc, out, err = cli_in_process(["--config", str(config), "reconcile"])
    assert rc == 0, (out, err)
    says = demo.env_says(root)
    assert "mode 600" in says and "APP_ENV=production" in says and "demo-only-secret" not in says, says
