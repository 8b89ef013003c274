"""core.site_env: a site's env content is never printed by its object, dotenv keys are listed
and set without touching other lines, and recipients and probe digests are read strictly."""

from __future__ import annotations

import hashlib

import pytest

from reconciler.core import site_env
from reconciler.core.site_env import SiteEnv

PUBLIC = "age1k0dnhg4ptq9t4ytq9xud3wp3pt7uagghmac4cfkxymyxu90ekvrsqyvwa4"


def test_site_env_repr_and_str_show_the_digest_never_the_content() -> None:
    env = SiteEnv("DB_PASSWORD=hunter2-secret\n")
    assert env.digest == hashlib.sha256(b"DB_PASSWORD=hunter2-secret\n").hexdigest()
    for shown in (repr(env), str(env), f"{env}", repr([env])):
        assert "hunter2" not in shown


def test_keys_lists_names_once_in_order_skipping_comments() -> None:
    text = "# DB_HOST=commented\nAPP_KEY=base64:x\nexport DB_HOST=db\n\nAPP_KEY=again\nnot a line\n"
    assert site_env.keys(text) == ["APP_KEY", "DB_HOST"]


def test_set_value_replaces_the_line_in_place_or_appends() -> None:
    text = "A=1\n# B=old comment\nB=2\nC=3\n"
    assert site_env.set_value(text, "B", "x") == "A=1\n# B=old comment\nB=x\nC=3\n"
    assert site_env.set_value(text, "D", "4") == text + "D=4\n"
    assert site_env.set_value("", "E", "5") == "E=5\n"


def test_set_value_quotes_values_with_spaces_or_specials() -> None:
    assert site_env.set_value("", "MAIL_FROM", 'Shop "Team" $x') == 'MAIL_FROM="Shop \\"Team\\" \\$x"\n'


@pytest.mark.parametrize(("key", "value"), [("1BAD", "v"), ("A-B", "v"), ("", "v"), ("OK", "two\nlines")])
def test_set_value_refuses_bad_names_and_multi_line_values(key: str, value: str) -> None:
    with pytest.raises(ValueError):
        site_env.set_value("A=1\n", key, value)


def test_recipients_skip_comments_and_blank_lines() -> None:
    text = f"# reconciler\n{PUBLIC}  # the daemon\n\n{PUBLIC}\n"
    assert site_env.parse_recipients(text) == [PUBLIC]


@pytest.mark.parametrize("text", ["", "# only a comment\n", "age1short\n", f"{PUBLIC}\nssh-ed25519 AAAA\n"])
def test_recipients_refuse_an_empty_file_or_a_line_that_is_no_age_key(text: str) -> None:
    with pytest.raises(ValueError, match="recipients"):
        site_env.parse_recipients(text)


def test_digest_record_is_a_sha256_or_a_dash() -> None:
    good = "a" * 64
    assert site_env.parse_digest(good) == good
    assert site_env.parse_digest("-") is None
    for bad in ("", "A" * 64, "a" * 63, "a" * 65, f"{good} -", "--"):
        with pytest.raises(ValueError):
            site_env.parse_digest(bad)


def test_env_file_names_round_trip() -> None:
    assert site_env.env_file("shop.example.com") == "sites.d/shop.example.com.env.age"
    assert site_env.domain_of_env("shop.example.com.env.age") == "shop.example.com"
    assert site_env.domain_of_env("shop.example.com.toml") is None
    assert site_env.domain_of_env(".env.age") is None


def test_check_text_refuses_nul_and_oversize() -> None:
    assert site_env.check_text("A=1\n") is None
    assert site_env.check_text("A=\x00") is not None
    assert site_env.check_text("A" * (site_env.MAX_ENV_BYTES + 1)) is not None
