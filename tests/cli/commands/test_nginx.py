"""`reconciler nginx D`: prints the server block of a declared valid site (its root the site
symlink, PHP resolved per request through $realpath_root, the site's PHP-FPM socket); an unknown
or invalid site is exit 1 with nothing printed. Sites use `server = "local"`."""

from __future__ import annotations

from tests.support.cli_world import DOMAIN, OTHER, CliWorld


def test_nginx_block_uses_the_site_symlink_and_realpath_root(world: CliWorld) -> None:
    world.declare(php="8.3")
    out = world.ok("nginx", DOMAIN)
    assert f"root {world.base / DOMAIN}/public;" in out
    assert "fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name;" in out
    assert "fastcgi_param DOCUMENT_ROOT $realpath_root;" in out
    assert "php8.3-fpm.sock" in out
    assert world.cli("nginx", "nope.example.com").rc == 1


def test_an_invalid_site_gets_no_server_block(world: CliWorld) -> None:
    world.declare()
    world.declare(OTHER, colour="blue")
    rc, out, err = world.cli("nginx", OTHER)
    assert rc == 1 and out == "", (out, err)
    assert f"{OTHER}: no such valid site declared" in err
