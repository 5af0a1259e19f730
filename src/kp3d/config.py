"""Configuration: frozen dataclasses are the single source of every default and its help text.

A config class is a frozen dataclass whose fields all have defaults and a docstring string
literal directly under them (the nerfstudio convention)::

    @dataclass(frozen=True)
    class DetectorConfig:
        k: int = 16
        \"\"\"Number of keypoints.\"\"\"
        schedule: Literal["constant", "cosine"] = "cosine"
        \"\"\"Learning-rate schedule.\"\"\"

From such a class this module derives, with no second list of names anywhere:

* :func:`config_from_dict`: a checked instance from a mapping read from JSON/TOML or code.
  Unknown keys, wrong types and invalid ``Literal`` values are :class:`~kp3d.errors.ConfigError`
  naming the source, the key, what was expected and the valid choices (with a did-you-mean).
  Value checks beyond types belong in the class's ``__post_init__``, which should also raise
  ``ConfigError``; its message is prefixed with the source.
* :func:`config_to_dict`: the JSON-ready inverse.
* :func:`field_docs`: the docstring under each field, read from the source with :mod:`ast`.
* :func:`add_config_arguments` / :func:`values_from_args`: ``--field-name`` command-line flags
  with that docstring as help and the default shown, and the values the user actually gave.
* :func:`load_config_file`: a JSON or TOML file as a dict.

Supported field types: ``bool``, ``int``, ``float``, ``str``, ``pathlib.Path``, ``Literal[...]``,
``tuple[T, ...]`` / ``tuple[T1, T2]``, ``X | None``, and nested config dataclasses. Integers are
accepted where a float is expected, never the reverse, and ``bool`` is never taken for a number.

Plain :mod:`argparse` plus :mod:`ast` rather than ``tyro``: the CLI is an argparse tree whose
sub-commands import lazily (:mod:`kp3d.cli`), config values must also come from files and from
``config.json`` of earlier runs with the same checks, and it needs no dependency.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import functools
import inspect
import json
import textwrap
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from kp3d.errors import ConfigError

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# Introspection


def _check_config_class(cls: type) -> None:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"{cls!r} is not a dataclass type")


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _init_fields(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if f.init]


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of the dataclass ``cls`` ("" where there is none).

    Base classes are read too (a subclass's docstring wins). A field's ``metadata["help"]`` is
    used when its class's source is not available (e.g. a class made at run time).
    """
    _check_config_class(cls)
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        node = next(
            (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == klass.__name__),
            None,
        )
        if node is None:
            continue
        for stmt, nxt in zip(node.body, node.body[1:]):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[stmt.target.id] = inspect.cleandoc(nxt.value.value)
    return {
        f.name: docs.get(f.name) or str(f.metadata.get("help", "")) for f in dataclasses.fields(cls)
    }


def field_defaults(cls: type) -> dict[str, Any]:
    """Default value of every init field of ``cls`` (``MISSING`` fields are left out)."""
    out: dict[str, Any] = {}
    for f in _init_fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def _union_args(tp: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return None


def type_name(tp: Any) -> str:
    """How a field type reads in messages: ``int``, ``one of 'a', 'b'``, ``int or None``."""
    if tp is type(None):
        return "None"
    if (arms := _union_args(tp)) is not None:
        return " or ".join(type_name(a) for a in arms)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {type_name(args[0])}"
        return f"list of {len(args)} ({', '.join(type_name(a) for a in args)})"
    if tp is Path:
        return "path"
    if dataclasses.is_dataclass(tp):
        return f"table of {tp.__name__} settings"
    return getattr(tp, "__name__", str(tp))


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --------------------------------------------------------------------------------------------
# Dict <-> config


class _Mismatch(Exception):
    """A value does not fit a type; turned into a ConfigError naming the key by the caller."""


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    if tp is Any:
        return value
    if (arms := _union_args(tp)) is not None:
        if value is None and type(None) in arms:
            return None
        for arm in arms:
            if arm is type(None):
                continue
            try:
                return _coerce(value, arm, key, source)
            except _Mismatch:
                continue
        raise _Mismatch
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        for c in choices:
            if type(value) is type(c) and value == c:
                return c
        hint = _did_you_mean(value, [str(c) for c in choices]) if isinstance(value, str) else ""
        raise ConfigError(
            f"{source}: {key}: {value!r} is not valid; choose one of "
            f"{', '.join(repr(c) for c in choices)}{hint}"
        )
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value))
        if len(value) != len(args):
            raise _Mismatch
        return tuple(
            _coerce(v, a, f"{key}[{i}]", source) for i, (v, a) in enumerate(zip(value, args))
        )
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise _Mismatch
        return config_from_dict(tp, value, source=source, _prefix=f"{key}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise _Mismatch
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _Mismatch
    return value


def config_from_dict(cls: type[T], d: Mapping[str, Any], *, source: str, _prefix: str = "") -> T:
    """An instance of the config dataclass ``cls`` from ``d``; missing keys take their defaults.

    Keys may use ``-`` for ``_`` (``batch-size``), as on the command line.

    Args:
        cls: a dataclass type.
        d: values by field name.
        source: where the values came from (a file name, ``"command line"``), for messages.

    Raises:
        ConfigError: an unknown key (valid keys listed), a value of the wrong type (key and
            expected type named), an invalid ``Literal`` value (choices listed), or whatever the
            class's ``__post_init__`` rejects; every message starts with ``source``.
    """
    _check_config_class(cls)
    if not isinstance(d, Mapping):
        raise ConfigError(f"{source}: expected a table of {cls.__name__} settings, got {d!r}")
    hints = _type_hints(cls)
    valid = [f.name for f in _init_fields(cls)]
    kwargs: dict[str, Any] = {}
    for raw_key, value in d.items():
        key = str(raw_key).replace("-", "_")
        if key not in valid:
            raise ConfigError(
                f"{source}: unknown key {_prefix}{raw_key!s} for {cls.__name__}"
                f"{_did_you_mean(key, valid)}; valid keys: {', '.join(valid)}"
            )
        try:
            kwargs[key] = _coerce(value, hints[key], f"{_prefix}{key}", source)
        except _Mismatch:
            raise ConfigError(
                f"{source}: {_prefix}{key}: expected {type_name(hints[key])}, got {value!r}"
            ) from None
    missing = [
        f.name
        for f in _init_fields(cls)
        if f.name not in kwargs and f.name not in field_defaults(cls)
    ]
    if missing:
        raise ConfigError(
            f"{source}: missing key(s) {', '.join(_prefix + m for m in missing)} for {cls.__name__}"
        )
    try:
        return cls(**kwargs)
    except ValueError as e:  # ConfigError included; a plain ValueError from __post_init__ too
        msg = str(e)
        # A nested table's own check names its field; the prefix says which table it is in.
        raise ConfigError(msg if msg.startswith(source) else f"{source}: {_prefix}{msg}") from None


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def config_to_dict(config: Any) -> dict[str, Any]:
    """The init fields of the dataclass instance ``config`` as JSON-ready values.

    Paths become strings and tuples lists; :func:`config_from_dict` reads the result back to an
    equal instance.
    """
    return {f.name: _jsonable(getattr(config, f.name)) for f in _init_fields(type(config))}


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a ``.json`` or ``.toml`` file into a dict.

    Raises:
        ConfigError: the file is missing, has another extension, is malformed (with the line), or
            does not hold a table at the top.
    """
    path = Path(path)
    if path.suffix.lower() not in (".json", ".toml"):
        raise ConfigError(f"{path}: config files must be .json or .toml")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config file ({e})") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}"
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a table of settings at the top, got {type(data).__name__}"
        )
    return data


# --------------------------------------------------------------------------------------------
# Command line


def flag_name(name: str, prefix: str = "") -> str:
    """The flag of field ``name``: ``batch_size`` -> ``--batch-size`` (``--loss.l1-weight``)."""
    return "--" + (prefix + name).replace("_", "-")


def _format_default(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):
        return " ".join(str(v) for v in value) or "(empty)"
    return "none" if value is None else str(value)


def _none_or(convert: Any) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() in ("none", "null") else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def _literal_parser(choices: tuple[Any, ...]) -> Any:
    by_text = {str(c): c for c in choices}

    def parse(text: str) -> Any:
        if text in by_text:
            return by_text[text]
        raise argparse.ArgumentTypeError(
            f"{text!r} is not one of {', '.join(by_text)}{_did_you_mean(text, list(by_text))}"
        )

    return parse


def _scalar_parser(tp: Any) -> tuple[Any, str]:
    """argparse ``type`` and metavar for a scalar field type."""
    if (arms := _union_args(tp)) is not None:
        rest = [a for a in arms if a is not type(None)]
        if len(rest) != 1:
            return str, "VALUE"
        convert, metavar = _scalar_parser(rest[0])
        return (_none_or(convert) if type(None) in arms else convert), metavar
    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
        return _literal_parser(choices), "{" + ",".join(str(c) for c in choices) + "}"
    if tp is Path:
        return Path, "PATH"
    if tp in (int, float, str):
        return tp, {int: "INT", float: "FLOAT", str: "TEXT"}[tp]
    return str, "VALUE"


def add_config_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    prefix: str = "",
    dest_prefix: str = "",
    defaults: Mapping[str, Any] | None = None,
    skip: frozenset[str] | set[str] = frozenset(),
) -> None:
    """Add one ``--field-name`` flag per field of ``cls`` (nested dataclasses: ``--name.field``).

    Help is the field's docstring with the default appended; booleans get ``--x/--no-x``;
    ``X | None`` fields accept ``none``; tuples take several values. Flags that are not given
    leave no attribute on the namespace, so :func:`values_from_args` returns exactly what the
    user typed and a config file can sit between the defaults and the flags.

    Args:
        parser: a parser or argument group.
        cls: the config dataclass.
        prefix: prepended to flag names (``"loss."`` gives ``--loss.l1-weight``).
        dest_prefix: prepended to the namespace attributes, to keep two configs apart.
        defaults: defaults to *show* instead of the class's (e.g. after a method's overrides).
        skip: field names to leave out (flags the command defines itself).
    """
    _check_config_class(cls)
    hints = _type_hints(cls)
    docs = field_docs(cls)
    shown = {**field_defaults(cls), **(defaults or {})}
    for f in _init_fields(cls):
        if f.name in skip:
            continue
        tp = hints[f.name]
        flag = flag_name(f.name, prefix)
        dest = f"{dest_prefix}{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            sub = shown.get(f.name)
            add_config_arguments(
                parser,
                tp,
                prefix=f"{prefix}{f.name}.",
                dest_prefix=dest_prefix,
                defaults=config_to_dict(sub) if dataclasses.is_dataclass(sub) else None,
            )
            continue
        doc = docs.get(f.name, "").replace("%", "%%")
        default = f" (default: {_format_default(shown[f.name])})" if f.name in shown else ""
        help_text = (doc + default).strip() or None
        common: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS, "help": help_text}
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif typing.get_origin(tp) is tuple:
            args = typing.get_args(tp)
            variadic = len(args) == 2 and args[1] is Ellipsis
            convert, metavar = _scalar_parser(args[0])
            parser.add_argument(
                flag, type=convert, metavar=metavar, nargs="*" if variadic else len(args), **common
            )
        else:
            convert, metavar = _scalar_parser(tp)
            parser.add_argument(flag, type=convert, metavar=metavar, **common)


def values_from_args(
    args: argparse.Namespace, cls: type, *, prefix: str = "", dest_prefix: str = ""
) -> dict[str, Any]:
    """The values of ``cls``'s flags that were given on the command line, nested like ``cls``."""
    hints = _type_hints(cls)
    out: dict[str, Any] = {}
    for f in _init_fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            sub = values_from_args(args, tp, prefix=f"{prefix}{f.name}.", dest_prefix=dest_prefix)
            if sub:
                out[f.name] = sub
            continue
        dest = f"{dest_prefix}{prefix}{f.name}"
        if hasattr(args, dest):
            out[f.name] = getattr(args, dest)
    return out


def merge_values(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``top``; nested tables are merged key by key, ``top`` winning."""
    out = {str(k).replace("-", "_"): v for k, v in base.items()}
    for k, v in top.items():
        k = str(k).replace("-", "_")
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge_values(out[k], v)
        else:
            out[k] = v
    return out
