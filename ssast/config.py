"""Typed configuration: dataclass schemas, YAML recipes and dotted ``key=value`` overrides.

Each stage declares one schema, a tree of dataclasses. A recipe (YAML) and command-line overrides are merged
into a plain dict, then checked against the schema: unknown keys, wrong types, values out of their range (fields
annotated ``Annotated[int, Range(ge=1)]``, or the aliases below), checks across fields (a dataclass's
``__post_init__`` raising `invalid(...)`) and missing required values raise `ConfigError` naming the dotted key
(and the closest valid key for a typo). `cli_config` turns that error into one line on stderr and exit code 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import yaml

T = TypeVar("T")


class UserError(Exception):
    """An error the user can fix (a config, a manifest, a checkpoint, the data, an output in the way): entry points
    print its one-line message instead of a traceback and exit with `exit_code` (`ssast.cli.run_cli`)."""

    exit_code = 1


class ConfigError(UserError, ValueError):
    """A configuration the schema rejects; the message names the offending key."""


def invalid(key: str, value: Any, allowed: str) -> ConfigError:
    """The error of a value out of what `key` allows (`key` relative to the dataclass that checks it)."""
    return ConfigError(f"config key '{key}' must be {allowed}, got {value!r}")


@dataclass(frozen=True)
class Range:
    """Bounds of a numeric config value (``ge``: >=, ``gt``: >, ``le``: <=, ``lt``: <)."""

    ge: Optional[float] = None
    gt: Optional[float] = None
    le: Optional[float] = None
    lt: Optional[float] = None

    def __str__(self) -> str:
        ops = ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
        return " and ".join(f"{op} {bound:g}" for op, bound in ops if bound is not None)

    def contains(self, v: float) -> bool:
        """Whether `v` lies within the bounds."""
        return (
            (self.ge is None or v >= self.ge)
            and (self.gt is None or v > self.gt)
            and (self.le is None or v <= self.le)
            and (self.lt is None or v < self.lt)
        )


Positive = Annotated[int, Range(ge=1)]
NonNegative = Annotated[int, Range(ge=0)]
PositiveFloat = Annotated[float, Range(gt=0)]
NonNegativeFloat = Annotated[float, Range(ge=0)]
Fraction = Annotated[float, Range(ge=0, le=1)]


def _kinds(tp: Any) -> dict[str, type] | None:
    """The members of a union of dataclasses told apart by their ``kind`` field (a tagged union), by kind."""
    if typing.get_origin(tp) not in (typing.Union, types.UnionType):
        return None
    members = [a for a in typing.get_args(tp) if a is not type(None)]
    if not all(dataclasses.is_dataclass(m) and "kind" in m.__dataclass_fields__ for m in members):
        return None
    return {m.__dataclass_fields__["kind"].default: m for m in members}


def _keys(schema: type, prefix: str = "") -> list[str]:
    """Every dotted key of a schema, nested ones included (those of every kind of a tagged union)."""
    keys = []
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        key = prefix + f.name
        keys.append(key)
        tp = hints[f.name]
        members = [tp] if dataclasses.is_dataclass(tp) else list((_kinds(tp) or {}).values())
        for member in members:
            keys.extend(k for k in _keys(member, key + ".") if k not in keys)
    return keys


def _unknown(key: str, root: type) -> ConfigError:
    close = difflib.get_close_matches(key, _keys(root), n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"unknown config key '{key}'{hint}")


def _coerce(value: Any, tp: Any, key: str, root: type) -> Any:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *extras = typing.get_args(tp)
        value = _coerce(value, base, key, root)
        for bound in extras:
            if isinstance(bound, Range) and value is not None and not bound.contains(value):
                raise invalid(key, value, str(bound))
        return value
    kinds = _kinds(tp)
    if kinds:  # a tagged union: the mapping's kind picks the dataclass (the first member's when it names none)
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        kind = value.get("kind", next(iter(kinds)))
        if kind not in kinds:
            raise ConfigError(f"config key '{key}.kind' must be one of {list(kinds)}, got {kind!r}")
        options = [f.name for f in dataclasses.fields(kinds[kind])]
        for name in value:
            if name not in options:
                raise ConfigError(
                    f"config key '{key}.{name}' is not an option of kind {kind} (its options: {', '.join(options)})"
                )
        return _build(kinds[kind], value, key + ".", root)
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
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        _, inner = typing.get_args(tp)
        return {str(k): _coerce(v, inner, f"{key}.{k}", root) for k, v in value.items()}
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
    if tp is float and not math.isfinite(value):  # YAML reads .inf and .nan
        raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}")
    return value


def _build(schema: type[T], values: dict, prefix: str, root: type) -> T:
    hints = typing.get_type_hints(schema, include_extras=True)
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
    try:
        return schema(**kwargs)
    except ConfigError as e:  # a check across fields names keys relative to its dataclass
        raise ConfigError(str(e).replace("config key '", f"config key '{prefix}", 1)) from None


def _set(tree: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for p in parents:
        node = tree.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config key '{p}' is a value, cannot set '{key}'")
        tree = node
    tree[leaf] = value


def load_yaml(path: str | Path) -> dict:
    """The mapping of a YAML file; ConfigError (one line, with the line and column of a syntax error) otherwise."""
    try:
        tree = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        raise ConfigError(f"config file {path} is not valid YAML:{where} {getattr(e, 'problem', None) or e}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return tree


def load_config(
    schema: type[T],
    path: str | Path | None = None,
    overrides: typing.Sequence[str] = (),
    sections: typing.Collection[str] | None = None,
) -> T:
    """Build ``schema`` from a YAML recipe and ``key=value`` overrides (values parsed as YAML). With `sections`,
    only those top-level sections of the recipe are read (a tool reusing part of a stage's recipe)."""
    tree: dict = {}
    if path is not None:
        tree = load_yaml(path)
        if sections is not None:
            tree = {k: v for k, v in tree.items() if k in sections}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if item.startswith("-"):  # an argparse habit
            name, sep, value = item.lstrip("-").partition("=")
            raise ConfigError(
                f"'{item}' is not an option: keys go without dashes, as {name.replace('-', '_')}={value or 'VALUE'}"
            )
        if not sep or not key:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        _set(tree, key, yaml.safe_load(raw) if raw else "")
    return _build(schema, tree, "", schema)


def to_dict(cfg: Any) -> dict:
    """A configuration as nested plain dicts and lists."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    """A configuration (dataclass, or the dict of one) as YAML that `load_config` reads back."""
    Path(path).write_text(yaml.safe_dump(cfg if isinstance(cfg, dict) else to_dict(cfg), sort_keys=False))


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else REQUIRED


REQUIRED = "(required)"  # `describe`'s value of a key without a default


def describe(schema: type, cfg: Any = None, prefix: str = "") -> list[str]:
    """One line per config key: ``key: value  # type`` (values of `cfg`, or the schema's defaults)."""
    lines = []
    hints = typing.get_type_hints(schema, include_extras=True)
    for f in dataclasses.fields(schema):
        value, tp = _default(f) if cfg is None else getattr(cfg, f.name), hints[f.name]
        if value is REQUIRED:
            lines.append(f"{prefix}{f.name}: {REQUIRED}  # {_type_name(tp)}")
        elif dataclasses.is_dataclass(value):  # a section, or the chosen kind of a tagged union
            section = describe(type(value), value, prefix + f.name + ".")
            if kinds := _kinds(tp):  # its first line, the kind, lists the kinds to choose from
                section[0] = f"{section[0].rsplit('  # ', 1)[0]}  # {' | '.join(kinds)}"
            lines += section
        else:
            plain = (
                [dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for v in value]
                if isinstance(value, list)
                else value
            )  # lists of sections (a probe recipe's tasks)
            shown = yaml.safe_dump(plain, default_flow_style=True, width=1000).strip().removesuffix("\n...")
            lines.append(f"{prefix}{f.name}: {shown}  # {_type_name(tp)}")
    return lines


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if kinds := _kinds(tp):
        return f"mapping of kind {' | '.join(kinds)}"
    if origin is Annotated:
        return f"{_type_name(args[0])}, {' '.join(str(a) for a in args[1:] if isinstance(a, Range))}"
    if origin is typing.Literal:
        return " | ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args if a is not type(None)) + " | null"
    if origin is list:
        return f"list of {_type_name(args[0])}"
    return getattr(tp, "__name__", str(tp))


def usage(prog: str, doc: str, recipes: str = "") -> str:
    """The help text of an entry point: how to call it, what it does, and the recipes in `recipes`."""
    text = (
        f"usage: {prog} --config FILE [key=value ...]\n"
        f"       {prog} --config FILE [key=value ...] --print-config   (every key, its type and value)\n\n"
        f"{doc.strip()}\n"
    )
    if names := recipe_names(recipes):
        text += f"\nrecipes in configs/{recipes}/: {', '.join(names)}\n"
    return text


def recipe_names(stage: str) -> list[str]:
    """The recipes of a stage: ``configs/<stage>/*.yaml`` of the current folder (recipes are paths relative to it),
    else of the checkout this package runs from; none when neither has that folder."""
    if not stage:
        return []
    for root in (Path.cwd(), Path(__file__).resolve().parents[1]):
        if (root / "configs" / stage).is_dir():
            return sorted(p.stem for p in (root / "configs" / stage).glob("*.yaml"))
    return []


def cli_config(
    schema: type[T],
    argv: typing.Sequence[str] | None = None,
    prog: str = "",
    sections: typing.Collection[str] | None = None,
    doc: str = "",
    recipes: str = "",
) -> T:
    """Parse ``--config FILE [key=value ...] [--print-config]``. ``--help`` prints the usage; no ``--config``
    prints it as an error (exit 2), so that no stage runs on defaults by accident; a bad configuration prints
    one line and exits with code 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--help" in args or "-h" in args:
        print(usage(prog, doc, recipes))
        raise SystemExit(0)
    if "--config" not in args:
        print(usage(prog, doc, recipes), file=sys.stderr)
        fail(prog, "--config FILE is required (a recipe from the list above, or your own)")
    i = args.index("--config")
    if i + 1 >= len(args):
        fail(prog, "--config needs a file")
    path = args[i + 1]
    del args[i : i + 2]
    show = "--print-config" in args
    args = [a for a in args if a != "--print-config"]
    try:
        cfg = load_config(schema, path, args, sections)
    except ConfigError as e:
        if not Path(path).exists() and (names := recipe_names(recipes)):
            e = ConfigError(f"{e} (recipes in configs/{recipes}/: {', '.join(names)})")
        fail(prog, str(e))
    return _printed_or(schema, cfg, show)


def cli_args(
    schema: type[T], argv: typing.Sequence[str] | None = None, prog: str = "", doc: str = "", positional: str = ""
) -> T:
    """A tool's command line: ``[value ...] key=value ... [--print-config]`` (values parsed as YAML) into `schema`,
    with no recipe; the bare values fill the field `positional` (one value, or all of them for a list). ``--help``
    prints the usage with every key, its default and type; a bad configuration prints one line and exits with 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--help" in args or "-h" in args:
        bare = f"{positional.upper()} " if positional else ""
        keys = "\n".join("  " + line for line in describe(schema))
        print(f"usage: {prog} {bare}[key=value ...] [--print-config]\n\n{doc.strip()}\n\nkeys:\n{keys}")
        raise SystemExit(0)
    show = "--print-config" in args
    args = [a for a in args if a != "--print-config"]
    bare = [a for a in args if "=" not in a and not a.startswith("-")]
    overrides = [a for a in args if a not in bare]
    try:
        if bare and not positional:
            raise ConfigError(f"'{bare[0]}' is not of the form key=value")
        if bare:
            many = typing.get_origin(typing.get_type_hints(schema)[positional]) is list
            if len(bare) > 1 and not many:
                raise ConfigError(f"one {positional} expected, got {' '.join(bare)}")
            overrides.append(f"{positional}={json.dumps(bare if many else bare[0])}")
        cfg = load_config(schema, None, overrides)
    except ConfigError as e:
        fail(prog, str(e))
    return _printed_or(schema, cfg, show)


def _printed_or(schema: type[T], cfg: T, show: bool) -> T:
    """`cfg`, or with ``--print-config`` every key of it printed and exit 0."""
    if show:
        print("\n".join(describe(schema, cfg)))
        raise SystemExit(0)
    return cfg


def fail(prog: str, message: str) -> typing.NoReturn:
    """One error line on stderr for a command line used wrongly, and exit code 2."""
    print(f"{prog + ': ' if prog else ''}error: {message}", file=sys.stderr)
    raise SystemExit(2)
