"""Typed configuration: dataclass schemas, YAML recipes and dotted ``key=value`` overrides.

Each stage declares one schema, a tree of dataclasses. A recipe (YAML) and command-line overrides are merged
into a plain dict, then checked against the schema: unknown keys, wrong types and missing required values raise
`ConfigError` naming the dotted key (and the closest valid key for a typo). `cli_config` turns that error into
one line on stderr and exit code 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration the schema rejects; the message names the offending key."""


def _keys(schema: type, prefix: str = "") -> list[str]:
    """Every dotted key of a schema, nested ones included."""
    keys = []
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        key = prefix + f.name
        keys.append(key)
        if dataclasses.is_dataclass(hints[f.name]):
            keys.extend(_keys(hints[f.name], key + "."))
    return keys


def _unknown(key: str, root: type) -> ConfigError:
    close = difflib.get_close_matches(key, _keys(root), n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"unknown config key '{key}'{hint}")


def _coerce(value: Any, tp: Any, key: str, root: type) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(value, inner, key, root)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return _build(tp, value, key + ".", root)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        (inner,) = typing.get_args(tp)
        return [_coerce(v, inner, f"{key}[{i}]", root) for i, v in enumerate(value)]
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"config key '{key}' must be one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if tp is Any:
        return value
    if tp is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:  # YAML reads 2e-4 (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"config key '{key}' must be {tp.__name__}, got {value!r}")
    return value


def _build(schema: type[T], values: dict, prefix: str, root: type) -> T:
    hints = typing.get_type_hints(schema)
    names = {f.name for f in dataclasses.fields(schema)}
    for name in values:
        if name not in names:
            raise _unknown(prefix + name, root)
    kwargs = {}
    for f in dataclasses.fields(schema):
        key = prefix + f.name
        if f.name in values:
            kwargs[f.name] = _coerce(values[f.name], hints[f.name], key, root)
        elif dataclasses.is_dataclass(hints[f.name]):
            kwargs[f.name] = _build(hints[f.name], {}, key + ".", root)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required config value '{key}'")
    return schema(**kwargs)


def _set(tree: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for p in parents:
        node = tree.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config key '{p}' is a value, cannot set '{key}'")
        tree = node
    tree[leaf] = value


def load_config(schema: type[T], path: str | Path | None = None, overrides: typing.Sequence[str] = (),
                sections: typing.Collection[str] | None = None) -> T:
    """Build ``schema`` from a YAML recipe and ``key=value`` overrides (values parsed as YAML). With `sections`,
    only those top-level sections of the recipe are read (a tool reusing part of a stage's recipe)."""
    tree: dict = {}
    if path is not None:
        try:
            tree = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        if sections is not None:
            tree = {k: v for k, v in tree.items() if k in sections}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        _set(tree, key, yaml.safe_load(raw) if raw else "")
    return _build(schema, tree, "", schema)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def cli_config(schema: type[T], argv: typing.Sequence[str] | None = None, prog: str = "",
               sections: typing.Collection[str] | None = None) -> T:
    """Parse ``[--config FILE] [key=value ...]``; a bad configuration prints one line and exits with code 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    path = None
    if "--config" in args:
        i = args.index("--config")
        if i + 1 >= len(args):
            _fail(prog, "--config needs a file")
        path = args[i + 1]
        del args[i : i + 2]
    try:
        return load_config(schema, path, args, sections)
    except ConfigError as e:
        _fail(prog, str(e))


def _fail(prog: str, message: str) -> typing.NoReturn:
    print(f"{prog + ': ' if prog else ''}error: {message}", file=sys.stderr)
    raise SystemExit(2)
