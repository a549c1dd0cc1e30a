"""Study configs as dataclasses: one field = one CLI flag, set from a file or the command line.

Precedence, lowest first: the dataclass defaults, the ``--quick`` overrides, the ``--config``
file (YAML or JSON), then the flags given on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = ["add_config_arguments", "build_config", "field_help", "load_config_file"]


def field_help(text: str, **extra: Any) -> dict[str, Any]:
    """Metadata of a config dataclass field: its CLI ``help`` (and e.g. ``choices``)."""
    return {"help": text, **extra}

C = TypeVar("C")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one ``--field-name`` flag per dataclass field, with the field's ``help`` metadata.

    Flags default to ``argparse.SUPPRESS`` so that only the flags a user typed override the
    config file.
    """
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        flag = "--" + item.name.replace("_", "-")
        kind, is_list = _base_type(hints[item.name])
        help_text = item.metadata.get("help", "")
        default = _default(item)
        if default is not None and default != ():
            help_text += f" (default: {default})"
        kwargs: dict[str, Any] = {"dest": item.name, "default": argparse.SUPPRESS,
                                  "help": help_text}
        if "choices" in item.metadata:
            kwargs["choices"] = item.metadata["choices"]
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            if is_list:
                kwargs["nargs"] = "+"
        parser.add_argument(flag, **kwargs)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON mapping of config fields."""
    target = Path(path)
    if not target.is_file():
        raise FileNotFoundError(f"config file {str(target)!r} does not exist")
    text = target.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if target.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"config file {str(target)!r} is not valid YAML/JSON: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(target)!r} must hold a mapping of field: value, "
                         f"got {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def build_config(cls: type[C], *layers: dict[str, Any]) -> C:
    """Instantiate ``cls`` from its defaults overridden by each mapping in ``layers`` in turn.

    Unknown keys are an error that lists the valid ones; list values become tuples for tuple
    fields.
    """
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    merged: dict[str, Any] = {}
    for layer in layers:
        unknown = sorted(set(layer) - names)
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown}; valid fields: {sorted(names)}")
        merged.update(layer)
    return cls(**{name: _coerce(name, value, hints[name]) for name, value in merged.items()})


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Convert a file or flag value to the field's type; YAML reads ``1e-3`` as a string."""
    kind, is_sequence = _base_type(hint)
    if value is None:
        return None
    if is_sequence:
        items = value if isinstance(value, list | tuple) else [value]
        return tuple(_coerce(name, item, kind) for item in items)
    if kind in (int, float) and not isinstance(value, bool):
        try:
            converted = kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"config field {name!r} must be of type {kind.__name__}, got "
                             f"{value!r}") from None
        if kind is int and isinstance(value, float) and converted != value:
            raise ValueError(f"config field {name!r} must be of type int, got {value!r}")
        return converted
    return value


def _default(item: dataclasses.Field[Any]) -> Any:
    if item.default is not dataclasses.MISSING:
        return item.default
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return None


def _base_type(hint: Any) -> tuple[type, bool]:
    """(element type, is_sequence) of a field annotation such as ``int | None``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _base_type(args[0])
    if origin in (tuple, list):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return (args[0] if args else str), True
    return hint, False
