import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from kp3d.config import (
    add_config_arguments,
    config_from_dict,
    config_to_dict,
    field_docs,
    load_config_file,
    merge_values,
    values_from_args,
)
from kp3d.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    """Nested settings."""

    weight: float = 1.0
    """Weight of the inner term."""


@dataclass(frozen=True)
class Example:
    """A config with every supported field type."""

    k: int = 16
    """Number of keypoints."""
    lr: float = 1e-3
    """Learning rate (100% of it)."""
    flag: bool = True
    """A switch."""
    name: str = "x"
    mode: Literal["fast", "exact"] = "fast"
    """How to compute."""
    path: Path | None = None
    """An optional file."""
    sizes: tuple[int, ...] = (1, 2)
    """Several sizes."""
    pair: tuple[float, float] = (0.5, 0.25)
    """Two numbers."""
    limit: int | None = 5
    """A limit; none = unlimited."""
    inner: Inner = field(default_factory=Inner)
    """Nested."""

    def __post_init__(self) -> None:
        if self.k < 2:
            raise ConfigError(f"k must be >= 2, got {self.k}")


def test_field_docs_reads_the_string_under_each_field() -> None:
    docs = field_docs(Example)
    assert docs["k"] == "Number of keypoints."
    assert docs["mode"] == "How to compute."
    assert docs["name"] == ""  # no docstring under it
    assert set(docs) == {
        "k",
        "lr",
        "flag",
        "name",
        "mode",
        "path",
        "sizes",
        "pair",
        "limit",
        "inner",
    }


def test_round_trip_through_json() -> None:
    cfg = Example(k=4, path=Path("/a/b"), sizes=(3,), limit=None, inner=Inner(2.0))
    d = json.loads(json.dumps(config_to_dict(cfg)))
    assert d["path"] == "/a/b" and d["sizes"] == [3] and d["inner"] == {"weight": 2.0}
    assert config_from_dict(Example, d, source="f.json") == cfg


def test_missing_keys_take_defaults_and_dashes_are_accepted() -> None:
    cfg = config_from_dict(Example, {"k": 3, "inner": {"weight": 4}}, source="s")
    assert cfg == Example(k=3, inner=Inner(4.0))
    assert isinstance(cfg.inner.weight, float)
    assert config_from_dict(Inner, {"weight": 2}, source="s").weight == 2.0


def test_unknown_key_lists_valid_keys_with_a_suggestion() -> None:
    with pytest.raises(
        ConfigError, match=r"cfg\.toml: unknown key kk .*did you mean 'k'.*valid keys: k, lr"
    ):
        config_from_dict(Example, {"kk": 3}, source="cfg.toml")
    with pytest.raises(ConfigError, match=r"unknown key inner\.wieght .*did you mean 'weight'"):
        config_from_dict(Example, {"inner": {"wieght": 3}}, source="cfg.toml")


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("k", "16", "int"),
        ("k", 2.5, "int"),
        ("k", True, "int"),  # a bool is not a number
        ("lr", "0.1", "float"),
        ("flag", 1, "bool"),
        ("name", 3, "str"),
        ("path", 3, "path or None"),
        ("sizes", 3, "list of int"),
        ("sizes", [1, "a"], "list of int"),
        ("pair", [1.0], r"list of 2 \(float, float\)"),
        ("limit", "none", "int or None"),
        ("inner", 3, "table of Inner settings"),
    ],
)
def test_wrong_types_name_key_and_expected_type(key: str, value: object, expected: str) -> None:
    with pytest.raises(ConfigError, match=rf"src: {key}(\[\d\])?: expected {expected}, got"):
        config_from_dict(Example, {key: value}, source="src")


def test_literal_lists_choices_and_suggests() -> None:
    with pytest.raises(
        ConfigError,
        match=r"mode: 'exakt' is not valid; choose one of 'fast', 'exact' "
        r"\(did you mean 'exact'\?\)",
    ):
        config_from_dict(Example, {"mode": "exakt"}, source="src")


def test_post_init_errors_are_prefixed_with_the_source() -> None:
    with pytest.raises(ConfigError, match=r"^run/config.json: k must be >= 2, got 1$"):
        config_from_dict(Example, {"k": 1}, source="run/config.json")


def test_missing_required_field_is_an_error() -> None:
    @dataclass(frozen=True)
    class Required:
        a: int

    with pytest.raises(ConfigError, match="missing key"):
        config_from_dict(Required, {}, source="s")


def test_load_config_file_json_and_toml(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('{"k": 3, "model": {"x": 1}}')
    (tmp_path / "a.toml").write_text("k = 3\n[model]\nx = 1\n")
    assert (
        load_config_file(tmp_path / "a.json")
        == load_config_file(tmp_path / "a.toml")
        == {"k": 3, "model": {"x": 1}}
    )


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("a.yaml", "k: 1", "must be .json or .toml"),
        ("a.json", '{"k": 1,', "invalid JSON at line 1"),
        ("a.toml", "k = = 1", "invalid TOML"),
        ("a.json", "[1, 2]", "expected a table"),
    ],
)
def test_bad_config_files(tmp_path: Path, name: str, text: str, message: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=message) as e:
        load_config_file(tmp_path / name)
    assert name in str(e.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config_file(tmp_path / "none.toml")


def _parser(**kwargs: object) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="t")
    add_config_arguments(p, Example, **kwargs)  # type: ignore[arg-type]
    return p


def test_flags_parse_every_type_and_report_only_given_values() -> None:
    p = _parser()
    args = p.parse_args(
        [
            "--k",
            "4",
            "--no-flag",
            "--mode",
            "exact",
            "--path",
            "a/b",
            "--sizes",
            "3",
            "4",
            "--pair",
            "1",
            "2",
            "--limit",
            "none",
            "--inner.weight",
            "0.5",
        ]
    )
    values = values_from_args(args, Example)
    assert values == {
        "k": 4,
        "flag": False,
        "mode": "exact",
        "path": Path("a/b"),
        "sizes": [3, 4],
        "pair": [1.0, 2.0],
        "limit": None,
        "inner": {"weight": 0.5},
    }
    cfg = config_from_dict(Example, values, source="command line")
    assert cfg.sizes == (3, 4) and cfg.inner == Inner(0.5)
    assert values_from_args(p.parse_args([]), Example) == {}


def test_flag_help_has_docstring_and_shown_default() -> None:
    text = _parser(defaults={"k": 8}).format_help()
    assert "--k INT" in text and "Number of keypoints. (default: 8)" in text
    assert "(100% of it)" in text  # '%' survives argparse's formatting
    assert "--flag, --no-flag" in text and "(default: on)" in text
    assert "{fast,exact}" in text


def test_bad_literal_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        _parser().parse_args(["--mode", "exakt"])
    assert e.value.code == 2
    assert "did you mean 'exact'" in capsys.readouterr().err


def test_prefix_skip_and_dest_prefix() -> None:
    p = argparse.ArgumentParser()
    add_config_arguments(p, Example, prefix="model.", dest_prefix="m:", skip={"k"})
    args = p.parse_args(["--model.lr", "0.5"])
    assert values_from_args(args, Example, prefix="model.", dest_prefix="m:") == {"lr": 0.5}
    with pytest.raises(SystemExit):
        p.parse_args(["--model.k", "3"])


def test_merge_values_is_nested_and_later_wins() -> None:
    assert merge_values({"a": 1, "b": {"c": 1, "d": 2}}, {"b": {"c": 3}, "e-f": 4}) == {
        "a": 1,
        "b": {"c": 3, "d": 2},
        "e_f": 4,
    }
