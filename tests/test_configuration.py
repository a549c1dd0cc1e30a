"""Tests of the dataclass <-> CLI/config-file machinery."""

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from softlabels.configuration import add_config_arguments, build_config, load_config_file


@dataclass(frozen=True)
class Example:
    name: str = field(default="a", metadata={"help": "a name"})
    size: int = 3
    rate: float | None = None
    flag: bool = False
    items: tuple[str, ...] = ("x",)
    mode: str = field(default="p", metadata={"choices": ("p", "q")})


def parse(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Example)
    return vars(parser.parse_args(argv))


def test_only_given_flags_are_returned() -> None:
    assert parse([]) == {}
    assert parse(["--size", "5", "--rate", "0.5", "--flag", "--items", "a", "b"]) == {
        "size": 5, "rate": 0.5, "flag": True, "items": ["a", "b"]}
    assert parse(["--no-flag"]) == {"flag": False}


def test_choices_are_enforced() -> None:
    with pytest.raises(SystemExit):
        parse(["--mode", "z"])


def test_precedence_defaults_quick_file_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("size: 7\nname: from-file\nitems: [u, v]\n")
    config = build_config(Example, {"size": 4, "rate": 0.1}, load_config_file(path),
                          {"name": "from-flag"})
    assert config == Example(name="from-flag", size=7, rate=0.1, items=("u", "v"))


def test_json_config_and_dash_keys(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"size": 9, "rate": 2.0}))
    assert load_config_file(path) == {"size": 9, "rate": 2.0}
    path2 = tmp_path / "d.yaml"
    path2.write_text("size: 1\n")
    assert build_config(Example, load_config_file(path2)).size == 1


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config_file(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("size: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML/JSON"):
        load_config_file(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_config_file(listy)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00s")
    with pytest.raises(ValueError, match=r"config file '.*binary\.yaml' is not UTF-8 text"):
        load_config_file(binary)
    with pytest.raises(ValueError, match=r"unknown config field\(s\) \['sise'\]; valid fields"):
        build_config(Example, {"sise": 3})


def test_values_are_coerced_to_field_types(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("rate: 1e-3\nsize: '4'\nitems: single\n")  # YAML 1.1 reads 1e-3 as text
    config = build_config(Example, load_config_file(path))
    assert config.rate == 0.001
    assert config.size == 4
    assert config.items == ("single",)
    with pytest.raises(ValueError, match="'size' must be of type int, got 'many'"):
        build_config(Example, {"size": "many"})
    with pytest.raises(ValueError, match=r"'size' must be of type int, got 2\.5"):
        build_config(Example, {"size": 2.5})
