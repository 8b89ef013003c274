"""Transports: the only code that talks to servers. Everything above is transport-blind."""

from reconciler.remote.transport.base import Result, Transport

__all__ = ["Result", "Transport"]
