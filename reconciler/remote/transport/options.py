"""SSH settings, apart from the SSH transport so that local-only runs never import asyncssh."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SshOptions:
    identity_file: Path | None = None
    known_hosts: Path | None = None
    ssh_config: Path | None = None
    connect_timeout: float = 15.0
    keepalive_interval: float = 15.0
