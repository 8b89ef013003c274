"""How every remote git command runs: never interactive, bounded when a git host goes silent,
over one multiplexed SSH connection per set of credentials (the preamble each command that runs
git starts with)."""

from __future__ import annotations

# Git must never stop to ask a question: no terminal prompt, no interactive ssh. Nor wait for ever
# on a git host that does not answer: ssh gives up on a connection, the
# handshake included, after GIT_CONNECT_SECONDS, and on one that stopped answering its keepalives
# after GIT_STALL_SECONDS; git's HTTP (curl) aborts a transfer that moved less than 1 byte/s for
# GIT_STALL_SECONDS (a git host sends keepalives every 5 s while it prepares a pack, so only a
# dead one is cut). Git 2.39 has no connect timeout for HTTP, and curl's low-speed limit does not
# cover connecting: a SYN that is never answered fails after the kernel's retries (~2 min on
# Linux). A deploy's fetch and clone are bounded by these and deploy_timeout; the probe's
# `git ls-remote` has its own, shorter bound on top (`probe_head`). The server's own
# GIT_HTTP_LOW_SPEED_* and `-o` options given in its GIT_SSH_COMMAND win.
#
# And it reaches a git host over one SSH connection, not one per git command: an SSH
# login costs a key exchange and the host's session setup (~0.2 s to 127.0.0.1 here, a WAN round
# trip or more elsewhere), and a pass's probe (`ls-remote`) is followed by a deploy's fetch. So an
# OpenSSH `GIT_SSH_COMMAND` (ours, or the server's own when it is a plain `ssh ...` line; a
# wrapper program is left alone) gets ControlMaster=auto with a socket under ~/.ssh/reconciler-mux
# that persists 300 s, so the next poll reuses it too. Options given earlier win in OpenSSH, so a
# server's own `-o ControlMaster=no` opts out. Run twice in one command (an unpin's lock command
# checks the head, then probes), it adds them once (`reconciler_git`).
#
# One connection carries one set of credentials, so the socket is named after everything that
# decides how ssh connects: the SHA-256 of `ssh -G` for this very call
# (git's ssh command without our options, and git's arguments but the last, the remote command),
# which is the configuration ssh resolves: HostName, Port, User, IdentityFile, ProxyJump, ... .
# OpenSSH's `%C` hashes only host, port and user, so two ssh_config aliases of one git host with
# their own deploy keys shared one master, and site A's git ran as site B's key. `%n` (the alias)
# would name them apart, but a long alias makes the path too long for sun_path, and ssh then
# fails outright; the hash has a fixed length (40 hex digits). `-G` costs one ssh process that
# reads the config (a few ms, no network) per git connection. If `-G` fails, ControlPath=none.
#
# The directory must be ours: a real directory (not a symlink: `-O` alone follows one), owned by
# the user, writable by no one else (a socket planted there would be a "master" we talk to).
# Otherwise, or with a HOME too long for a socket path (sun_path: 108 bytes, with the 40-digit
# name and ssh's 17-byte temporary suffix), or not absolute, or with a character outside
# [A-Za-z0-9/._-] (the path is spliced into GIT_SSH_COMMAND, which git runs with sh), or without
# `sha256sum`, git connects without multiplexing, as before.
GIT_CONNECT_SECONDS = 20
GIT_STALL_SECONDS = 30
_GIT_ALIVE_SECONDS = 10  # ssh keepalive interval; GIT_STALL_SECONDS / this = the keepalives missed
_GIT_MUX_PATH = (
    # Text of GIT_SSH_COMMAND, run by git's sh with git's ssh arguments as "$@": the ControlPath for
    # this call. `$b` is the command up to our options (the marker is this very text). MUXDIR
    # becomes the checked directory, spliced in by the preamble (its characters need no quoting).
    '$(b=${0%%" -o ControlPath=\\$(b="*}; g=$(eval "$b -G \\"\\$@\\"" 2>/dev/null)'
    ' && k=$(printf %s "$g" | sha256sum) && printf %s/%.40s MUXDIR "$k" || echo none)'
)
GIT_PREAMBLE = (
    'export GIT_TERMINAL_PROMPT=0 GIT_SSH_COMMAND="${GIT_SSH_COMMAND:-ssh -o BatchMode=yes}"\n'
    'export GIT_HTTP_LOW_SPEED_LIMIT="${GIT_HTTP_LOW_SPEED_LIMIT:-1}"'
    f' GIT_HTTP_LOW_SPEED_TIME="${{GIT_HTTP_LOW_SPEED_TIME:-{GIT_STALL_SECONDS}}}"\n'
    # Once per command: after the first run the word is "1ssh ...", which matches nothing.
    'case ${reconciler_git:-}$GIT_SSH_COMMAND in *reconciler-mux*) ;; ssh|"ssh "*)\n'
    '  reconciler_git=1\n'
    '  m=${HOME:-/nonexistent}/.ssh/reconciler-mux\n'
    '  case $m in [!/]*|*[!A-Za-z0-9/._-]*) m= ;; esac\n'
    '  if [ -n "$m" ] && [ ${#m} -le 48 ] && command -v sha256sum >/dev/null 2>&1 &&\n'
    '     (umask 077 && mkdir -p -- "$m") 2>/dev/null && [ ! -L "$m" ] && [ -d "$m" ] && [ -O "$m" ]; then\n'
    # `ls -l` modes: d rwx rwx rwx; the 6th and 9th characters are group and other write.
    '    case $(ls -ld -- "$m" 2>/dev/null) in d????-??-*)\n'
    "      GIT_SSH_COMMAND=\"$GIT_SSH_COMMAND -o ControlPath=\"'" + _GIT_MUX_PATH.replace("MUXDIR", "'\"$m\"'")
    + "'\" -o ControlMaster=auto -o ControlPersist=300\" ;;\n"
    '    esac\n'
    '  fi\n'
    f'  GIT_SSH_COMMAND="$GIT_SSH_COMMAND -o ConnectTimeout={GIT_CONNECT_SECONDS}'
    f' -o ServerAliveInterval={_GIT_ALIVE_SECONDS}'
    f' -o ServerAliveCountMax={GIT_STALL_SECONDS // _GIT_ALIVE_SECONDS}" ;;\n'
    'esac\n'
)
