"""Transports: the only code that talks to servers. Everything above is transport-blind."""

from .base import Result, Transport

__all__ = ["Result", "Transport"]
