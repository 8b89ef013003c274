"""The deploy script never travels in a command line (a deploy's commands are batched; the
claim's small data rides in the build command's argv, base64, which other users of a server can
read in its process list). The script goes on stdin: staged in the lock when it is taken, or
on the claim's stdin when there is no lock to stage it in. Real git repos, the local transport
(the same command texts as over SSH), every command's text recorded."""

from __future__ import annotations

import asyncio
import base64
import re
from pathlib import Path

import pytest

from reconciler.engine import building
from reconciler.engine.converge import Reconciler
from reconciler.engine.store import Store
from tests.support import make_app_repo, make_decl_repo, write_site
from tests.support.config import settings_for

DOMAIN = "argv.example.com"
SECRET = "s3cr3t-token-in-the-script"


@pytest.mark.parametrize("locked", [True, False], ids=["through-the-lock", "without-a-lock"])
def test_the_deploy_script_is_never_in_a_command_line(tmp_path: Path, locked: bool) -> None:
    app = make_app_repo(tmp_path / "app")
    decl = make_decl_repo(tmp_path / "decl")
    base = tmp_path / "srv"
    write_site(decl, DOMAIN, server="local", base_path=str(base), repository=str(app),
               script=f"echo {SECRET} > token.txt\n")
    settings = settings_for(decl, tmp_path / "state")
    texts: list[str] = []

    async def go() -> bool:
        reconciler = Reconciler(settings, Store(settings.db_path))
        transport = reconciler.pool.get("local")
        run = transport.run

        async def recording(command: str, **kwargs: object) -> object:
            texts.append(command)
            return await run(command, **kwargs)  # type: ignore[arg-type]

        transport.run = recording  # type: ignore[method-assign]
        try:
            if locked:
                outcome = (await reconciler.run_pass())[0]
                return outcome.sync == "Synced"
            site = reconciler.load().sites[DOMAIN]
            ctx = reconciler.bench.context(site, None)
            commit = (tmp_path / "app").joinpath(".git", "refs", "heads", "main").read_text().strip()
            result = await building.deploy(ctx, "01012025-000000", commit)
            return result.ok
        finally:
            await reconciler.close()
            reconciler.store.close()

    assert asyncio.run(go())
    live = next((base / "deployments" / DOMAIN).glob("[0-9]*"))
    assert (live / "token.txt").read_text().strip() == SECRET, "the script ran"
    for text in texts:
        decoded = [base64.b64decode(blob + "=" * (-len(blob) % 4)).decode("utf-8", "replace")
                   for blob in re.findall(r"[A-Za-z0-9+/]{24,}={0,2}", text)]
        assert SECRET not in text and not any(SECRET in d for d in decoded), \
            f"the script is in a command line:\n{text[:400]}"
