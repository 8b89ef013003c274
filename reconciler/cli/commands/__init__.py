"""The commands of the command line, as one table: each command's name, help, example, arguments
and the module that runs it (`reconciler.cli.commands.<name>`, whose `handle` is an
`invocation.Handler`). The table is data: `--help` and parsing read it without importing any
command module, and `main` imports only the module of the command that runs, so `status`,
`history` and `logs` load none of what the commands that act need (pip's `commands_dict` does
the same).

Names, flags and exit statuses are a contract (SPEC section 5): change them only with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

ATTENTION = 3  # `status --exit-code`: some site needs a person (documented in docs/guide/commands.md)


class Argument(NamedTuple):
    """One `add_argument` call: its flags or name, and its options."""

    flags: tuple[str, ...]
    options: dict[str, Any]


def arg(*flags: str, **options: Any) -> Argument:
    return Argument(flags, options)


@dataclass(frozen=True)
class Command:
    module: str  # imported only when the command runs
    help: str
    example: str
    arguments: tuple[Argument, ...] = ()
    aliases: tuple[str, ...] = ()
    # Look-only commands validate the settings only when they must (engine.memo); every other
    # command validates them before it runs, so a bad config exits 2 before anything happens.
    looks_only: bool = False


# Each command's exit statuses besides 2 (a bad configuration, every command): the reference
# (`python -m docgen`: docs/reference/cli.md, reconciler(1)) is written from this table.
EXITS: dict[str, tuple[tuple[int, str], ...]] = {
    "run": ((0, "stopped cleanly"),),
    "reconcile": ((0, "every site Synced"), (1, "a site not Synced, or the declarations repository not fetched"),
                  (2, "also: declarations that cannot be read")),
    "diff": ((0, "nothing to do"), (1, "a pass would change something, a site is not Synced, or an unknown site")),
    "status": ((0, "otherwise"), (1, "an unknown site"),
               (ATTENTION, "with --exit-code: a site Failed, Invalid, Unknown, Degraded or Missing, or the "
                "declarations repository not fetched"),
               (2, "also, with --exit-code: no config file or no state database (a check that cannot see)")),
    "history": ((0, "shown"), (1, "an unknown site")),
    "logs": ((0, "shown"), (1, "an unknown site or no such deployment")),
    "prune": ((0, "pruned"), (1, "--site names an unknown site"), (2, "also: --keep below 1")),
    "rollback": ((0, "the release is live (or committed, with --no-wait)"),
                 (1, "refused, nothing committed (no candidate, already active, gone, not a successful build), "
                  "or committed but not made live")),
    "unpin": ((0, "the branch's release is live (or committed, with --no-wait)"),
              (1, "refused, or committed but not made live")),
    "retry": ((0, "built (or recorded, with --no-wait)"), (1, "nothing to retry, or the build failed")),
    "redeploy": ((0, "built (or recorded, with --no-wait)"), (1, "refused (e.g. a pinned site), or the build failed")),
    "accept": ((0, "accepted"), (1, "refused")),
    "unlock": ((0, "unlocked"), (1, "refused")),
    "doctor": ((0, "nothing missing"), (1, "something missing (each with its fix)")),
    "env": ((0, "done"), (1, "refused, nothing committed"), (2, "also: KEY=VALUE given where none is taken, "
                                                              "or none given to set")),
    "import": ((0, "every site read"), (1, "a site could not be read (listed with the reason)")),
    "validate": ((0, "every declaration valid"), (1, "an invalid declaration")),
    "show": ((0, "shown"), (1, "an unknown site")),
    "nginx": ((0, "printed"), (1, "an unknown site")),
    "completion": ((0, "printed"),),
}


def _command(name: str, help: str, example: str, *arguments: Argument, aliases: tuple[str, ...] = (),
             looks_only: bool = False) -> Command:
    return Command(f"{__name__}.{name}", help, example, arguments, aliases, looks_only)


_AUTHOR = arg("--author", help="'Name <email>' of who asks (default: sudo's user, else your git identity)")
_NO_WAIT = arg("--no-wait", action="store_true", help="only record the request and wake a running daemon; it builds")
_PIN_NO_WAIT = arg("--no-wait", action="store_true",
                   help="return once committed (a running daemon is woken to apply it); default: once live")

# In the order `reconciler --help` lists them.
COMMANDS: dict[str, Command] = {
    "run": _command("run", "the daemon: reconcile continuously",
                    "reconciler --config /etc/reconciler/reconciler.toml run"),
    "reconcile": _command("reconcile", "one full pass now", "reconciler reconcile --site shop.example.com --dry-run",
                          arg("--site", help="only this domain"),
                          arg("--dry-run", action="store_true", help="print the plan, change nothing"),
                          arg("--override-window", action="store_true",
                              help="deploy even where a deploy window holds it (this pass only; history names you)")),
    "diff": _command("diff", "what the next pass would do per site; exit 1 when there is something to do",
                     "reconciler diff", arg("--site", help="only this domain"), aliases=("plan",)),
    "status": _command("status", "every declared site, or one in detail", "reconciler status shop.example.com",
                       arg("--json", action="store_true"),
                       arg("--exit-code", action="store_true",
                           help=f"exit {ATTENTION} when a site is Failed, Invalid, Unknown, Degraded or Missing "
                                "(monitoring)"),
                       arg("domain", nargs="?"), looks_only=True),
    "history": _command("history", "a site's deployments, newest first", "reconciler history shop.example.com --json",
                        arg("domain"), arg("--json", action="store_true"), looks_only=True),
    "logs": _command("logs", "the output of a deployment (default: latest)", "reconciler logs shop.example.com -f",
                     arg("domain"), arg("id", nargs="?", type=int),
                     arg("-f", "--follow", action="store_true", help="follow a running deployment's output"),
                     arg("--raw", action="store_true",
                         help="write the output's bytes as they are, terminal control sequences included (default: "
                              "control characters but newline and tab are shown escaped, e.g. \\x1b)"),
                     looks_only=True),
    "prune": _command("prune", "remove old releases now", "reconciler prune --keep 5 --dry-run",
                      arg("--keep", type=int), arg("--dry-run", action="store_true"), arg("--site")),
    "rollback": _command("rollback", "commit a pin to an older release (default: the one before the active one) "
                         "and return when it is live", "reconciler rollback shop.example.com 31072025-143022",
                         arg("domain"), arg("release", nargs="?"), _AUTHOR, _PIN_NO_WAIT),
    "unpin": _command("unpin", "commit the removal of a site's pin and return when the branch's release is live",
                      "reconciler unpin shop.example.com", arg("domain"), _AUTHOR, _PIN_NO_WAIT),
    "retry": _command("retry", "forget a site's remembered failure and build again (nothing committed)",
                      "reconciler retry shop.example.com", arg("domain"), _NO_WAIT),
    "redeploy": _command("redeploy", "build a site's current commit again as a fresh release (nothing committed)",
                         "reconciler redeploy shop.example.com", arg("domain"), _NO_WAIT),
    "accept": _command("accept", "with require_signed: accept a signed commit that does not descend from the last "
                       "verified one (a deliberate reset or rewrite of the branch); logged",
                       "reconciler accept 3f2a9c1", arg("commit", nargs="?", help="default: the branch tip")),
    "unlock": _command("unlock", "remove a site's lock on its server (after checking nobody works on it)",
                       "reconciler unlock shop.example.com", arg("domain")),
    "doctor": _command("doctor", "check what the servers (or SERVER) need for their declared sites and say "
                       "what is missing, with the fix; exit 1 when something is", "reconciler doctor web-1",
                       arg("server", nargs="?", help="only this server (declared or not: the basics are checked)")),
    "env": _command("env", "a site's encrypted environment (sites.d/D.env.age): list its keys, set one, or edit it "
                    "in $EDITOR; a change is committed with you as its author",
                    "reconciler env set shop.example.com MAIL_HOST=smtp.example.com",
                    arg("action", choices=["keys", "set", "edit"]), arg("domain"),
                    arg("assignments", nargs="*", metavar="KEY=VALUE",
                        help="env set: the values to set; a bare KEY reads its value from stdin (one line: "
                             "it stays out of argv and shell history)"),
                    _AUTHOR),
    # `import` is a Python keyword: its module is import_.
    "import": Command(f"{__name__}.import_", "find the BrokeForge-layout sites on servers that already run them and "
                      "print (or --write) one declaration per site, pinned to its live release so the first pass "
                      "deploys nothing; exit 1 when a site cannot be read (listed with the reason)",
                      "reconciler import web-1 --write",
                      (arg("server", nargs="+", help="an SSH destination or ssh_config Host alias, as `server =` "
                           "says it; several: a site on each with the same live release becomes `servers = [...]`"),
                       arg("--base", metavar="PATH", help="the servers' base_path (default /home/brokeforge)"),
                       arg("--write", action="store_true",
                           help="write sites.d/<domain>.toml into the declarations work tree (never over a file); "
                                "review, then commit"))),
    "validate": _command("validate", "check declarations without touching any server", "reconciler validate ~/sites",
                         arg("path", nargs="?")),
    "show": _command("show", "a site's effective declaration (over _defaults.toml and its template) and "
                     "where each key came from", "reconciler show shop.example.com",
                     arg("domain"), arg("--json", action="store_true")),
    "nginx": _command("nginx", "print an nginx server block for a site", "reconciler nginx shop.example.com",
                      arg("domain")),
    "completion": _command("completion", "print a shell completion script", "source <(reconciler completion bash)",
                           arg("shell", choices=["bash"])),
}


def names() -> list[str]:
    """Every word that names a command, aliases included (what bash completion offers)."""
    return [word for name, command in COMMANDS.items() for word in (name, *command.aliases)]


def canonical(word: str) -> str:
    """The command a name or alias means."""
    return next((name for name, command in COMMANDS.items() if word == name or word in command.aliases), word)
