"""What the reference says, gathered from the code: the models' sections, the command line (the
argparse parser and the commands' exit table), the HTTP routes (the app's route table), the
metrics (the collector's families) and the notification events and fields."""

from __future__ import annotations

import argparse
import inspect
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from reconciler.cli.commands import COMMANDS, EXITS
from reconciler.cli.main import _parser
from reconciler.config import ApiToken, NotifyEvent, NotifyTarget, Settings
from reconciler.core.declarations import SiteDeclaration
from reconciler.core.health import HealthCheck
from reconciler.window_settings import Window

SITE_SECTIONS: list[tuple[str, Any]] = [("Keys of a site", SiteDeclaration),
                                        ("[health]", HealthCheck)]
SETTINGS_SECTIONS: list[tuple[str, Any]] = [("Keys of reconciler.toml", Settings), ("[[notify]]", NotifyTarget),
                                            ("[[api_token]]", ApiToken), ("[[window]]", Window)]
BAD_CONFIG = (2, "a bad configuration (every command)")


@dataclass(frozen=True)
class Option:
    usage: str  # "--site D", "domain", "-f, --follow"
    help: str


@dataclass(frozen=True)
class Cli:
    name: str
    synopsis: str
    help: str
    aliases: tuple[str, ...]
    example: str
    options: tuple[Option, ...]
    exits: tuple[tuple[int, str], ...]


def _word(action: argparse.Action) -> str:
    if action.choices:
        return "{" + ",".join(str(c) for c in action.choices) + "}"
    metavar = action.metavar if isinstance(action.metavar, str) else None
    return metavar or action.dest.upper()


def _usage(action: argparse.Action) -> tuple[str, str]:
    """(how it is written in a synopsis, how it is listed)."""
    word = _word(action)
    if not action.option_strings:
        plain = word if action.choices or action.metavar else action.dest
        listed = {"?": f"[{plain}]", "*": f"[{plain} ...]", "+": f"{plain} [{plain} ...]"}.get(str(action.nargs),
                                                                                            plain)
        return listed, plain
    flags = ", ".join(action.option_strings)
    takes = action.nargs != 0
    first = action.option_strings[-1]
    return (f"[{first} {word}]" if takes else f"[{first}]"), (f"{flags} {word}" if takes else flags)


def _options(parser: argparse.ArgumentParser) -> list[tuple[str, Option]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        synopsis, listed = _usage(action)
        found.append((synopsis, Option(listed, action.help or "")))
    return found


def global_options() -> list[Option]:
    return [option for _, option in _options(_parser())]


def description() -> str:
    return _parser().description or ""


def commands() -> list[Cli]:
    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    result = []
    for name, command in COMMANDS.items():
        options = _options(sub.choices[name])
        synopsis = " ".join(["reconciler", name, *(s for s, _ in options)])
        result.append(Cli(name, synopsis, command.help, command.aliases, command.example,
                          tuple(o for _, o in options), EXITS[name]))
    return result


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    does: str


def _doc(function: Any) -> str:
    text = inspect.getdoc(function) or ""
    first, _, rest = text.partition(": ")
    # Handlers' docstrings start with their route ("GET /: ..."): the table has it already.
    return " ".join((rest if first.split(" ")[0] in ("GET", "POST", "DELETE") else text).split())


def routes() -> list[Route]:
    """The route table of a real app, built on a context that is never asked anything else."""
    from reconciler.service.http.actions import ACTIONS
    from reconciler.service.http.app import build_app
    from reconciler.service.metrics import PassStats

    settings = Settings(listen="127.0.0.1:9180")
    ctx = SimpleNamespace(settings=lambda: settings, store=None, stats=PassStats(), declarations=lambda: None)
    found = []
    for route in build_app(ctx).router.routes():  # type: ignore[arg-type]
        if route.method == "HEAD":  # aiohttp adds one to every GET
            continue
        path = route.resource.canonical if route.resource is not None else ""
        action = path.rpartition("/")[2]
        handler = ACTIONS[action].perform if action in ACTIONS and path.startswith("/api/sites/") else route.handler
        does = _doc(handler)
        found.append(Route(route.method, path, does[:1].upper() + does[1:]))
    return found


@dataclass(frozen=True)
class Metric:
    name: str
    type: str
    labels: tuple[str, ...]
    samples: tuple[str, ...]
    help: str


def metrics() -> list[Metric]:
    """The families the collector yields, for one declared site on one server."""
    from reconciler.service.metrics import PassStats, ReconcilerCollector

    store = SimpleNamespace(db=SimpleNamespace(query=lambda *args: iter(())), sites=lambda: {},
                            site_servers=lambda domain: [])
    collector = ReconcilerCollector(store, PassStats(), lambda: {"shop.example.com": ("web-1",)})  # type: ignore[arg-type]
    found = []
    for family in collector.collect():
        # A family without samples here (no rows) still names its labels.
        named = getattr(family, "_labelnames", ())
        labels = dict.fromkeys([*named, *(k for s in family.samples for k in s.labels if k != "le")])
        samples = dict.fromkeys(s.name for s in family.samples)
        if family.type == "counter":
            samples = {f"{family.name}_total": None}
        found.append(Metric(family.name, family.type, tuple(labels), tuple(samples), family.documentation))
    return found


def events() -> list[tuple[str, str]]:
    """(event, apprise message type) of every notification event."""
    from reconciler.service.webhooks import NOTIFY_TYPES

    return [(event.value, NOTIFY_TYPES[event]) for event in NotifyEvent]


def payload() -> tuple[tuple[str, ...], str]:
    """The payload's keys in order, and the webhooks module's description of them."""
    from reconciler.service import announce, webhooks

    doc = webhooks.__doc__ or ""
    start = doc.index("The event object")
    end = doc.index("Delivery runs in background")
    return announce.FIELDS, doc[start:end].strip()
