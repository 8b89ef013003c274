"""The documentation's examples are true today: every ```toml block in docs/ and the README is a
site file (checked by `reconciler validate` in a temporary declarations repository) or a
reconciler.toml (checked as Settings), the README's quickstart is the guide's, and its commands
run as written and deploy the site they declare."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from reconciler.config import Settings, load_settings
from reconciler.core.declarations import SiteDeclaration

ROOT = Path(__file__).resolve().parents[2]
PAGES = [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]
FENCE = re.compile(r"^( *)```(\w*)\n(.*?)^\1```$", re.MULTILINE | re.DOTALL)
LABEL = re.compile(r"^# *(\S+\.toml)\b")
SITE_KEYS = set(SiteDeclaration.model_fields)
CONFIG_KEYS = set(Settings.model_fields)
# What a fragment leaves to the fleet defaults: a site block is checked over these, so a block
# that shows only `[health]` or `servers` is still checked as a whole site.
DEFAULTS = 'server = "web-1"\nrepository = "git@github.com:acme/shop.git"\n'


def _blocks(language: str) -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for match in FENCE.finditer(page.read_text()):
            if match.group(2) == language:
                body = "\n".join(line.removeprefix(match.group(1)) for line in match.group(3).splitlines())
                found.append((f"{page.relative_to(ROOT)}:{page.read_text()[:match.start()].count(chr(10)) + 1}",
                              body + "\n"))
    return found


TOML_BLOCKS = _blocks("toml")


def _kind(body: str) -> str:
    """`site`, `defaults`, `template` or `config`: by the file a block names in its first comment,
    else by its keys (a block whose keys are neither a site's nor the settings' fails here)."""
    label = LABEL.match(body)
    if label:
        name = label.group(1)
        if name == "sites.d/_defaults.toml":
            return "defaults"
        if name.startswith("templates/"):
            return "template"
        if name.startswith("sites.d/"):
            return "site"
        return "config"
    keys = set(tomllib.loads(body))
    if keys <= SITE_KEYS:
        return "site"
    assert keys <= CONFIG_KEYS, f"neither a site file nor a reconciler.toml: {sorted(keys - CONFIG_KEYS)}"
    return "config"


def _validate(repo: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", *extra, "validate", str(repo)], capture_output=True,
                          text=True, timeout=60, cwd=repo, check=False)


def test_the_docs_hold_toml_examples_of_every_kind() -> None:
    kinds = {_kind(body) for _, body in TOML_BLOCKS}
    assert {"site", "defaults", "template", "config"} <= kinds, kinds
    assert len(TOML_BLOCKS) >= 15, len(TOML_BLOCKS)


@pytest.mark.parametrize(("where", "body"), TOML_BLOCKS, ids=[where for where, _ in TOML_BLOCKS])
def test_a_toml_example_is_valid(tmp_path: Path, where: str, body: str) -> None:
    kind = _kind(body)
    if kind == "config":
        # A token file must exist and be owner-only: the example's path is made so under tmp_path.
        for named in re.findall(r'^token_file *= *"(/[^"]+)"', body, flags=re.MULTILINE):
            token = tmp_path / named.lstrip("/")
            token.parent.mkdir(parents=True, exist_ok=True)
            token.write_text("a-token-of-sixteen-or-more\n")
            token.chmod(0o600)
            body = body.replace(f'"{named}"', f'"{token}"')
        config = tmp_path / "reconciler.toml"
        config.write_text(body)
        assert isinstance(load_settings(config), Settings)
        return
    repo = tmp_path / "declarations"
    (repo / "sites.d").mkdir(parents=True)
    (repo / "templates").mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    site = tomllib.loads(body) if kind == "site" else {}
    domain = "example.example.com"
    label = LABEL.match(body)
    if kind == "site" and label:
        domain = Path(label.group(1)).stem
    template = site.get("template")
    if isinstance(template, str):
        (repo / "templates" / f"{template}.toml").write_text("")
    if kind == "defaults":
        (repo / "sites.d" / "_defaults.toml").write_text(body)
        (repo / "sites.d" / f"{domain}.toml").write_text('repository = "git@github.com:acme/shop.git"\n')
    elif kind == "template":
        name = Path(LABEL.match(body).group(1)).stem  # type: ignore[union-attr]
        (repo / "templates" / f"{name}.toml").write_text(body)
        (repo / "sites.d" / "_defaults.toml").write_text(DEFAULTS)
        (repo / "sites.d" / f"{domain}.toml").write_text(f'template = "{name}"\n')
    else:
        (repo / "sites.d" / "_defaults.toml").write_text(DEFAULTS)
        (repo / "sites.d" / f"{domain}.toml").write_text(body)
    done = _validate(repo)
    assert done.returncode == 0 and "1 valid, 0 invalid" in done.stdout, (where, done.stdout, done.stderr)


def test_an_invalid_example_would_be_caught(tmp_path: Path) -> None:
    """The check above can fail: a site file with a wrong type is refused the same way."""
    repo = tmp_path / "declarations"
    (repo / "sites.d").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "sites.d" / "_defaults.toml").write_text(DEFAULTS)
    (repo / "sites.d" / "shop.example.com.toml").write_text("keep = \"many\"\n")
    done = _validate(repo)
    assert done.returncode != 0 and "keep" in done.stdout + done.stderr


def _quickstart(page: Path, heading: str) -> str:
    text = page.read_text()
    section = text[text.index(heading):]
    match = FENCE.search(section)
    assert match is not None and match.group(2) == "sh", page
    return match.group(3)


def test_the_readme_quickstart_is_the_guides() -> None:
    assert (_quickstart(ROOT / "README.md", "## Quickstart")
            == _quickstart(ROOT / "docs" / "guide" / "getting-started.md", "## A first deploy"))


def test_the_quickstart_runs_as_written_and_deploys_then_rolls_back(tmp_path: Path) -> None:
    script = _quickstart(ROOT / "README.md", "## Quickstart")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RECONCILER_CONFIG", None)
    done = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "1 valid, 0 invalid" in done.stdout and "hello.example.com: live: " in done.stdout, done.stdout
    live = (tmp_path / "www" / "hello.example.com").resolve()
    assert (live / "index.php").read_text() == '<?php echo "hello";\n'  # the rollback's release is live
    pin = subprocess.run(["git", "-C", str(tmp_path / "sites"), "show", "HEAD:sites.d/hello.example.com.toml"],
                         capture_output=True, text=True, check=True).stdout
    assert f'pin = "{live.name}"' in pin
