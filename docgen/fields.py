"""A pydantic model's fields as rows of a reference: TOML key, type, default, allowed values and
description, read from `model_fields` (the models carry `Field(description=...)`)."""

from __future__ import annotations

import enum
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Key:
    name: str
    type: str
    default: str
    choices: str
    description: str


def type_name(annotation: Any) -> str:
    """A TOML reader's name for a Python annotation."""
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(type_name(a) for a in args))
    if origin is typing.Literal:
        return "string"
    if origin is list:
        inner = args[0]
        if hasattr(inner, "model_fields"):
            return "array of tables"
        return f"array of {type_name(inner)}s"
    if hasattr(annotation, "model_fields"):
        return "table"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "string"
    names = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def choices(annotation: Any) -> str:
    """The allowed values of a Literal or an enum (inside lists and optionals too), else ""."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return ", ".join(json.dumps(v) for v in typing.get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return ", ".join(json.dumps(m.value) for m in annotation)
    for arg in typing.get_args(annotation):
        if found := choices(arg):
            return found
    return ""


def toml_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return json.dumps(value.value)
    if isinstance(value, Path):
        return json.dumps(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def keys(model: Any) -> list[Key]:
    """Every field of `model`, in its declaration order."""
    rows = []
    for name, info in model.model_fields.items():
        default = "required" if info.is_required() else toml_value(info.get_default(call_default_factory=True))
        rows.append(Key(name, type_name(info.annotation), default, choices(info.annotation),
                        info.description or ""))
    return rows
