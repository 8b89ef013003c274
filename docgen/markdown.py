"""The reference as Markdown pages (docs/reference/)."""

from __future__ import annotations

from typing import Any

from docgen import sources
from docgen.fields import keys

HEADER = "<!-- Written by `python -m docgen` from the code: edit the code, then run it again. -->\n\n"


def cell(text: str) -> str:
    """A table cell; outside code, < and > are text, never HTML."""
    text = text.replace("|", "\\|").replace("\n", " ")
    if text.startswith("`") and text.endswith("`"):
        return text
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def _models(title: str, intro: str, sections: list[tuple[str, Any]]) -> str:
    lines = [f"# {title}", "", intro, ""]
    for heading, model in sections:
        lines += [f"## `{heading}`" if heading.startswith("[") else f"## {cell(heading)}", ""]
        rows = [[f"`{k.name}`", k.type, f"`{k.default}`" if k.default not in ("required", "none") else k.default,
                 k.choices, k.description] for k in keys(model)]
        lines += [*_table(["key", "type", "default", "allowed values", "description"], rows), ""]
    return HEADER + "\n".join(lines)


def site_keys() -> str:
    return _models("Site keys", "Every key of a declaration, `sites.d/<domain>.toml` (and of `_defaults.toml` and "
                   "`templates/<name>.toml`, which give the same keys). An unknown key is an error.",
                   sources.SITE_SECTIONS)


def settings() -> str:
    return _models("reconciler.toml", "Every key of the settings file: `--config`, else `$RECONCILER_CONFIG`, else "
                   "`./reconciler.toml`. Flags (`--repo`, `--state-dir`, `--shard`) override it. An unknown key "
                   "is an error.", sources.SETTINGS_SECTIONS)


def cli() -> str:
    lines = ["# Command line", "", "`reconciler [OPTIONS] COMMAND ...`: " + sources.description(), "",
             "## Options", ""]
    lines += _table(["option", "meaning"], [[f"`{o.usage}`", o.help] for o in sources.global_options()])
    lines += ["", "Every command exits 2 on a bad configuration.", ""]
    for command in sources.commands():
        lines += [f"## {command.name}", "", f"`{command.synopsis}`", "", command.help[:1].upper() + command.help[1:]
                  + ".", ""]
        if command.aliases:
            lines += ["Also called: " + ", ".join(f"`{a}`" for a in command.aliases) + ".", ""]
        if command.options:
            lines += [*_table(["argument", "meaning"], [[f"`{o.usage}`", o.help] for o in command.options]), ""]
        lines += [*_table(["exit", "when"], [[str(code), why] for code, why in command.exits]), ""]
        lines += ["Example:", "", "```sh", command.example, "```", ""]
    return HEADER + "\n".join(lines)


def http() -> str:
    lines = ["# HTTP API", "", "Served by `reconciler run` when `listen` is set. Every route but `/`, "
             "`POST /api/session` and `/hooks/git` needs the API token (bearer) or a dashboard session.", ""]
    lines += _table(["method", "path", "does"], [[r.method, f"`{r.path}`", r.does] for r in sources.routes()])
    return HEADER + "\n".join(lines) + "\n"


def metrics() -> str:
    lines = ["# Metrics", "", "`GET /metrics`, in the Prometheus text format.", ""]
    rows = [[f"`{m.name}`", m.type, ", ".join(f"`{label}`" for label in m.labels),
             ", ".join(f"`{s}`" for s in m.samples), m.help] for m in sources.metrics()]
    lines += _table(["family", "type", "labels", "series", "help"], rows)
    return HEADER + "\n".join(lines) + "\n"


def notifications() -> str:
    fields, described = sources.payload()
    lines = ["# Notifications", "", "What `[[notify]]` targets receive: an http(s):// URL a JSON object with every "
             "field below (null where it does not apply); an apprise URL the one-line `text`.", "", "## Events", ""]
    lines += _table(["event", "apprise type"], [[f"`{e}`", kind] for e, kind in sources.events()])
    lines += ["", "## Payload fields", "", "In this order: " + ", ".join(f"`{f}`" for f in fields) + ".", "",
              "```text", described, "```", ""]
    return HEADER + "\n".join(lines)


_TITLES = {"site-keys.md": "Site keys (`sites.d/<domain>.toml`, `[health]`)",
           "settings.md": "Settings (`reconciler.toml`, `[[notify]]`, `[[api_token]]`, `[[window]]`)",
           "cli.md": "Commands, flags and exit statuses", "http.md": "HTTP routes",
           "metrics.md": "Metrics (`/metrics`)", "notifications.md": "Notifications: events and payload"}


def index() -> str:
    """The reference's front page: what is here, and that it is generated."""
    lines = ["# Reference", "",
             "Generated from the code by `python -m docgen`, never written by hand; a test fails when",
             "these pages differ from what the code says today. The same source writes the man pages",
             "`reconciler(1)`, `reconciler.toml(5)` and `reconciler-site(5)` in `man/`.", ""]
    lines += [f"- [{title}]({name})" for name, title in _TITLES.items()]
    return "\n".join(lines) + "\n"


PAGES = {"index.md": index, "site-keys.md": site_keys, "settings.md": settings, "cli.md": cli, "http.md": http,
         "metrics.md": metrics, "notifications.md": notifications}
