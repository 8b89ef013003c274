"""Why a site would be deployed again: its effective declaration now against the one its live
release was asked for with (the declarations commit recorded with that deployment), key by key
and named by the file that sets it now (core.layers.explain): "template laravel changed: script
(templates/laravel.toml:3)". Read for `diff`; a site whose declaration did not change (a new app
commit) has no such reason."""

from __future__ import annotations

from collections.abc import Iterable

from reconciler.cli.applied import applied
from reconciler.cli.invocation import Invocation
from reconciler.cli.state import reader
from reconciler.core.declarations import Declarations
from reconciler.core.layers import explain
from reconciler.engine import source
from reconciler.errors import DeclarationError


def reasons(invocation: Invocation, domains: Iterable[str]) -> dict[str, list[str]]:
    """domain -> what changed in its declaration since its live release was asked for."""
    domains = list(domains)
    if not domains:
        return {}
    decls = applied(invocation)
    store = reader(invocation)
    then: dict[str, Declarations | None] = {}
    found: dict[str, list[str]] = {}
    try:
        for domain in domains:
            site, row = decls.sites.get(domain), store.site(domain)
            deployment = store.deployment(row["active_deployment_id"]) if row and row["active_deployment_id"] else None
            commit = deployment["declarations_commit"] if deployment else None
            if site is None or not commit or commit == decls.commit:
                continue
            if commit not in then:
                try:
                    then[commit] = source.load_commit(invocation.settings.local_repo, commit)
                except DeclarationError:
                    then[commit] = None  # gone (a rewritten branch): nothing to compare with
            earlier = then[commit]
            old = earlier.sites.get(domain) if earlier is not None else None
            if old is not None and (why := explain(old.model_dump(), site.model_dump(),
                                                   decls.origins.get(domain, {}))):
                found[domain] = why
    finally:
        store.close()
    return found
