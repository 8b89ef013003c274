"""`reconciler completion bash`: the bash completion script.

Site names come from the declarations repository (file names of invalid declarations
included), so anyone who can commit there chooses them. The script treats them as data:
they are read line by line (`while IFS='' read -r`) and filtered with a `case` prefix match.
Nothing ever passes them to `compgen -W`, which would expand `$(...)`, `${...}` and
backquotes inside each word. A name with any character outside [a-z0-9.-] (every valid
domain fits) is not offered at all.
"""

from __future__ import annotations

from collections.abc import Iterable

# The only characters a completed word may hold; the case pattern spells them out (a range
# such as a-z can match other letters in some locales).
ALLOWED = "abcdefghijklmnopqrstuvwxyz0123456789.-"


def bash_script(commands: Iterable[str]) -> str:
    words = sorted({*commands, "--config", "--repo", "--state-dir", "--help"})
    if bad := [w for w in words if not w or w.strip(ALLOWED)]:
        raise ValueError(f"command names outside [a-z0-9.-]: {bad!r}")
    command_lines = "\n".join(words)
    return f"""# bash completion for reconciler
# Site names are data from the declarations repository: read line by line and matched with
# `case`, never expanded (no compgen -W); a name outside [a-z0-9.-] is not offered.
_reconciler_offer() {{
    # stdin: candidates, one per line; $cur (the caller's local): the word being completed.
    local w
    while IFS='' read -r w; do
        case $w in
            ""|*[!{ALLOWED}]*) continue ;;
        esac
        case $w in
            "$cur"*) COMPREPLY+=("$w") ;;
        esac
    done
}}
_reconciler() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}"
    COMPREPLY=()
    if [ "$COMP_CWORD" -eq 1 ] || [[ "${{COMP_WORDS[COMP_CWORD-1]}}" == --* && "$COMP_CWORD" -le 3 ]]; then
        _reconciler_offer <<'RECONCILER_COMMANDS'
{command_lines}
RECONCILER_COMMANDS
    else
        _reconciler_offer < <(reconciler status --json 2>/dev/null \\
            | sed -n 's/^ *"domain": "\\(.*\\)",\\{{0,1\\}}$/\\1/p')
    fi
}}
complete -F _reconciler reconciler"""
