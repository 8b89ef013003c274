"""The reference as man pages (man/): reconciler(1), reconciler.toml(5), reconciler-site(5)."""

from __future__ import annotations

from typing import Any

from docgen import sources
from docgen.fields import keys

DATE = "reconciler"  # no date: a regenerated page must equal the committed one


def esc(text: str) -> str:
    """Text for roff: backslashes escaped, hyphens of options kept literal, no line read as a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n"))


def _head(name: str, section: int, what: str) -> list[str]:
    return ['.\\" Written by python -m docgen from the code: edit the code, then run it again.',
            f'.TH {name.upper()} {section} "" "{DATE}" "reconciler manual"', ".SH NAME", f"{esc(name)} \\- {esc(what)}"]


def _model(sections: list[tuple[str, Any]]) -> list[str]:
    lines = []
    for heading, model in sections:
        lines.append(f".SH {esc(heading.upper())}")
        for key in keys(model):
            facts = [key.type, "required" if key.default == "required" else f"default {key.default}"]
            if key.choices:
                facts.append(f"one of {key.choices}")
            lines += [".TP", f"\\fB{esc(key.name)}\\fR ({esc(', '.join(facts))})", esc(key.description)]
    return lines


def site_page() -> str:
    lines = _head("reconciler-site", 5, "a site declaration, sites.d/<domain>.toml")
    lines += [".SH DESCRIPTION", esc("One TOML file per site in the declarations repository. _defaults.toml and "
                                     "templates/<name>.toml give the same keys. An unknown key is an error.")]
    lines += _model(sources.SITE_SECTIONS)
    lines += [".SH SEE ALSO", "\\fBreconciler\\fR(1), \\fBreconciler.toml\\fR(5)"]
    return "\n".join(lines) + "\n"


def settings_page() -> str:
    lines = _head("reconciler.toml", 5, "settings of the reconciler")
    lines += [".SH DESCRIPTION", esc("Read from --config, else $RECONCILER_CONFIG, else ./reconciler.toml; flags "
                                     "override it. An unknown key is an error.")]
    lines += _model(sources.SETTINGS_SECTIONS)
    lines += [".SH SEE ALSO", "\\fBreconciler\\fR(1), \\fBreconciler-site\\fR(5)"]
    return "\n".join(lines) + "\n"


def command_page() -> str:
    lines = _head("reconciler", 1, "GitOps deployment reconciler for PHP sites over SSH")
    lines += [".SH SYNOPSIS", "\\fBreconciler\\fR [\\fIOPTIONS\\fR] \\fICOMMAND\\fR ...",
              ".SH DESCRIPTION", esc(sources.description()), ".SH OPTIONS"]
    for option in sources.global_options():
        lines += [".TP", f"\\fB{esc(option.usage)}\\fR", esc(option.help)]
    lines.append(".SH COMMANDS")
    for command in sources.commands():
        lines += [".SS " + esc(command.name), f"\\fB{esc(command.synopsis)}\\fR", ".PP", esc(command.help)]
        if command.aliases:
            lines += [".PP", esc("Also called: " + ", ".join(command.aliases) + ".")]
        for option in command.options:
            lines += [".TP", f"\\fB{esc(option.usage)}\\fR", esc(option.help or "")]
        lines += [".PP", "Exit status:"]
        for code, why in command.exits:
            lines += [".TP", f"\\fB{code}\\fR", esc(why)]
        lines += [".PP", "Example:", ".nf", ".RS", esc(command.example), ".RE", ".fi"]
    code, why = sources.BAD_CONFIG
    lines += [".SH EXIT STATUS", f"\\fB{code}\\fR: {esc(why)}; the others are listed with each command.",
              ".SH SEE ALSO", "\\fBreconciler.toml\\fR(5), \\fBreconciler-site\\fR(5)"]
    return "\n".join(lines) + "\n"


PAGES = {"reconciler.1": command_page, "reconciler.toml.5": settings_page, "reconciler-site.5": site_page}
