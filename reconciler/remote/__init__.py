"""Everything that speaks POSIX sh to a server: the shell seam (`shell`), the transports,
the probe and its strict reader, the site lock and the remote command builders.

Only `remote.transport` opens connections; only `remote.shell` and the command builders
beside it assemble shell text.
"""
