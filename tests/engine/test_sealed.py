"""engine.sealed: env files round-trip through pyrage, interoperate with the `age` CLI both
ways, and a wrong key, a corrupt file or a bad key file is a clear error that quotes no secret."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.engine import sealed
from reconciler.errors import ConfigError, DeclarationError
from tests.support.age_keys import age_cli, age_decrypt_cli, age_encrypt_cli, age_key

TEXT = "APP_KEY=base64:abc\nDB_PASSWORD=sealed-test-4411\n"


def _need_age() -> None:
    if age_cli() is None:
        if os.environ.get("RECONCILER_NO_SKIP"):
            pytest.fail("the age CLI is missing (.ci/deps installs it)")
        pytest.skip("the age CLI is not installed (apt-get install age)")


def test_round_trip_to_several_recipients(tmp_path: Path) -> None:
    mine, theirs = age_key(tmp_path / "a.key"), age_key(tmp_path / "b.key")
    data = sealed.encrypt(TEXT, [mine.public, theirs.public])
    assert b"sealed-test-4411" not in data
    for key in (mine, theirs):
        env = sealed.decrypt(data, sealed.load_identities(key.identity_file), "sites.d/x.env.age")
        assert env.text == TEXT


def test_the_age_cli_reads_ours_and_we_read_its(tmp_path: Path) -> None:
    _need_age()
    key = age_key(tmp_path / "a.key")
    assert age_decrypt_cli(sealed.encrypt(TEXT, [key.public]), key.identity_file) == TEXT
    env = sealed.decrypt(age_encrypt_cli(TEXT, key.public), sealed.load_identities(key.identity_file), "f")
    assert env.text == TEXT


def test_a_key_generated_by_age_keygen_is_read(tmp_path: Path) -> None:
    _need_age()
    import subprocess
    file = tmp_path / "keygen.key"
    subprocess.run(["age-keygen", "-o", str(file)], check=True, capture_output=True)
    identities = sealed.load_identities(file)
    assert sealed.public_key(identities[0]).startswith("age1")


def test_another_key_or_corrupt_data_is_a_declaration_error(tmp_path: Path) -> None:
    mine, stranger = age_key(tmp_path / "a.key"), age_key(tmp_path / "b.key")
    identities = sealed.load_identities(mine.identity_file)
    for data in (sealed.encrypt(TEXT, [stranger.public]), b"not age at all", b""):
        with pytest.raises(DeclarationError, match=r"sites\.d/x\.env\.age: cannot be decrypted"):
            sealed.decrypt(data, identities, "sites.d/x.env.age")


def test_binary_plaintext_is_refused(tmp_path: Path) -> None:
    key = age_key(tmp_path / "a.key")
    import pyrage
    data = pyrage.encrypt(b"\xff\xfe", [pyrage.x25519.Recipient.from_str(key.public)])
    with pytest.raises(DeclarationError, match="not UTF-8"):
        sealed.decrypt(data, sealed.load_identities(key.identity_file), "f")


def test_a_bad_identity_file_is_a_config_error_quoting_no_line(tmp_path: Path) -> None:
    file = tmp_path / "bad.key"
    file.write_text("AGE-SECRET-KEY-1NOTAREALKEYATALLBUTSECRETISH\n")
    with pytest.raises(ConfigError) as caught:
        sealed.load_identities(file)
    assert "NOTAREALKEY" not in str(caught.value)
    with pytest.raises(ConfigError, match="cannot be read"):
        sealed.load_identities(tmp_path / "missing.key")
    (tmp_path / "empty.key").write_text("# nothing\n")
    with pytest.raises(ConfigError, match="no age secret key"):
        sealed.load_identities(tmp_path / "empty.key")


def test_a_bad_recipient_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        sealed.encrypt(TEXT, ["age1notakey"])


def test_generate_key_writes_a_private_key_file_that_decrypts(tmp_path: Path) -> None:
    file = tmp_path / "new.key"
    public = sealed.generate_key(file)
    assert (file.stat().st_mode & 0o777) == 0o600
    env = sealed.decrypt(sealed.encrypt(TEXT, [public]), sealed.load_identities(file), "f")
    assert env.text == TEXT
    with pytest.raises(FileExistsError):
        sealed.generate_key(file)
