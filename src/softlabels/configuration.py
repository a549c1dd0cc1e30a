"""Study configs as dataclasses: one field = one CLI flag, set from a file or the command line.

Precedence, lowest first: the dataclass defaults, the ``--quick`` overrides, the ``--config``
file (YAML or JSON), then the flags given on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import types
import typing
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = ["add_config_arguments", "build_config", "check_fields", "field_help",
           "load_config_file", "parse_float", "renamed_value", "upgrade_fields"]


def field_help(text: str, *, choices: Sequence[Any] | None = None, low: float | None = None,
               high: float | None = None, low_open: bool = False, high_open: bool = False,
               nonempty: bool = False, unique: bool = False) -> dict[str, Any]:
    """Metadata of a config dataclass field: its CLI ``help`` and the constraints on its value.

    Args:
        text: the ``--help`` text.
        choices: allowed values (of each element, for a tuple field); listed in ``--help``.
        low, high: bounds of a number (of each element, for a tuple field); inclusive unless
            ``low_open`` / ``high_open``. NaN and infinities are never inside a bound.
        nonempty: a tuple field must hold at least one value.
        unique: a tuple field must not repeat a value.

    :func:`check_fields` enforces all of them in one place, so a study config only checks
    what involves several fields.
    """
    meta: dict[str, Any] = {"help": text}
    for key, value in (("choices", choices), ("low", low), ("high", high)):
        if value is not None:
            meta[key] = tuple(value) if key == "choices" else value
    for key, flag in (("low_open", low_open), ("high_open", high_open),
                      ("nonempty", nonempty), ("unique", unique)):
        if flag:
            meta[key] = True
    return meta


def check_fields(config: Any) -> None:
    """Check every field of the dataclass instance ``config`` against its metadata.

    Raises:
        ValueError: a value breaks its field's constraint; the message names the field, the
            rule and the value.
    """
    for item in dataclasses.fields(config):
        meta, value = item.metadata, getattr(config, item.name)
        if value is None:
            continue
        if isinstance(value, tuple):
            if meta.get("nonempty") and not value:
                hint = f" of {list(meta['choices'])}" if "choices" in meta else ""
                raise ValueError(f"{item.name} must name at least one value{hint}, got none")
            if meta.get("unique") and len(set(value)) != len(value):
                raise ValueError(f"{item.name} must not repeat a value, got {list(value)}")
            for element in value:
                _check_value(item.name, element, meta)
        else:
            _check_value(item.name, value, meta)


def _check_value(name: str, value: Any, meta: Any) -> None:
    if "choices" in meta and value not in meta["choices"]:
        raise ValueError(f"{name} must be one of {list(meta['choices'])}, got {value!r}")
    low, high = meta.get("low"), meta.get("high")
    if low is None and high is None:
        return
    below = low is not None and not (value > low if meta.get("low_open") else value >= low)
    above = high is not None and not (value < high if meta.get("high_open") else value <= high)
    # NaN is outside every bound, and so is an infinity: no bounded setting means "unbounded"
    # (an infinite temperature or step size would fail, or be NaN, inside the first cell).
    infinite = isinstance(value, float) and math.isinf(value)
    if below or above or infinite or value != value:
        rule = " and ".join(
            part for part in (
                None if low is None else f"{'>' if meta.get('low_open') else '>='} {low}",
                None if high is None else f"{'<' if meta.get('high_open') else '<='} {high}")
            if part)
        finite = "a finite number " if infinite else ""
        raise ValueError(f"{name} must be {finite}{rule}, got {value!r}")

C = TypeVar("C")


def parse_float(value: Any) -> float:
    """A float from a number or text such as ``"0.1"``, ``"1e-3"`` or a fraction ``"8/255"``.

    Fractions are read as two numbers and divided (no expression is evaluated), so an
    attack radius can be given as it is written in papers.

    Raises:
        ValueError: the text is neither a number nor ``a/b`` with ``b != 0``.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    numerator, slash, denominator = text.partition("/")
    try:
        top, bottom = float(numerator), float(denominator)
    except ValueError:
        top = bottom = None  # type: ignore[assignment]
    if not slash or top is None or bottom == 0.0:
        raise ValueError(f"expected a number or a fraction such as 8/255, got {value!r}")
    return top / bottom


# argparse names the type in its error ("invalid float value: 'x'").
parse_float.__name__ = "float"


class _Choices(tuple):
    """The current choices of a flag (what ``--help`` lists), which also accepts the
    deprecated spellings so that argparse lets them through to :func:`build_config`."""

    old: frozenset[str]

    def __new__(cls, current: Sequence[Any], old: Sequence[str]) -> _Choices:
        made = super().__new__(cls, current)
        made.old = frozenset(old)
        return made

    def __contains__(self, value: object) -> bool:
        return tuple.__contains__(self, value) or value in self.old


def renamed_value(name: str, table: dict[str, str], value: Any, *, warn: bool = True,
                  stacklevel: int = 3) -> Any:
    """``value`` of field ``name`` (a string, or a tuple/list of them) with the old spellings
    of ``table`` (old -> new) replaced, warning (``FutureWarning``) about each one met."""
    if isinstance(value, list | tuple):
        met = [v for v in value if isinstance(v, str) and v in table]
        value = type(value)(table.get(v, v) if isinstance(v, str) else v for v in value)
    elif isinstance(value, str) and value in table:
        met, value = [value], table[value]
    else:
        return value
    if met and warn:
        olds = list(dict.fromkeys(met))
        warnings.warn(f"{name} {', '.join(map(repr, olds))} "
                      f"{'is' if len(olds) == 1 else 'are'} deprecated and will be removed in "
                      f"the next release; use {', '.join(repr(table[o]) for o in olds)}",
                      FutureWarning, stacklevel=stacklevel)
    return value


def upgrade_fields(cls: type, layer: dict[str, Any], *, warn: bool = True) -> dict[str, Any]:
    """``layer`` (field name -> value) with the deprecated field names of ``cls.RENAMED`` and
    the deprecated values of ``cls.RENAMED_VALUES`` replaced by their current spellings.

    A stored ``config.json`` of an older run is read with ``warn=False``: the user did not
    type those spellings, so there is nothing for them to change.
    """
    renamed: dict[str, str] = getattr(cls, "RENAMED", {})
    layer = dict(layer)
    for old, new in renamed.items():
        if old not in layer:
            continue
        if new in layer:
            raise ValueError(f"give {new!r} or its old name {old!r}, not both")
        if warn:
            warnings.warn(f"config field {old!r} is deprecated and will be removed in the next "
                          f"release; use {new!r} (--{new.replace('_', '-')})", FutureWarning,
                          stacklevel=3)
        layer[new] = layer.pop(old)
    for name, table in getattr(cls, "RENAMED_VALUES", {}).items():
        if name in layer:
            layer[name] = renamed_value(name, table, layer[name], warn=warn, stacklevel=4)
    return layer


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
            old = getattr(cls, "RENAMED_VALUES", {}).get(item.name, {})
            kwargs["choices"] = _Choices(item.metadata["choices"], tuple(old))
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = parse_float if kind is float else kind
            if is_list:
                kwargs["nargs"] = "+"
        parser.add_argument(flag, **kwargs)
    for old, new in getattr(cls, "RENAMED", {}).items():
        kind, _ = _base_type(hints[new])
        parser.add_argument("--" + old.replace("_", "-"), dest=old, default=argparse.SUPPRESS,
                            type=parse_float if kind is float else kind,
                            help=argparse.SUPPRESS)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON mapping of config fields."""
    target = Path(path)
    if not target.is_file():
        raise FileNotFoundError(f"config file {str(target)!r} does not exist")
    try:
        text = target.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"config file {str(target)!r} is not UTF-8 text ({err})") from None
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
        layer = upgrade_fields(cls, layer)
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
            converted = parse_float(value) if kind is float else kind(value)
        except (TypeError, ValueError):
            hint = " (a number, or a fraction such as 8/255)" if kind is float else ""
            raise ValueError(f"config field {name!r} must be of type {kind.__name__}{hint}, "
                             f"got {value!r}") from None
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
