"""service/http/context.py: the one shape of a refusal (a JSON `{"error": ...}` with its status and
any extra headers), and the shard every handler reads from the CURRENT settings."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from reconciler.config import Settings
from reconciler.core.shard import Shard
from reconciler.engine.converge import ssh_options
from reconciler.engine.store import Store
from reconciler.remote.transport.pool import TransportPool
from reconciler.service.http.context import WebContext, refused, shard_of
from reconciler.service.metrics import PassStats


def test_a_refusal_is_json_naming_the_error_with_its_status() -> None:
    response = refused(409, "pinned already")
    assert response.status == 409 and response.content_type == "application/json"
    assert json.loads(response.text or "") == {"error": "pinned already"}


def test_a_refusal_carries_the_headers_it_is_given() -> None:
    response = refused(401, "authentication required", **{"WWW-Authenticate": 'Bearer realm="reconciler"'})
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="reconciler"'
    assert "WWW-Authenticate" not in refused(401, "x").headers


def test_the_shard_is_read_from_the_current_settings(tmp_path: Path) -> None:
    settings = [Settings(repo=tmp_path, state_dir=tmp_path / "state")]
    store = Store(settings[0].db_path)
    try:
        ctx = WebContext(lambda: settings[-1], store, TransportPool(ssh_options(settings[0])), PassStats(),
                         lambda: None, lambda domains: None, asyncio.Event())
        assert shard_of(ctx) == Shard(1, 1) and shard_of(ctx).whole
        settings.append(settings[0].model_copy(update={"shard": "2/3"}))  # what a SIGHUP does
        assert shard_of(ctx) == Shard(2, 3)
    finally:
        store.close()
