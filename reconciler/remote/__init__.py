"""Everything that speaks POSIX sh to a server: the wire protocols and the shell seam they are
written with (`protocol`), the transports, the probe and its strict reader, the site lock, the
health checks.

Only `remote.transport` opens connections; only `remote.protocol` assembles shell text.
"""
