"""YAML -> typed stage config: strict keys, exact types, `--set`, `--print-config`, config hash.

Every stage config is a dataclass whose fields carry a default and a one-line docstring (a string
literal right under the field). `load_config` walks the YAML against those fields: an unknown key
is an error that gives the dotted path and the closest valid key, a value of the wrong type is an
error that names the key, and an int may stand for a float but nothing else converts silently.
Cross-field checks live in each dataclass's `__post_init__` and raise `FieldError(key, message)`,
which is reported with the full dotted path and the file.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import hashlib
import inspect
import json
import math
import re
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from mlmctl.errors import ConfigError

T = TypeVar("T")

# Keys that say where data lives rather than what the stage does: they do not enter the config
# hash, so moving a directory (or spelling its path differently) does not force a rebuild. The
# input's identity is its manifest hash instead.
LOCATION_KEYS = ("input", "output")


class YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads `3e-4` as a float (YAML 1.2); YAML 1.1 insists on `3.0e-4`."""


YamlLoader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str):
    """yaml.load with YamlLoader; hostile input fails only with yaml.YAMLError."""
    try:
        return yaml.load(text, Loader=YamlLoader)
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None
    except ValueError as e:  # an integer over Python's digit limit; "Exceeds the limit ..."
        raise yaml.YAMLError(f"a value cannot be read ({str(e).split(':')[0]})") from None


class FieldError(ConfigError):
    """Raised by `__post_init__` checks: `key` is the field name as the user writes it."""

    def __init__(self, key: str, message: str):
        super().__init__(f"`{key}`: {message}")
        self.key = key
        self.message = message


class ConfigProblems(ConfigError):
    """Several config errors of one file, all reported together (`problems`: one message each)."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def _problems(e: ConfigError) -> list[str]:
    return list(getattr(e, "problems", None) or [str(e)])


def yaml_key(f: dataclasses.Field) -> str:
    """The key users write for a field: its name, or `metadata={"key": ...}` for a Python keyword
    (`from_tokenizer: str | None = field(default=None, metadata={"key": "from"})`)."""
    return f.metadata.get("key", f.name)


def check(condition: bool, key: str, message: str) -> None:
    """`__post_init__` helper: raise FieldError(key, message) unless condition holds."""
    if not condition:
        raise FieldError(key, message)


# ----------------------------------------------------------------------------------------------
# Loading


def load_config(cls: type[T], path: str | Path | None, sets: list[str] | None = None) -> T:
    """Read a YAML file (or start from defaults when path is None), apply `--set`s, validate."""
    data: dict = {}
    source = "built-in defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        data = _read_yaml(path)
    set_keys: set[str] = set()
    for item in sets or []:
        key, value = _parse_set(item)
        _assign(data, key, value)
        set_keys.add(key)
    return from_dict(cls, data, source=source, set_keys=set_keys)


def from_dict(
    cls: type[T],
    data: Any,
    where: str = "",
    *,
    source: str = "config",
    set_keys: set[str] | None = None,
) -> T:
    """Build dataclass `cls` from plain data, checking every key and type.

    `where` is the dotted path of `data` inside the whole config (for messages); `source` names the
    file. Stages use this for sub-configs chosen at run time (e.g. one clean step's options).
    """
    return _Loader(source, set_keys or set(), cls)._dataclass(cls, data, where)


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory, not a YAML file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        if mark is not None:
            raise ConfigError(
                f"{path}:{mark.line + 1}:{mark.column + 1}: invalid YAML: {problem}"
            ) from None
        raise ConfigError(f"{path}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not {type(data).__name__}")
    return data


def _parse_set(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.lr=3e-4")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = parse_yaml(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw  # not YAML: keep the text as a string; the type check decides
    return key, value


def _assign(data: dict, dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: `{'.'.join(parts[: i + 1])}` is not a group of keys")
        node = child
    node[parts[-1]] = value


class _Loader:
    def __init__(self, source: str, set_keys: set[str], root: type):
        self.source = source
        self.set_keys = set_keys
        self.root = root

    def _origin(self, key: str) -> str:
        if key in self.set_keys:
            return f"--set {key}"
        return self.source

    def _fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self._origin(key)}: `{key}`: {message}")

    def _dataclass(self, cls: type, data: Any, where: str) -> Any:
        if isinstance(data, cls):
            return data
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise self._fail(where or "(top level)", f"expected a mapping of keys, got {_describe(data)}")
        hints = typing.get_type_hints(cls)
        fields = {yaml_key(f): f for f in dataclasses.fields(cls) if f.init}
        kwargs = {}
        # Every key is checked and every problem collected, so that a file with several mistakes
        # is fixed in one go; the cross-field checks run only once each value is valid.
        problems: list[str] = []
        for key, value in data.items():
            shown = str(key) if str(key).isprintable() else json.dumps(str(key))[1:-1]
            path = f"{where}.{shown}" if where else shown
            try:
                if key not in fields:
                    raise self._fail(path, "unknown key" + self._suggest(str(key), fields, where))
                name = fields[key].name
                kwargs[name] = self._value(hints[name], value, path)
            except ConfigError as e:
                problems += _problems(e)
        # Build absent nested groups here too, so that their own checks report the full key path.
        for key, f in fields.items():
            if key not in data and dataclasses.is_dataclass(hints[f.name]):
                try:
                    kwargs[f.name] = self._dataclass(hints[f.name], {}, f"{where}.{key}" if where else key)
                except ConfigError as e:
                    problems += _problems(e)
        if problems:
            raise ConfigProblems(problems) if len(problems) > 1 else ConfigError(problems[0])
        try:
            return cls(**kwargs)
        except FieldError as e:
            path = f"{where}.{e.key}" if where else e.key
            raise ConfigError(f"{self._origin(path)}: `{path}`: {e.message}") from None
        except ConfigError:
            raise
        except TypeError as e:  # a required field without a default was left out
            raise ConfigError(f"{self.source}: `{where or cls.__name__}`: {e}") from None

    def _suggest(self, key: str, fields: dict, where: str) -> str:
        close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
        if not close:
            # `lr_warmup` for `warmup_steps`: a key sharing a word of the typo, most words first.
            words = set(key.split("_"))
            scored = [
                (len(words & set(f.split("_"))), difflib.SequenceMatcher(None, key, f).ratio(), f)
                for f in fields
            ]
            best = max(scored, default=(0, 0.0, ""))
            close = [best[2]] if best[0] else []
        if close:
            full = f"{where}.{close[0]}" if where else close[0]
            return f" (did you mean `{full}`?)"
        # The key may exist at another level (`lr` written at the top for `train.lr`).
        elsewhere = [p for p in all_keys(self.root) if p.rsplit(".", 1)[-1] == key]
        if elsewhere:
            return f" (did you mean `{elsewhere[0]}`?)"
        return f" (valid keys here: {', '.join(sorted(fields))})"

    def _value(self, tp: Any, value: Any, path: str) -> Any:
        origin = get_origin(tp)
        if tp is Any:
            return value
        if origin in (Union, types.UnionType):
            arms = get_args(tp)
            if value is None and type(None) in arms:
                return None
            errors = []
            for arm in arms:
                if arm is type(None):
                    continue
                try:
                    return self._value(arm, value, path)
                except ConfigError as e:
                    errors.append(e)
            if len(errors) == 1:
                raise errors[0]
            raise self._fail(path, f"expected {type_name(tp)}, got {_describe(value)}")
        if origin is Literal:
            choices = get_args(tp)
            if value in choices and type(value) is type(choices[choices.index(value)]):
                return value
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise self._fail(
                path, f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r}{hint}"
            )
        if origin in (list, tuple):
            if not isinstance(value, list):
                raise self._fail(path, f"expected a list, got {_describe(value)}")
            (item_tp, *_) = get_args(tp) or (Any,)
            items = [self._value(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
            return items if origin is list else tuple(items)
        if origin is dict:
            if not isinstance(value, dict):
                raise self._fail(path, f"expected a mapping, got {_describe(value)}")
            _, val_tp = get_args(tp) or (str, Any)
            return {str(k): self._value(val_tp, v, f"{path}.{k}") for k, v in value.items()}
        if dataclasses.is_dataclass(tp):
            return self._dataclass(tp, value, path)
        if tp is bool:
            if isinstance(value, bool):
                return value
        elif tp is int:
            if isinstance(value, int) and not isinstance(value, bool):
                # Past int64 no setting means anything, and C code given it overflows.
                if not -(2**63) <= value < 2**63:
                    raise self._fail(path, f"an integer of {value.bit_length()} bits is out of range (at most 63)")
                return value
        elif tp is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if not math.isfinite(value) or abs(value) > 1e300:
                    raise self._fail(path, f"must be a finite number, got {value}")
                return float(value)
        elif tp is str:
            if isinstance(value, str):
                return value
        else:
            raise TypeError(f"config type {tp!r} at {path} is not supported")
        raise self._fail(path, f"expected {type_name(tp)}, got {_describe(value)}")


def type_name(tp: Any) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
    if tp in names:
        return names[tp]
    if get_origin(tp) in (Union, types.UnionType):
        arms = [a for a in get_args(tp) if a is not type(None)]
        text = " or ".join(type_name(a) for a in arms)
        return text + (" or null" if len(arms) < len(get_args(tp)) else "")
    if get_origin(tp) is list:
        return "a list"
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(c) for c in get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{text} ({type(value).__name__})"


def all_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key path of a (nested) config dataclass, in field order."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}{yaml_key(f)}"
        out.append(path)
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.extend(all_keys(tp, path + "."))
    return out


# ----------------------------------------------------------------------------------------------
# Introspection: docstrings, dicts, hashes, printing


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (`x: int = 1` then `\"\"\"doc\"\"\"`)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    tree = ast.parse(source)
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def config_to_dict(cfg: Any) -> dict:
    """Plain, JSON-ready dict of a config dataclass (nested ones included), keyed as users write it."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {yaml_key(f): config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: config_to_dict(v) for k, v in cfg.items()}
    return cfg


def config_hash(cfg: Any) -> str:
    """sha256 of the sorted-key JSON of everything but the location keys (see LOCATION_KEYS)."""
    data = {k: v for k, v in config_to_dict(cfg).items() if k not in LOCATION_KEYS}
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def same_config(old: dict, cfg: Any) -> bool:
    """Whether `cfg` is the config a manifest recorded as `old`, where a key `old` lacks (one that a
    later mlmctl added) counts as unchanged while `cfg` leaves it at its default. Upgrading mlmctl
    must not make every finished stage look changed, and a finished pretraining need a rebuild."""
    new = config_to_dict(cfg)
    try:
        defaults = config_to_dict(type(cfg)())
    except Exception:  # a config class without usable defaults: only the exact hash can match
        return False
    for key in diff_keys(old, new):
        path = key.split(".")
        if _lookup(old, path) is not _ABSENT or _lookup(new, path) != _lookup(defaults, path):
            return False
    return True


_ABSENT = object()


def _lookup(data: dict, path: list[str]) -> Any:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return _ABSENT
        data = data[part]
    return data


def diff_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts (for 'needs --force' messages)."""
    keys = []
    for key in sorted(set(old) | set(new)):
        if prefix == "" and key in LOCATION_KEYS:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys.extend(diff_keys(a, b, f"{prefix}{key}."))
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


def format_config(cfg: Any) -> str:
    """The resolved config as YAML, each key preceded by its docstring as a comment."""
    return "".join(_format(cfg, 0))


def _format(cfg: Any, indent: int) -> list[str]:
    pad = "  " * indent
    docs = field_docs(type(cfg))
    lines = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = yaml_key(f)
        if f.name in docs:
            lines.append(f"{pad}# {docs[f.name]}\n")
        if dataclasses.is_dataclass(value):
            lines.append(f"{pad}{key}:\n")
            lines.extend(_format(value, indent + 1))
            continue
        plain = config_to_dict(value)
        text = yaml.safe_dump(plain, default_flow_style=True, sort_keys=False, width=float("inf"))
        text = text.strip().removesuffix("...").strip()
        lines.append(f"{pad}{key}: {text}\n")
    return lines
