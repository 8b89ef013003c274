"""Declaration values cannot inject nginx configuration.

`base_path = "/srv/www;location /leak/{alias /etc/;}#"` used to validate, and `reconciler nginx D`
pasted it into `root ...;`, adding a location that served /etc. Two layers now: the validator
takes base_path only as a plain path ([A-Za-z0-9._/-]), and the server block refuses any value
nginx would read as syntax, whatever reached it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from reconciler.cli.main import main as cli
from reconciler.cli.nginx import nginx_server_block
from reconciler.core.declaration_files import parse_site
from reconciler.core.declarations import InvalidSite, SiteDeclaration
from reconciler.errors import ReconcilerError
from tests.support import make_decl_repo, site_declaration, write_site

DOMAIN = "n.example.com"
REPRO = "/srv/www;location /leak/{alias /etc/;}#"
# Each character nginx reads as syntax inside a directive, plus control characters.
SYNTAX = [";", "{", "}", "#", "'", '"', "\\", " ", "\t", "\n", "$", "\x00"]

NORMAL_BLOCK = """server {
    listen 80;
    listen [::]:80;
    server_name n.example.com;
    # The site symlink; switched atomically by reconciler on every deploy and rollback.
    root /srv/www/n.example.com/public;
    index index.php index.html;

    location / {
        try_files $uri $uri/ /index.php?$query_string;
    }

    location ~ \\.php$ {
        include fastcgi_params;
        fastcgi_pass unix:/run/php/php8.3-fpm.sock;
        # Resolve the symlink per request so PHP and OPcache see the release's real path.
        fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name;
        fastcgi_param DOCUMENT_ROOT $realpath_root;
    }

    location ~ /\\.(?!well-known) {
        deny all;
    }
}"""


def unchecked(**fields: str | None) -> SiteDeclaration:
    """A declaration whose fields skipped the validator (model_copy does not validate): what a
    future validator bug, or a caller building one by hand, could hand to nginx_server_block."""
    return site_declaration(domain=DOMAIN, base_path="/srv/www", php="8.3").model_copy(update=fields)


def test_the_repro_base_path_is_invalid_with_a_clear_message() -> None:
    text = f'server = "local"\nbase_path = "{REPRO}"\nrepository = "/srv/git/app.git"\n'
    result = parse_site(f"sites.d/{DOMAIN}.toml", text.encode())
    assert isinstance(result, InvalidSite), result
    assert len(result.errors) == 1, result.errors
    error = result.errors[0]
    assert error.startswith(f"sites.d/{DOMAIN}.toml:2: base_path: "), error
    assert "may only contain letters A-Z a-z, digits and . _ - /" in error, error
    assert "';'" in error and "'{'" in error and "'#'" in error, error


@pytest.mark.parametrize("char", SYNTAX, ids=repr)
def test_every_nginx_syntax_character_in_base_path_is_invalid(char: str) -> None:
    with pytest.raises(ValidationError) as caught:
        site_declaration(base_path=f"/srv/w{char}w")
    assert [e["loc"] for e in caught.value.errors()] == [("base_path",)], caught.value


def test_plain_paths_stay_valid() -> None:
    for path in ("/srv/www", "/home/brokeforge", "/srv/www_2/Site-A.v1"):
        assert site_declaration(base_path=path).base_path == path


def test_validate_and_nginx_commands_refuse_the_repro(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    decl = make_decl_repo(tmp_path / "decl")
    write_site(decl, DOMAIN, server="local", base_path=REPRO, repository=str(tmp_path / "app"))
    assert cli(["validate", str(decl)]) == 1
    captured = capsys.readouterr()
    assert "base_path: may only contain" in captured.out + captured.err, captured
    assert cli(["--repo", str(decl), "--state-dir", str(tmp_path / "state"), "nginx", DOMAIN]) == 1
    captured = capsys.readouterr()
    assert "location" not in captured.out and "/leak/" not in captured.out, captured.out


@pytest.mark.parametrize("char", SYNTAX, ids=repr)
def test_the_server_block_refuses_a_base_path_nginx_would_parse(char: str) -> None:
    with pytest.raises(ReconcilerError, match="nginx reads as syntax"):
        nginx_server_block(unchecked(base_path=f"/srv/w{char}w"))


def test_the_server_block_refuses_the_repro_and_other_fields() -> None:
    for fields in ({"base_path": REPRO}, {"domain": "n.example.com;x"}, {"php": "8.3;}"}, {"php": "8.3 x"}):
        with pytest.raises(ReconcilerError, match="nginx reads as syntax") as caught:
            nginx_server_block(unchecked(**fields))
        assert "\n" not in str(caught.value)


def test_a_normal_block_is_unchanged() -> None:
    assert nginx_server_block(unchecked()) == NORMAL_BLOCK
    no_php = nginx_server_block(unchecked(php=None))
    assert no_php == NORMAL_BLOCK.replace("php8.3-fpm.sock", "php-fpm.sock")


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_nginx_accepts_the_generated_block(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    (tmp_path / "fastcgi_params").write_text("")
    conf.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
                    f"http {{\naccess_log off;\n{nginx_server_block(unchecked())}\n}}\n")
    done = subprocess.run(["nginx", "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
