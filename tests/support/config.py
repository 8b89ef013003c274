"""A reconciler.toml for a test, and one real pass in this process (as the CLI runs it)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from reconciler.config import Settings
from reconciler.engine.converge import Reconciler, SiteOutcome
from reconciler.engine.store import Store
from tests.support.sshd import SshServer


def write_config(path: Path, *, repo: Path | str | None = None, state: Path | str | None = None,
                 interval: float | None = 2, allow_local: bool | None = True,
                 server: SshServer | None = None, **extra: Any) -> Path:
    """Write `path`: repo, state_dir, interval, allow_local, the sshd's identity and known_hosts,
    then `extra` (every value as a TOML string, number or boolean). None leaves a key out.

    allow_local is true by default: most tests deploy to this machine (server = "local"), which a
    real configuration must opt in to; `allow_local=None` writes a config that does not."""
    values: dict[str, Any] = {"repo": repo, "state_dir": state, "interval": interval, "allow_local": allow_local}
    if server is not None:
        values.update(identity_file=server.identity_file, known_hosts=server.known_hosts)
    values.update(extra)
    lines = [f"{key} = {json.dumps(str(v) if isinstance(v, Path) else v)}" for key, v in values.items()
             if v is not None]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def settings_for(repo: Path, state: Path, **extra: Any) -> Settings:
    """Settings for a test; like `write_config`, allow_local unless `extra` says otherwise."""
    return Settings(repo=repo, state_dir=state, **{"allow_local": True, **extra})


def reconcile(settings: Settings, site: str | None = None, dry_run: bool = False) -> dict[str, SiteOutcome]:
    """Run one real pass (fresh store connection and transports, as the CLI does)."""

    async def go() -> list[SiteOutcome]:
        reconciler = Reconciler(settings, Store(settings.db_path))
        try:
            return await reconciler.run_pass(site, dry_run=dry_run)
        finally:
            await reconciler.close()
            reconciler.store.close()

    return {o.domain: o for o in asyncio.run(go())}
