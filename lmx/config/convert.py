"""Conversion between plain data (JSON, command-line strings) and the typed config dataclasses.

Every value is converted to its field's declared type; an unknown key fails with the closest valid
names, and a field of another objective kind names the kind and its fields.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from lmx.config.objective import (
    LEGACY_FLAT_KEYS,
    ObjectiveConfig,
    PretrainConfig,
    objective_config_class,
    objective_defaults,
    objective_fields,
    objective_kinds,
)
from lmx.errors import ConfigError


def to_plain(obj: Any) -> Any:
    if isinstance(obj, ObjectiveConfig):  # the tag first, then the kind's own fields
        return {"kind": obj.kind, **{f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_plain(x) for x in obj]
    return obj


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def convert(value: Any, tp: Any, key: str) -> Any:
    """Converts plain `value` (from JSON, or a string from the command line) to type `tp`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if isinstance(tp, type) and issubclass(tp, ObjectiveConfig):
        return _convert_objective(value, key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key or 'config'}: expected a mapping of fields, got {value!r}")
        hints = _field_types(tp)
        names = [f.name for f in dataclasses.fields(tp) if f.init]
        unknown = [k for k in value if k not in names]
        if unknown:
            raise ConfigError(_unknown_key_message(_join(key, unknown[0]), _all_keys(tp, key)))
        kwargs = {k: convert(v, hints[k], _join(key, k)) for k, v in value.items()}
        return tp(**kwargs)
    if origin in (typing.Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_none and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}={value!r}: expected {_type_name(tp)}")
    if origin is Literal:
        for choice in args:
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
        raise ConfigError(f"{key}={value!r}: expected one of {list(args)}")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = _parse_sequence(value, key)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r}: expected a sequence")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ConfigError(f"{key}={value!r}: expected {len(args)} items")
        return tuple(convert(v, a, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{key}={value!r}: expected a boolean (true/false)")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                number = float(value.replace("_", ""))
            except ValueError:
                number = None
            if number is not None and number.is_integer():
                return int(number)
        raise ConfigError(f"{key}={value!r}: expected an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(f"{key}={value!r}: expected a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}={value!r}: expected a string")
    if tp is Any:
        return value
    raise ConfigError(f"{key}: unsupported field type {_type_name(tp)}")


def _parse_sequence(text: str, key: str) -> list[Any]:
    """A sequence on the command line: JSON (``[1, 2]``) or comma-separated (``a,b``)."""
    text = text.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{key}={text!r}: not valid JSON ({e})") from None
    return [part.strip() for part in text.split(",") if part.strip()]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted field key below `cls` (leaves, not sections: what a suggestion may name)."""
    keys = []
    hints = _field_types(cls)
    for f in dataclasses.fields(cls):
        key = _join(prefix, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            keys.extend(_all_keys(hints[f.name], key))
        else:
            keys.append(key)
    return keys


def _unknown_key_message(key: str, valid: Iterable[str]) -> str:
    valid = list(valid)
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    if not close:  # a typo in the last part only: compare within the section
        leaf = key.rsplit(".", 1)[-1]
        close = [k for k in valid if difflib.get_close_matches(leaf, [k.rsplit(".", 1)[-1]], cutoff=0.7)][:3]
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"unknown config key {key!r}{hint}"


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """``["model.d_model=512", ...]`` -> ``{"model.d_model": "512"}``."""
    result = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value")
        result[key.strip()] = value.strip()
    return result


def apply_overrides(cfg: Any, overrides: Mapping[str, Any] | Iterable[str]) -> Any:
    """Applies dotted overrides to a `Config` all at once (so related keys can change together) and
    validates. ``objective.kind`` applies first: the section becomes that kind's, keeping the fields
    the two kinds share, so ``objective.kind=sft objective.train_files=...`` reads in any order."""
    if not isinstance(overrides, Mapping):
        overrides = parse_overrides(overrides)
    if not overrides:
        return cfg
    data = cfg.to_dict()
    if "objective.kind" in overrides:
        kind = str(overrides["objective.kind"])
        defaults = to_plain(objective_defaults(objective_config_class(kind)))
        shared = {k: v for k, v in data["objective"].items() if k in defaults}
        data["objective"] = {"kind": kind, **defaults, **shared}
    valid = _keys_of(data)
    for key, value in overrides.items():
        if key == "objective.kind":
            continue
        parts = key.split(".")
        node = data
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                if parts[0] == "objective" and len(parts) == 2:
                    raise ConfigError(_not_an_objective_field(key, data["objective"]["kind"]))
                raise ConfigError(_unknown_key_message(key, valid))
            if i == len(parts) - 1:
                node[part] = value
            else:
                node = node[part]
    return type(cfg).from_dict(data)


def _keys_of(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every dotted field key of a config dict (leaves, not sections; the objective's for its kind)."""
    keys = []
    for name, value in tree.items():
        key = _join(prefix, name)
        keys.extend(_keys_of(value, key) if isinstance(value, Mapping) else [key])
    return keys


def _not_an_objective_field(key: str, kind: str) -> str:
    fields = objective_fields(objective_config_class(kind))
    name = key.rsplit(".", 1)[-1]
    owners = [k for k in objective_kinds() if name in objective_fields(objective_config_class(k))]
    where = f"; objective kinds with it: {', '.join(owners)}" if owners else ""
    return f"{key}: not a field of objective.kind={kind!r} (its fields: {', '.join(fields) or 'none'}){where}"


def _convert_objective(value: Any, key: str) -> ObjectiveConfig:
    """The objective section: its ``kind`` picks the registered dataclass, which takes the rest."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected a mapping of fields, got {value!r}")
    kind = value.get("kind", PretrainConfig.KIND)
    if not isinstance(kind, str):
        raise ConfigError(f"{key}.kind={kind!r}: expected a string")
    cls = objective_config_class(kind)
    names = objective_fields(cls)
    fields = {k: v for k, v in value.items() if k != "kind"}
    if set(value) == LEGACY_FLAT_KEYS:  # a run written before the union: drop what its kind never used
        fields = {k: v for k, v in fields.items() if k in names}
    unknown = [k for k in fields if k not in names]
    if unknown:
        raise ConfigError(_not_an_objective_field(_join(key, unknown[0]), kind))
    hints = _field_types(cls)
    return cls(**{k: convert(v, hints[k], _join(key, k)) for k, v in fields.items()})
