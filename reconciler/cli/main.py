"""Command line: parse arguments, call the library, print. Exit codes follow SPEC section 5."""

from __future__ import annotations

# Imports are light here and heavy inside the commands that need them: `--help`, `status`,
# `history` and `logs` must answer at once (issue 15), and pydantic, pygit2, sqlite-utils,
# asyncio and asyncssh each cost tens of milliseconds to import. tests/test_cli_startup.py
# checks which modules the look-only commands load; bench/cli.py times them.
import argparse
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from reconciler.engine.memo import Looks, Memo, settings_key
from reconciler.errors import ConfigError, DeclarationError, ReconcilerError
from reconciler.settings_file import DEFAULT_STATE_DIR, config_file, read_settings_file

if TYPE_CHECKING:
    from reconciler.cli.progress import Progress
    from reconciler.config import Settings
    from reconciler.core.declarations import Declarations
    from reconciler.engine.converge import Reconciler
    from reconciler.engine.outcome import SiteOutcome
    from reconciler.engine.rows import DeploymentRow
    from reconciler.engine.state_reader import StateReader
    from reconciler.engine.store import Store
    from reconciler.engine.views import Declared

T = TypeVar("T")

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reconciler",
        description="Converge PHP/Laravel sites on SSH servers to the declarations in a Git repository.",
        epilog="example: reconciler --repo /srv/sites.git reconcile --dry-run",
    )
    parser.add_argument("--config", help="settings file (default: $RECONCILER_CONFIG or ./reconciler.toml)")
    parser.add_argument("--repo", help="declarations repository (default: current directory)")
    parser.add_argument("--state-dir", help="database and logs (default: ./state)")
    parser.add_argument("--shard", metavar="I/N",
                        help='own only the servers of shard I of N, e.g. 2/3 (default: shard from the config, "1/1")')
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, example: str, aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, aliases=list(aliases),
                              epilog=f"example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter)

    command("run", "the daemon: reconcile continuously", "reconciler --config /etc/reconciler/reconciler.toml run")
    p = command("reconcile", "one full pass now", "reconciler reconcile --site shop.example.com --dry-run")
    p.add_argument("--site", help="only this domain")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p = command("diff", "what the next pass would do per site; exit 1 when there is something to do",
                "reconciler diff", aliases=("plan",))
    p.add_argument("--site", help="only this domain")
    p = command("status", "every declared site, or one in detail", "reconciler status shop.example.com")
    p.add_argument("--json", action="store_true")
    p.add_argument("--exit-code", action="store_true",
                   help=f"exit {ATTENTION} when a site is Failed, Invalid, Unknown, Degraded or Missing (monitoring)")
    p.add_argument("domain", nargs="?")
    p = command("history", "a site's deployments, newest first", "reconciler history shop.example.com --json")
    p.add_argument("domain")
    p.add_argument("--json", action="store_true")
    p = command("logs", "the output of a deployment (default: latest)", "reconciler logs shop.example.com -f")
    p.add_argument("domain")
    p.add_argument("id", nargs="?", type=int)
    p.add_argument("-f", "--follow", action="store_true", help="follow a running deployment's output")
    p.add_argument("--raw", action="store_true",
                   help="write the output's bytes as they are, terminal control sequences included (default: "
                        "control characters but newline and tab are shown escaped, e.g. \\x1b)")
    p = command("prune", "remove old releases now", "reconciler prune --keep 5 --dry-run")
    p.add_argument("--keep", type=int)
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--site")
    p = command("rollback", "commit a pin to an older release (default: the one before the active one)",
                "reconciler rollback shop.example.com 31072025-143022")
    p.add_argument("domain")
    p.add_argument("release", nargs="?")
    p.add_argument("--author", help="'Name <email>' of who asks (default: your git identity)")
    p = command("unpin", "commit the removal of a site's pin", "reconciler unpin shop.example.com")
    p.add_argument("domain")
    p.add_argument("--author", help="'Name <email>' of who asks (default: your git identity)")
    for name, help in (("retry", "forget a site's remembered failure and build again (nothing committed)"),
                       ("redeploy", "build a site's current commit again as a fresh release (nothing committed)")):
        p = command(name, help, f"reconciler {name} shop.example.com")
        p.add_argument("domain")
        p.add_argument("--no-wait", action="store_true", help="only record the request; the daemon builds")
    p = command("accept", "with require_signed: accept a signed commit that does not descend from the last "
                "verified one (a deliberate reset or rewrite of the branch); logged",
                "reconciler accept 3f2a9c1")
    p.add_argument("commit", nargs="?", help="default: the branch tip")
    p = command("unlock", "remove a site's lock on its server (after checking nobody works on it)",
                "reconciler unlock shop.example.com")
    p.add_argument("domain")
    p = command("validate", "check declarations without touching any server", "reconciler validate ~/sites")
    p.add_argument("path", nargs="?")
    p = command("nginx", "print an nginx server block for a site", "reconciler nginx shop.example.com")
    p.add_argument("domain")
    p = command("completion", "print a shell completion script", "source <(reconciler completion bash)")
    p.add_argument("shell", choices=["bash"])
    return parser


# The config file this invocation read (None: defaults and flags only), named when a command
# finds no state database: a CLI run outside the service's setup must say what it looked at.
_config_in_use: Path | None = None


class Invocation:
    """This run's settings: the config file read at once, validated (pydantic) on first use.
    The look-only commands ask for `looks()` instead, which a config validated before answers
    from the memo without validating again."""

    def __init__(self, config: str | None, overrides: dict[str, Any]) -> None:
        self.path = config_file(config)
        self.raw = read_settings_file(self.path, overrides)
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from reconciler.config import validate_settings

            self._settings = validate_settings(self.raw, self.path)
        return self._settings

    def looks(self) -> Looks:
        key = settings_key(self.raw)
        state_dir = self.raw.get("state_dir", DEFAULT_STATE_DIR)
        memo = Memo(state_dir) if key is not None and isinstance(state_dir, Path) else None
        if memo is not None and key is not None and (found := memo.looks(key)) is not None:
            return found
        looks = Looks.of(self.settings)
        # Remembered only beside a state database: looking never creates a state directory.
        if memo is not None and key is not None and looks.db_path.exists() and Path(looks.state_dir) == state_dir:
            memo.remember_settings(key, looks)
        return looks


def main(argv: Sequence[str] | None = None) -> int:
    global _config_in_use
    args = _parser().parse_args(argv)
    command = _ALIASES.get(args.command, args.command)
    try:
        invocation = Invocation(args.config, {"repo": args.repo, "state_dir": args.state_dir, "shard": args.shard})
        _config_in_use = invocation.path
        if command not in _LOOKING:
            invocation.settings  # noqa: B018 - a bad config exits 2 before anything runs
    except ConfigError as exc:
        print(f"reconciler: {exc}", file=sys.stderr)
        return 2
    try:
        if command in _LOOKING:
            return _LOOKING[command](invocation, args)
        return _COMMANDS[command](invocation.settings, args)
    except ConfigError as exc:
        print(f"reconciler: {exc}", file=sys.stderr)
        return 2
    except DeclarationError as exc:
        print(f"reconciler: {exc}", file=sys.stderr)
        return 2 if args.command == "reconcile" else 1
    except ReconcilerError as exc:
        print(f"reconciler: {exc}", file=sys.stderr)
        return 1


def _store(settings: Settings) -> Store:
    from reconciler.engine.store import Store

    return Store(settings.db_path)


def _no_database(db_path: Path) -> None:
    used = f"config {_config_in_use}" if _config_in_use is not None else "no config file (defaults)"
    print(f"reconciler: no state database at {db_path} ({used}): nothing recorded here yet. "
          "To look at the service's sites, use its config: reconciler --config /etc/reconciler/reconciler.toml "
          "status (or set RECONCILER_CONFIG)", file=sys.stderr)


def _reader(settings: Settings) -> Store:
    """The state database for a command that only looks. Looking never creates it: without one,
    say which config and state dir are in use and how to reach the service's, and show what
    can be shown from the declarations alone."""
    from reconciler.engine.store import Store

    if settings.db_path.exists():
        return Store(settings.db_path)
    _no_database(settings.db_path)
    return Store.scratch()


def _look(invocation: Invocation, looks: Looks) -> StateReader | Store:
    """`_reader` for status/history/logs: plain sqlite3 (no sqlite-utils), unless the database
    is missing (the scratch Store says so) or older than its readers (Store migrates it)."""
    import sqlite3

    from reconciler.engine.state_reader import StaleSchema, StateReader

    if looks.db_path.exists():
        try:
            return StateReader(looks.db_path)
        except (StaleSchema, sqlite3.Error):
            pass
    return _reader(invocation.settings)


def _applied(settings: Settings) -> Declarations:
    """The declarations the daemon applies: the branch tip, or with `require_signed` the newest
    verified commit, never an unverified tip (whose file names and pins are untrusted). Says so
    when the tip is newer and not applied."""
    from reconciler.core import declarations
    from reconciler.engine import source
    from reconciler.engine.converge import Reconciler

    if settings.require_signed == "off":
        return declarations.refuse_local(source.load(settings.local_repo, settings.branch), settings.allow_local)
    store = _reader(settings)
    try:
        decls = Reconciler(settings, store).load()
    finally:
        store.close()
    if decls.notice:
        print(f"reconciler: warning: {declarations.printable(decls.notice)}", file=sys.stderr)
    return decls


def _load_or_none(settings: Settings) -> Declarations | None:
    try:
        return _applied(settings)
    except DeclarationError as exc:
        print(f"reconciler: warning: {exc}; showing the state database only", file=sys.stderr)
        return None


def _declared(invocation: Invocation, looks: Looks) -> dict[str, Declared] | None:
    """What status shows of the applied declarations (None: unreadable, the database only).
    Remembered per commit: with the branch tip read from git's ref files and its summary in the
    memo, neither pygit2 nor the validators are loaded. `require_signed` always takes the long
    way (which commit applies depends on the verification record)."""
    from reconciler.engine.branch_tip import read_tip

    tip = read_tip(Path(looks.local_repo), looks.branch) if looks.require_signed == "off" else None
    memo = Memo(Path(looks.state_dir))
    if tip is not None and (found := memo.declared(tip, looks.allow_local)) is not None:
        return found
    decls = _load_or_none(invocation.settings)
    if decls is None:
        return None
    from reconciler.engine.views import declared

    sites = declared(decls)
    if tip is not None and decls.commit == tip and looks.db_path.exists():
        memo.remember_declared(tip, looks.allow_local, sites)
    return sites


class PassResult(NamedTuple):
    outcomes: list[SiteOutcome]
    notice: str
    skipped: dict[str, str]  # sites of other shards: domain -> why


async def _pass(settings: Settings, site: str | None, dry_run: bool,
                progress: Progress | None = None) -> PassResult:
    from reconciler.engine.converge import Reconciler

    store = _reader(settings) if dry_run else _store(settings)
    reconciler = Reconciler(settings, store, progress=progress.step if progress else None)
    if progress is not None:
        progress.start()
    try:
        await reconciler.refresh_upstream()  # declarations on a Git host: what it has now
        outcomes = await reconciler.run_pass(site, dry_run=dry_run)
        return PassResult(outcomes, reconciler.notice, reconciler.skipped)
    finally:
        if progress is not None:
            await progress.stop()
        await reconciler.close()
        reconciler.store.close()


def _progress() -> Progress:
    from reconciler.cli.progress import Progress

    return Progress(sys.stderr, live=sys.stderr.isatty())


def cmd_reconcile(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    progress = None if args.dry_run else _progress()
    return _report(asyncio.run(_pass(settings, args.site, args.dry_run, progress)), settings, args.site,
                   args.dry_run)


def _skipped(result: PassResult, settings: Settings, site: str | None) -> int | None:
    """Say what a sharded pass left to other instances. An exit status when `site` is one of
    them (1: nothing was done for it), else None."""
    from reconciler.core.text import printable

    if site is not None and site in result.skipped:
        print(f"reconciler: {site}: {printable(result.skipped[site])}", file=sys.stderr)
        return 1
    if result.skipped and site is None:
        count = len(result.skipped)
        print(f"shard {settings.shard}: {count} site{'s' if count != 1 else ''} of other shards skipped")
    return None


def _report(result: PassResult, settings: Settings, site: str | None, dry_run: bool) -> int:
    from reconciler.core.plan import SYNCED
    from reconciler.core.text import printable

    outcomes, notice = result.outcomes, result.notice
    if notice:
        print(f"warning: {notice}")
    if (code := _skipped(result, settings, site)) is not None:
        return code
    if site and not outcomes:
        print(f"reconciler: {site}: no such site declared", file=sys.stderr)
        return 1
    for o in outcomes:
        line = f"{o.domain}: {o.sync}/{o.health}"
        if o.message:
            line += f" - {o.message}"
        print(printable(line))
        for action in o.actions:
            print(f"  {'would ' if dry_run else ''}{printable(action)}")
    return 0 if all(o.sync == SYNCED for o in outcomes) else 1


def cmd_retry(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio
    import getpass

    from reconciler.engine import actions

    forgiven = asyncio.run(_with_reconciler(settings, lambda r: actions.retry(r, args.domain, getpass.getuser())))
    print(f"{args.domain}: forgot {forgiven} remembered failure{'s' if forgiven != 1 else ''}; building now")
    return _build_now(settings, args)


def cmd_redeploy(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio
    import getpass

    from reconciler.engine import actions

    asyncio.run(_with_reconciler(settings, lambda r: actions.redeploy(r, args.domain, getpass.getuser())))
    print(f"{args.domain}: a fresh build of the current commit is requested; building now")
    return _build_now(settings, args)


def _build_now(settings: Settings, args: argparse.Namespace) -> int:
    """The pass that answers a retry/redeploy, for that site only (a running daemon holding the
    site's lock answers it instead: the request waits in the state database)."""
    import asyncio

    if args.no_wait:
        return 0
    return _report(asyncio.run(_pass(settings, args.domain, False, _progress())), settings, args.domain, False)


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from reconciler.service.daemon import run_daemon

    return run_daemon(settings, args.config, {"repo": args.repo, "state_dir": args.state_dir, "shard": args.shard})


def cmd_status(invocation: Invocation, args: argparse.Namespace) -> int:
    import json

    from reconciler.cli.render import site_detail, table, use_color
    from reconciler.core.shard import Shard
    from reconciler.engine.views import declared_views, history_views, in_step

    looks = invocation.looks()
    store = _look(invocation, looks)
    shard = Shard.parse(looks.shard)
    try:
        views = declared_views(store, _declared(invocation, looks), shard)
        if args.domain:
            views = [v for v in views if v["domain"] == args.domain]
            if not views:
                print(f"reconciler: {args.domain}: unknown site (not declared, never seen)", file=sys.stderr)
                return 1
        # Another shard's sites are another instance's to alarm about.
        code = _attention_code([v for v in views if not v["skipped"]]) if args.exit_code else 0
        if args.json:
            print(json.dumps(views, indent=2))
            return code
        color = use_color(sys.stdout)
        if args.domain:
            print(site_detail(views[0], history_views(store, args.domain)[:5], color))
            return code
    finally:
        store.close()
    rows = [[v["domain"], v["server"], in_step(v), v["sync"], v["health"], v["active_release"] or "-",
             (v["active_commit"] or "-")[:12], v["pinned"] or "-", v["last_deployed_at"] or "-",
             v["message"]] for v in views]
    headers = ["SITE", "SERVER", "SERVERS", "SYNC", "HEALTH", "ACTIVE", "COMMIT", "PINNED", "LAST DEPLOY", "MESSAGE"]
    if not shard.whole:
        headers.insert(2, "SHARD")
        for row, view in zip(rows, views, strict=True):
            row.insert(2, view["shard"])
        skipped = sum(1 for v in views if v["skipped"])
        print(f"shard {shard}: {len(views) - skipped} site(s) here, {skipped} skipped (other shards)")
    print(table(headers, rows, color=color))
    return code


ATTENTION = 3  # `status --exit-code`: some site needs a person (documented in the README)


def _attention_code(views: list[dict[str, Any]]) -> int:
    """ATTENTION when a site is Failed, Invalid or Unknown, or Degraded or Missing; Progressing
    and OutOfSync are the reconciler at work, not an alarm."""
    from reconciler.core.status import Health, Sync

    bad_sync = {Sync.FAILED, Sync.INVALID, Sync.UNKNOWN}
    bad_health = {Health.DEGRADED, Health.MISSING}
    return ATTENTION if any(v["sync"] in bad_sync or v["health"] in bad_health for v in views) else 0


def cmd_diff(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from reconciler.core.plan import SYNCED

    result = asyncio.run(_pass(settings, args.site, True))
    outcomes, notice = result.outcomes, result.notice
    if notice:
        print(f"warning: {notice}")
    if (code := _skipped(result, settings, args.site)) is not None:
        return code
    if args.site and not outcomes:
        print(f"reconciler: {args.site}: no such site declared", file=sys.stderr)
        return 1
    pending = False
    for o in outcomes:
        if o.actions:
            pending = True
            print(f"{o.domain} ({o.server}):")
            for action in o.actions:
                print(f"  + {action}")
        elif o.sync != SYNCED:
            print(f"{o.domain} ({o.server}): {o.sync} - {o.message}")
        else:
            print(f"{o.domain} ({o.server}): up to date")
    # Nonzero whenever the fleet is not simply in step: work pending, or a site Failed/Invalid/
    # Unknown that no pass will fix by itself (a cron or CI check must notice both).
    return 1 if pending or any(o.sync != SYNCED for o in outcomes) else 0


def cmd_nginx(settings: Settings, args: argparse.Namespace) -> int:
    from reconciler.cli.nginx import nginx_server_block

    decls = _applied(settings)
    site = decls.sites.get(args.domain)
    if site is None:
        print(f"reconciler: {args.domain}: no such valid site declared", file=sys.stderr)
        return 1
    print(nginx_server_block(site))
    return 0


def cmd_completion(settings: Settings, args: argparse.Namespace) -> int:
    from reconciler.cli.completion import bash_script

    print(bash_script([*_COMMANDS, *_LOOKING, *_ALIASES]))
    return 0


def _known(invocation: Invocation, looks: Looks, store: StateReader | Store, domain: str) -> bool:
    if store.site(domain) is not None:
        return True
    sites = _declared(invocation, looks)
    return sites is not None and domain in sites


def cmd_history(invocation: Invocation, args: argparse.Namespace) -> int:
    import json

    from reconciler.cli.render import history_table, use_color
    from reconciler.engine.views import history_views

    looks = invocation.looks()
    store = _look(invocation, looks)
    try:
        if not _known(invocation, looks, store, args.domain):
            print(f"reconciler: {args.domain}: unknown site", file=sys.stderr)
            return 1
        views = history_views(store, args.domain)
    finally:
        store.close()
    if args.json:
        print(json.dumps(views, indent=2))
        return 0
    print(history_table(views, use_color(sys.stdout)))
    return 0


def cmd_logs(invocation: Invocation, args: argparse.Namespace) -> int:
    """A deployment's output. Build output is whatever the app's scripts (composer, artisan, npm)
    printed: unless --raw, its control characters are shown escaped (`printable_lines`), on a
    terminal and when piped alike, since `logs | tail`, `| grep` and `| less -R` end on a
    terminal too; only a byte-exact copy (--raw) keeps them."""
    from reconciler.core.text import printable_lines
    from reconciler.engine.deploy_log import finished_copy

    looks = invocation.looks()
    store = _look(invocation, looks)
    try:
        if not _known(invocation, looks, store, args.domain):
            print(f"reconciler: {args.domain}: unknown site", file=sys.stderr)
            return 1
        rows = store.deployments(args.domain)
        row: DeploymentRow | None = rows[0] if rows and args.id is None else None
        if args.id is not None:
            row = store.deployment(args.id)
            if row is not None and row["site"] != args.domain:
                row = None
    finally:
        store.close()
    if row is None:
        print(f"reconciler: {args.domain}: no such deployment", file=sys.stderr)
        return 1
    local = row.get("local_log")
    remote = bool(row.get("deployment_path") and row.get("log_file_path"))
    if not args.follow and not (local and Path(local).is_file()) and not remote and not row.get("message"):
        print(f"reconciler: no log kept for deployment {row['id']}", file=sys.stderr)
        return 1
    # The local copy when there is one (read here: no event loop, no transport); else the
    # server's deployment.log (after a database rebuild, or while it runs), followed with -f.
    shown: Callable[[str], str] = str if args.raw else printable_lines
    if (copy := finished_copy(row, args.follow)) is not None:
        sys.stdout.write(shown(copy.read_text(errors="replace")))
        return 0
    import asyncio

    return asyncio.run(_stream_log(invocation.settings, row, args.follow, shown))


async def _stream_log(settings: Settings, row: DeploymentRow, follow: bool, shown: Callable[[str], str]) -> int:
    from reconciler.engine.converge import ssh_options
    from reconciler.engine.deploy_log import follow_log
    from reconciler.remote.transport.pool import TransportPool

    store = _reader(settings)
    pool = TransportPool(ssh_options(settings), allow_local=settings.allow_local)
    try:
        async for chunk in follow_log(store, pool, row, settings.command_timeout, follow=follow):
            sys.stdout.write(shown(chunk))  # escaping is per character: any chunk boundary will do
            sys.stdout.flush()
    finally:
        await pool.close()
        store.close()
    return 0


def cmd_prune(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    if args.keep is not None and args.keep < 1:
        print("reconciler: --keep must be at least 1", file=sys.stderr)
        return 2
    return asyncio.run(_prune(settings, args))


async def _prune(settings: Settings, args: argparse.Namespace) -> int:
    from reconciler.core.text import printable
    from reconciler.engine.converge import Reconciler

    reconciler = Reconciler(settings, _store(settings))
    try:
        results = await reconciler.prune(args.site, args.keep, args.dry_run)
    finally:
        await reconciler.close()
        reconciler.store.close()
    if args.site and not results:
        print(f"reconciler: {args.site}: no such site declared", file=sys.stderr)
        return 1
    for result in results:
        if result.message:
            print(f"{result.domain}: {printable(result.message)}")
            continue
        verb = "would prune" if args.dry_run else "pruning"
        where = f" on {result.server}" if result.server else ""
        print(f"{result.domain}: {verb}{where} {', '.join(result.releases) if result.releases else 'nothing'}")
    if reconciler.skipped and args.site is None:
        count = len(reconciler.skipped)
        print(f"shard {settings.shard}: {count} site{'s' if count != 1 else ''} of other shards skipped")
    return 0


def cmd_rollback(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from reconciler.engine import actions

    release, commit = asyncio.run(_with_reconciler(
        settings, lambda r: actions.rollback(r, args.domain, args.release, args.author)))
    print(f"{args.domain}: pinned to {release} (commit {commit[:12]})")
    return 0


def cmd_unpin(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from reconciler.engine import actions

    commit = asyncio.run(_with_reconciler(settings, lambda r: actions.unpin(r, args.domain, args.author)))
    print(f"{args.domain}: unpinned (commit {commit[:12]})")
    return 0


async def _with_reconciler(settings: Settings, work: Callable[[Reconciler], Awaitable[T]]) -> T:
    """Run one operator action with a Reconciler of its own, closing its connections and store."""
    from reconciler.engine.converge import Reconciler

    reconciler = Reconciler(settings, _store(settings))
    try:
        return await work(reconciler)
    finally:
        await reconciler.close()
        reconciler.store.close()


def cmd_accept(settings: Settings, args: argparse.Namespace) -> int:
    import getpass

    from reconciler.engine.converge import Reconciler

    by = getpass.getuser()
    reconciler = Reconciler(settings, _store(settings))
    try:
        commit, previous = reconciler.accept(args.commit, by)
    finally:
        reconciler.store.close()
    print(f"accepted {commit[:12]} as the verified declarations commit (was {(previous or 'none')[:12]}); "
          f"recorded as an override by {by}")
    return 0


def cmd_unlock(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    return asyncio.run(_unlock(settings, args.domain))


async def _unlock(settings: Settings, domain: str) -> int:
    from reconciler.core.layout import SitePaths
    from reconciler.engine.converge import Reconciler
    from reconciler.remote import lock

    reconciler = Reconciler(settings, _store(settings))
    try:
        site = reconciler.load().sites.get(domain)
        if site is None:
            print(f"reconciler: {domain}: no such valid site declared", file=sys.stderr)
            return 1
        owner = await lock.unlock(reconciler.pool.get(site.server), SitePaths(site.base_path, domain),
                                  settings.command_timeout)
        print(f"{domain}: lock removed (was held by {owner})" if owner else f"{domain}: was not locked")
        return 0
    finally:
        await reconciler.close()
        reconciler.store.close()


def cmd_validate(settings: Settings, args: argparse.Namespace) -> int:
    from reconciler.core import declarations
    from reconciler.engine import source

    path = Path(args.path) if args.path else settings.local_repo
    # A work tree is checked as files on disk (a pre-commit check); a bare repository at its tip.
    if (path / declarations.SITES_DIR).is_dir() or path.name == declarations.SITES_DIR:
        decls = source.load_directory(path)
    else:
        decls = source.load(path, settings.branch)
    # As the reconciler with these settings would apply them: local sites need allow_local.
    decls = declarations.refuse_local(decls, settings.allow_local)
    for line in decls.errors:
        print(line)
    print(f"{len(decls.sites)} valid, {len(decls.invalid)} invalid")
    return 1 if decls.invalid else 0


_COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "run": cmd_run, "reconcile": cmd_reconcile, "prune": cmd_prune, "rollback": cmd_rollback,
    "unpin": cmd_unpin, "validate": cmd_validate, "unlock": cmd_unlock, "diff": cmd_diff, "nginx": cmd_nginx,
    "completion": cmd_completion, "accept": cmd_accept, "retry": cmd_retry, "redeploy": cmd_redeploy,
}
# The look-only commands: they take the Invocation and validate settings only when they must.
_LOOKING: dict[str, Callable[[Invocation, argparse.Namespace], int]] = {
    "status": cmd_status, "history": cmd_history, "logs": cmd_logs,
}
_ALIASES = {"plan": "diff"}
