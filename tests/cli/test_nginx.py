"""The nginx server block (cli.nginx): each value pasted into it must be one plain nginx token.
Declaration-borne injection is tests/hostile/test_nginx.py's; here: what a token is, and where
the block points for a site's own base path and PHP version."""

from __future__ import annotations

import pytest

from reconciler.cli.nginx import nginx_server_block, nginx_token
from reconciler.errors import ReconcilerError
from tests.support import site_declaration


@pytest.mark.parametrize("value", ["shop.example.com", "/srv/www/a_b-c/public", "unix:/run/php/php8.3-fpm.sock"])
def test_a_plain_token_passes_unchanged(value: str) -> None:
    assert nginx_token("root", value) == value


@pytest.mark.parametrize("value", ["", "a b", "a;b", "a$b", "a\x1bb"])
def test_an_empty_or_syntax_bearing_value_is_refused_and_named_printably(value: str) -> None:
    with pytest.raises(ReconcilerError, match=r"^root '.*' holds characters nginx reads as syntax") as caught:
        nginx_token("root", value)
    assert "\x1b" not in str(caught.value)


def test_the_block_serves_the_site_symlink_under_its_base_path_with_its_php() -> None:
    block = nginx_server_block(site_declaration(domain="a.example.org", base_path="/home/web", php="8.1"))
    assert "    server_name a.example.org;\n" in block
    assert "    root /home/web/a.example.org/public;\n" in block
    assert "fastcgi_pass unix:/run/php/php8.1-fpm.sock;" in block
    assert block.startswith("server {\n") and block.endswith("\n}")
