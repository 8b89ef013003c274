"""Which sites this instance owns when the fleet is split over processes (`shard = "i/n"`).

A server belongs to shard `sha256(server) mod n + 1`, the server being the string as written in
the declarations (`web-1`, `deploy@web-2:2222`): every instance, every restart and every Python
agree, which Python's own `hash()` (salted per process) would not. Like Argo CD sharding its
application controller by cluster, the unit is the server, so one instance holds all of a
server's sites and still probes each server once per pass.

A site on many servers (`servers = [...]`) is owned, whole, by the shard of its first server:
its one rollout (build everywhere, then switch everywhere) must run in one process, and the first
server is already the one that decides (`script_once` runs there). Should an edit of the list move
a site to another instance mid-deploy, the per-site lock on each server keeps the two apart.

Pure: no I/O, no clock. A Shard of 1/1 owns everything.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reconciler.settings_file import parse_shard

if TYPE_CHECKING:  # annotations only: `status` lists shards without loading pydantic
    from reconciler.core.declarations import Declarations


@functools.lru_cache(maxsize=4096)  # a fleet has few servers and many sites on each
def shard_of(server: str, count: int) -> int:
    """The shard (1..count) that owns `server`."""
    digest = hashlib.sha256(server.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def deciding_server(targets: Sequence[str]) -> str:
    """The server whose shard owns a site: its only server, or the first of `servers`."""
    return targets[0] if targets else ""


@dataclass(frozen=True)
class Shard:
    """This instance's shard: `index` of `count`, numbered from 1."""

    index: int = 1
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """From the `shard` setting; ValueError for anything but "i/n" with 1 <= i <= n."""
        return cls(*parse_shard(text))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def whole(self) -> bool:
        """One instance for the whole fleet: nothing is ever skipped."""
        return self.count == 1

    def owner_of(self, targets: Sequence[str]) -> int:
        """The shard owning a site on `targets` (its server, or its `servers` list)."""
        return 1 if self.whole else shard_of(deciding_server(targets), self.count)

    def owns(self, targets: Sequence[str]) -> bool:
        return self.whole or self.owner_of(targets) == self.index

    def skip_reason(self, targets: Sequence[str]) -> str | None:
        """Why this instance leaves a site alone, or None when it owns it."""
        if self.owns(targets):
            return None
        server = deciding_server(targets)
        which = "its first server" if len(targets) > 1 else "server"
        return (f"not this shard: {which} {server or '(none)'} is in shard "
                f"{self.owner_of(targets)}/{self.count} (this instance is {self})")


def split(decls: Declarations, shard: Shard) -> tuple[Declarations, dict[str, str]]:
    """The declarations this instance works on, and the skipped sites with why. An invalid site
    goes by the server it names (or "" when it names none), so exactly one instance reports it."""
    if shard.whole:
        return decls, {}
    skipped: dict[str, str] = {}
    for domain, site in decls.sites.items():
        if (why := shard.skip_reason(site.targets)) is not None:
            skipped[domain] = why
    for domain, invalid in decls.invalid.items():
        if (why := shard.skip_reason((invalid.server,))) is not None:
            skipped[domain] = why
    if not skipped:
        return decls, skipped
    owned = dataclasses.replace(
        decls, sites={d: s for d, s in decls.sites.items() if d not in skipped},
        invalid={d: s for d, s in decls.invalid.items() if d not in skipped})
    return owned, skipped
