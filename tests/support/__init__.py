"""Test support: one place for what many test modules need.

    repos    real git repositories (app, declarations), `write_site`, TOML values
    config   `write_config` (reconciler.toml) and one in-process pass (`reconcile`)
    disk     the "server" as tests see it (`SiteOnDisk`, `tolerant` where a test plants junk), layout
             names imported from the product
    process  `python -m reconciler` as a real process: one environment scrub, the daemon launcher,
             and which checkout's code a child runs (`source`, RECONCILER_UNDER_TEST)
    wait     `wait_until`, the one bounded poll
    world    `World`: one test's repos, base path, state, config, CLI and daemons
    spec     the `status --json` / `history --json` keys SPEC §5 fixes
    net      `free_port`

Import from here (`from tests.support import World, wait_until`) or from the module.
"""

from tests.support.config import reconcile, settings_for, write_config
from tests.support.disk import LOCK_NAME, MANIFEST_NAME, LinkSampler, SiteOnDisk, is_release, release_time
from tests.support.net import free_port
from tests.support.process import (
    ROOT,
    DaemonProcess,
    Daemons,
    Launcher,
    clean_env,
    reconciler_process,
    run_reconciler,
)
from tests.support.repos import (
    app_commit,
    git,
    make_app_repo,
    make_decl_repo,
    remove_site,
    site_declaration,
    site_file,
    toml_value,
    write_site,
)
from tests.support.spec import HISTORY_KEYS, STATUS_KEYS
from tests.support.wait import wait_until
from tests.support.world import DOMAIN, CliRun, World, cli_in_process, neutral_world

__all__ = [
    "DOMAIN",
    "HISTORY_KEYS",
    "LOCK_NAME",
    "MANIFEST_NAME",
    "ROOT",
    "STATUS_KEYS",
    "CliRun",
    "DaemonProcess",
    "Daemons",
    "Launcher",
    "LinkSampler",
    "SiteOnDisk",
    "World",
    "app_commit",
    "clean_env",
    "cli_in_process",
    "free_port",
    "git",
    "is_release",
    "make_app_repo",
    "make_decl_repo",
    "neutral_world",
    "reconcile",
    "reconciler_process",
    "release_time",
    "remove_site",
    "run_reconciler",
    "settings_for",
    "site_declaration",
    "site_file",
    "toml_value",
    "wait_until",
    "write_config",
    "write_site",
]
