"""One transport per server, created on first use and shared by every site on that server."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reconciler.core.site_values import LOCAL_REFUSED, LOCAL_SERVER
from reconciler.errors import PermanentError
from reconciler.remote.transport.base import Transport
from reconciler.remote.transport.local import LocalTransport

if TYPE_CHECKING:
    from reconciler.remote.transport.options import SshOptions


class TransportPool:
    """One transport per server, shared by every site on it. Server "local" (this host, as the
    reconciler's own user) only with `allow_local`, the settings' opt-in: the declarations refuse
    such sites before they get here (`core.declarations.refuse_local`); this is the last gate."""

    def __init__(self, options: SshOptions, *, allow_local: bool = False) -> None:
        self._options = options
        self.allow_local = allow_local
        self._transports: dict[str, Transport] = {}

    def get(self, server: str) -> Transport:
        if server == LOCAL_SERVER and not self.allow_local:
            raise PermanentError(LOCAL_REFUSED)
        if server not in self._transports:
            if server == LOCAL_SERVER:
                self._transports[server] = LocalTransport()
            else:
                # asyncssh takes a quarter second to import; local-only runs never pay for it.
                from reconciler.remote.transport.ssh import SshTransport

                self._transports[server] = SshTransport(server, self._options)
        return self._transports[server]

    def session_cap(self, server: str) -> int | None:
        """How many commands `server`'s transport runs at once (None: no cap of its own, this host).
        The engine gives no server more sites at a time than this, so a site's slot of the
        global limit is never spent waiting for a session."""
        if server == LOCAL_SERVER:
            return None
        # Imported here as in `get`: local-only runs never import asyncssh.
        from reconciler.remote.transport.ssh import MAX_SESSIONS

        return MAX_SESSIONS

    @property
    def round_trips(self) -> int:
        """Commands sent to every server so far (benchmarks check passes are O(servers))."""
        return sum(t.round_trips for t in self._transports.values())

    async def close(self) -> None:
        for transport in self._transports.values():
            await transport.close()
        self._transports.clear()
