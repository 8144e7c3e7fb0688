"""Nested dicts of configuration values -> a typed config dataclass, every value checked.

`rlhfkit.config` gathers the values (defaults, a config file, `--set`); this module merges them
section by section and builds the command's dataclass from them: each value checked against its
field's annotation (ints widened to floats, "a,b" to a list), a section given in part completed
from its factory's defaults, and an unknown key answered with the closest known key.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from typing import Any, TypeVar

from rlhfkit.errors import UserError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, root: type) -> Any:
    """Check `value` against the annotation `tp`, converting ints to floats where a float is wanted."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"config key {key!r} is a section; expected a mapping, got {value!r}")
        return build_config(tp, value, key + ".", root)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, root)
            except UserError:
                pass
        raise UserError(f"config key {key!r}: {value!r} is not one of {', '.join(_type_name(a) for a in args)}")
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise UserError(f"config key {key!r}: expected a list, got {value!r}")
        return [_coerce(v, item_type, f"{key}[{i}]", root) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"config key {key!r}: expected a mapping, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 3e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"config key {key!r}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"config key {key!r}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"config key {key!r}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise UserError(f"config key {key!r}: expected a string, got {value!r}")
        return str(value)
    return value


def build_config(cls: type[T], values: dict[str, Any], prefix: str = "", root: type | None = None) -> T:
    """`cls` from `values`, checked; `root` is the command's config class (for key suggestions)."""
    root = root or cls
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UserError(
            unknown_key_message(_first_leaf(prefix + unknown[0], values[unknown[0]]), root, prefix, list(fields))
        )
    kwargs = {
        name: _coerce(_over_factory_default(fields[name], value), hints[name], prefix + name, root)
        for name, value in values.items()
    }
    try:
        return cls(**kwargs)
    except UserError as error:
        raise UserError(qualified_keys(str(error), prefix)) from None


def qualified_keys(message: str, prefix: str) -> str:
    """A section's own message about its keys, with their full path where the section sits deeper than usual.

    A section class reused under another (`rlhfkit rm`'s `train.*` as the loop's `rm.train.*`, `lora.*` as
    `model.lora.*`) names its keys from its usual place; under `prefix` "rm.train." the message
    "train.steps must be positive" becomes "rm.train.steps must be positive".
    """
    parent, _, section = prefix.rstrip(".").rpartition(".")
    if not parent or not message.startswith(section + "."):
        return message
    return re.sub(rf"(?<![\w.]){re.escape(section)}\.", f"{parent}.{section}.", message)


def _over_factory_default(f: dataclasses.Field, value: Any) -> Any:
    """A section given in part, over the section its factory builds: `--set optim.weight_decay=0.1` keeps
    SFT's own `OptimConfig(learning_rate=2e-5)` rather than falling back to the class default."""
    if isinstance(value, dict) and f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
        if dataclasses.is_dataclass(default):
            return merge_values(dataclasses.asdict(default), value)
    return value


def _first_leaf(key: str, value: Any) -> str:
    """`lora` given as {enabled: true} -> `lora.enabled`: the key as the user typed it."""
    while isinstance(value, dict) and value:
        name, value = next(iter(value.items()))
        key = f"{key}.{name}"
    return key


def all_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of a config class, sections included."""
    keys: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        keys.append(prefix + f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            keys += all_keys(hints[f.name], prefix + f.name + ".")
    return keys


def unknown_key_message(key: str, root: type, prefix: str, siblings: list[str]) -> str:
    """'unknown config key K; did you mean M?' — the closest key anywhere in the command's config, else the siblings."""
    candidates = all_keys(root)
    under_a_section = [k for k in candidates if k.endswith("." + key)]
    close = under_a_section or difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if close:
        return f"unknown config key {key!r}; did you mean {close[0]!r}?"
    return f"unknown config key {key!r}; known keys here: {', '.join(prefix + name for name in siblings)}"


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"--set {dotted}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def merge_values(base: dict[str, Any], update: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`update` over `base`, section by section; a section given as a scalar on one side is refused, not dropped."""
    merged = dict(base)
    for key, value in update.items():
        current = merged.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            merged[key] = merge_values(current, value, prefix + key + ".")
            continue
        if isinstance(value, dict) != isinstance(current, dict) and current is not None:
            section, scalar = (value, current) if isinstance(value, dict) else (current, value)
            raise UserError(f"config key {prefix + key!r} is a section; expected a mapping, got {scalar!r}")
        merged[key] = value
    return merged
