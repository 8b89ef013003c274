"""Choosing desired state: which declarations commit is applied (the branch tip, or with
`require_signed` the newest verified commit), its parsed sites (cached by commit and by blob), the
operator's trust override, the declarations' Git host, and which sites this shard owns.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from typing import Any

from reconciler.core.declarations import Declarations, refuse_local
from reconciler.core.shard import Shard, split
from reconciler.engine import heap, source, trust, unsealing, upstream
from reconciler.engine.state_reader import FETCH_PROBLEM
from reconciler.engine.workbench import Workbench
from reconciler.errors import ConfigError, DeclarationError, RepoUnreachable

log = logging.getLogger(__name__)

LAST_VERIFIED = "last_verified_commit"
LAST_OVERRIDE = "last_trust_override"  # JSON of the last `reconciler accept`: commit, replaced, by, at


class DesiredState:
    def __init__(self, bench: Workbench) -> None:
        self.bench = bench
        self.notice = ""  # why the desired state is not the branch tip (unsigned tip), if it is not
        self._parsed: Declarations | None = None
        self._blobs = source.BlobCache()  # the last commit's parse results by blob: a pin parses one file
        # Sites of other shards left alone by the last pass or prune (domain -> why).
        self.skipped: dict[str, str] = {}
        self._split: tuple[Any, ...] | None = None
        self._unsealer = unsealing.Unsealer()

    @property
    def fetch_problem(self) -> str:
        """Why the declarations' Git host could not be reached at the last fetch, by this process
        or another ("" when it could, or `repo` is a path): the first fetch that succeeds clears it
        for every process at once."""
        if self.bench.settings.repo_url is None:
            return ""
        return self.bench.store.meta(FETCH_PROBLEM) or ""

    @fetch_problem.setter
    def fetch_problem(self, problem: str) -> None:
        if (self.bench.store.meta(FETCH_PROBLEM) or "") != problem:
            self.bench.store.set_meta(FETCH_PROBLEM, problem)

    @property
    def shard(self) -> Shard:
        return Shard.parse(self.bench.settings.shard)

    def owned(self, decls: Declarations) -> Declarations:
        """The sites of `decls` this instance's shard owns; the others go to `skipped`, never
        probed, locked or recorded here (another instance owns their servers)."""
        shard = self.shard
        last = self._split
        # The daemon asks at every wake-up with the same parsed sites: split them once.
        if last is not None and last[0] is decls.sites and last[1] is decls.invalid and last[2] == shard:
            owned_sites, owned_invalid, self.skipped = last[3], last[4], last[5]
            return dataclasses.replace(decls, sites=owned_sites, invalid=owned_invalid)
        owned, self.skipped = split(decls, shard)
        self._split = (decls.sites, decls.invalid, shard, owned.sites, owned.invalid, self.skipped)
        return owned

    def load(self) -> Declarations:
        """Desired state: the branch tip, or with `require_signed` the newest verified commit."""
        choice = self._choose(self.bench.store.meta(LAST_VERIFIED))
        parsed = self._cached(choice.commit) or source.load_commit(self.bench.settings.local_repo, choice.commit,
                                                                   self._blobs)
        return self._settle_load(choice, parsed)

    async def load_async(self) -> Declarations:
        """`load` for the daemon's event loop: resolving, verifying (git subprocesses) and parsing
        (up to thousands of files) run in a worker thread, so a large or hostile declarations
        commit never stalls the loop (HTTP, watchdog, other sites). The store stays on the loop."""
        choice = await asyncio.to_thread(self._choose, self.bench.store.meta(LAST_VERIFIED))
        parsed = self._cached(choice.commit)
        if parsed is None:
            parsed = await asyncio.to_thread(source.load_commit, self.bench.settings.local_repo, choice.commit,
                                             self._blobs)
        return self._settle_load(choice, parsed)

    def _cached(self, commit: str) -> Declarations | None:
        """The parsed declarations of `commit` if they are the last ones parsed (the daemon asks
        before every switch; a commit is parsed once)."""
        parsed = self._parsed
        return parsed if parsed is not None and parsed.commit == commit else None

    def _choose(self, last_verified: str | None) -> trust.Choice:
        """Which commit is desired state now. Blocking (git), touches no store: thread-safe."""
        settings = self.bench.settings
        return trust.choose(settings, source.tip_commit(settings.local_repo, settings.branch), last_verified)

    def accept(self, name: str | None, by: str) -> tuple[str, str | None]:
        """The operator's override for a validly signed commit that does not descend from the last
        verified one (a deliberate reset or rewrite): it becomes the last verified commit, and the
        override is logged and kept in the store. The signature is still required. Returns
        (accepted commit, the last verified commit it replaced)."""
        settings, store = self.bench.settings, self.bench.store
        if settings.require_signed == "off":
            raise ConfigError('accept is for require_signed = "head"; nothing to accept')
        commit = source.resolve_commit(settings.local_repo, name or settings.branch)
        tip = source.tip_commit(settings.local_repo, settings.branch)
        if not source.descends(settings.local_repo, tip, commit):
            raise DeclarationError(f"{commit[:12]} is not on {settings.branch} (its tip {tip[:12]} does not "
                                   "descend from it); nothing accepted")
        problem = trust.verify(settings.local_repo, commit, settings)
        if problem is not None:
            raise DeclarationError(f"declarations commit {commit[:12]} {problem}; nothing accepted")
        previous = store.meta(LAST_VERIFIED)
        store.set_meta(LAST_VERIFIED, commit)
        store.set_meta(LAST_OVERRIDE, json.dumps({"commit": commit, "replaced": previous, "by": by,
                                                  "at": self.bench.clock().strftime("%Y-%m-%dT%H:%M:%SZ")}))
        log.warning("trust override by %s: declarations commit %s accepted as verified (replacing %s)",
                    by, commit[:12], (previous or "none")[:12])
        return commit, previous

    async def refresh_upstream(self) -> bool:
        """Fetch the declarations' Git host into the mirror (when `repo` is a URL). False when it
        cannot be reached: the last fetched commit stays in force and every site's status says
        so (like Argo CD's ComparisonError). Raises only when there is no mirror at all yet."""
        settings = self.bench.settings
        if settings.repo_url is None:
            return True
        try:
            await asyncio.to_thread(upstream.Upstream(settings).fetch)
        except RepoUnreachable as exc:
            self.fetch_problem = f"{exc}; the last fetched declarations stay in force"
            if not upstream.fetched(settings):
                raise  # nothing fetched yet: there is no last commit to keep
            return False
        self.fetch_problem = ""
        return True

    def _settle_load(self, choice: trust.Choice, parsed: Declarations) -> Declarations:
        if parsed is not self._parsed:
            heap.settle_soon()  # they live until the next commit: out of the cyclic collector's way
        self._parsed = parsed
        if choice.verified:
            self.bench.store.set_meta(LAST_VERIFIED, choice.commit)
        self.notice = "; ".join(n for n in (self.fetch_problem, choice.notice) if n)
        # A copy (the cache keeps what was parsed), with local sites refused unless the settings allow them.
        decls = refuse_local(dataclasses.replace(parsed), self.bench.settings.allow_local)
        decls = self._unsealer.open(decls, self.bench.settings.age_identity_file)
        decls.notice = self.notice
        return decls
