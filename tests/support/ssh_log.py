"""What an in-process command did over SSH: every connection opened and command sent, per
server, and where in that sequence the pin commit landed (for "round trips after the commit")."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from reconciler.engine import pinning
from reconciler.remote.transport import ssh


@dataclass
class SshLog:
    events: list[tuple[str, str]] = field(default_factory=list)  # (connect|run|commit, server)

    def count(self, kind: str, after_commit: bool = False) -> Counter[str]:
        start = next((i for i, (k, _) in enumerate(self.events) if k == "commit"), 0) if after_commit else 0
        return Counter(server for k, server in self.events[start:] if k == kind)

    @property
    def committed(self) -> bool:
        return any(kind == "commit" for kind, _ in self.events)

    def clear(self) -> None:
        self.events.clear()


def ssh_log(monkeypatch: pytest.MonkeyPatch) -> SshLog:
    """Record, from now on in this process, the SSH transport's connections and commands and the
    pin commits (`pinning.set_pin`)."""
    log = SshLog()
    run, connect, set_pin = ssh.SshTransport.run, ssh.SshTransport._connection, pinning.set_pin

    async def recorded_run(self: ssh.SshTransport, command: str, **options: Any) -> Any:
        log.events.append(("run", self.name))
        return await run(self, command, **options)

    async def recorded_connection(self: ssh.SshTransport) -> Any:
        before = self._conn
        conn = await connect(self)
        if conn is not before:
            log.events.append(("connect", self.name))
        return conn

    def recorded_set_pin(*args: Any, **kwargs: Any) -> str:
        commit = set_pin(*args, **kwargs)
        log.events.append(("commit", ""))
        return commit

    monkeypatch.setattr(ssh.SshTransport, "run", recorded_run)
    monkeypatch.setattr(ssh.SshTransport, "_connection", recorded_connection)
    monkeypatch.setattr(pinning, "set_pin", recorded_set_pin)
    return log
