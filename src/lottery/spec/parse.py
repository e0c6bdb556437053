"""Build a validated ExperimentSpec from TOML files, presets and `--set group.field=value` overrides."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
import types
import typing
from pathlib import Path
from typing import Any

import tomli_w

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from lottery.errors import UserError, unknown_name
from lottery.spec.groups import GROUPS, ExperimentSpec

TOP_LEVEL = ("preset", "replicates", *GROUPS)
STEP_FIELDS = ("steps", "every", "rewind", "masks.at", "dynamic.stop", "dynamic.start", "dynamic.end")  # step strings


def _describe(expected: Any) -> str:
    origin = typing.get_origin(expected)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_describe(a) for a in typing.get_args(expected) if a is not type(None))
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(expected)[0])}s"
    if origin is dict:
        return "a table" if typing.get_args(expected)[1] is Any else "a table of numbers"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[expected]


def _plain(value: Any) -> bool:
    """A string, boolean, 64-bit integer, finite number, or a list or table of these (no None, no dates)."""
    if isinstance(value, (str, bool)):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def _coerce(value: Any, expected: Any, name: str) -> Any:
    """Check `value` (as read from TOML) against the field type and return it in canonical form."""
    if expected is Any:  # a plugin's own option: a value that both TOML (spec.toml) and JSON (spec.json) hold
        if not _plain(value):
            raise UserError(f"{name} must be a string, number, boolean, list or table of these, got {value!r}")
        return value
    origin = typing.get_origin(expected)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(expected) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(expected)):
            return None
        if isinstance(value, str) and value.lower() in ("none", "null") and str not in args:
            return None
        for arg in args:
            try:
                return _coerce(value, arg, name)
            except UserError:
                pass
        raise UserError(f"{name} must be {_describe(expected)}, got {value!r}")
    if origin is tuple:
        items = value if isinstance(value, list) else [value]
        return tuple(_coerce(item, typing.get_args(expected)[0], name) for item in items)
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{name} must be a table like {{ output = 0.1 }}, got {value!r}")
        return {str(k): _coerce(v, typing.get_args(expected)[1], f"{name}.{k}") for k, v in value.items()}
    if expected is bool:
        if isinstance(value, bool):
            return value
    elif expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if abs(value) > sys.float_info.max or not math.isfinite(value):  # (a huge int has no float)
                raise UserError(f"{name} must be a finite number, got {value!r}")
            return float(value)
    elif expected is str:
        if isinstance(value, str):
            return value
        # Step strings may be written as bare integers (iterations).
        if isinstance(value, int) and not isinstance(value, bool) and name.endswith(STEP_FIELDS):
            return f"{value}it"
    raise UserError(f"{name} must be {_describe(expected)}, got {value!r}")


def _build_group(cls: type, values: Any, group: str) -> Any:
    if not isinstance(values, dict):
        raise UserError(f"[{group}] must be a table of settings, got {values!r}")
    hints = typing.get_type_hints(cls)
    flat = getattr(cls, "FLAT", None)  # a dict field whose entries are flat keys of the group ([masks]' options)
    fields = {f.name for f in dataclasses.fields(cls)} - {flat}
    kwargs: dict[str, Any] = {flat: {}} if flat else {}
    for key, value in values.items():
        if key in fields:
            kwargs[key] = _coerce(value, hints[key], f"{group}.{key}")
        elif flat and cls.flat_type(key) is not None:
            kwargs[flat][key] = _coerce(value, cls.flat_type(key), f"{group}.{key}")
        elif flat:  # (a key a plugin declares is known once the plugin is imported)
            error = unknown_name(f"setting in [{group}]", key, [*fields, *cls.flat_names()])
            raise UserError(f"{error}; {cls.FLAT_HINT}")
        else:
            raise unknown_name(f"setting in [{group}]", key, fields)
    return cls(**kwargs).validate()


def build(data: dict[str, Any]) -> ExperimentSpec:
    """A validated spec from a nested dict (groups -> fields), as read from TOML or JSON."""
    for key in data:
        if key not in TOP_LEVEL:
            raise unknown_name("top-level spec key", key, TOP_LEVEL)
    groups = {name: _build_group(cls, data.get(name, {}), name) for name, cls in GROUPS.items()}
    replicates = _coerce(data.get("replicates", 1), int, "replicates")
    return ExperimentSpec(**groups, replicates=replicates).validate()


def parse_override(text: str) -> tuple[list[str], Any]:
    """'training.lr=0.01' -> (['training', 'lr'], 0.01). The value is TOML, or else a bare string."""
    key, sep, raw = text.partition("=")
    path = [part.strip() for part in key.strip().split(".")]
    if not sep or not all(path) or len(path) > 3:
        raise UserError(f"--set expects group.field=value (e.g. training.lr=0.01), got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except (ValueError, RecursionError):  # not TOML (TOMLDecodeError), an over-long integer, deep nesting
        value = raw.strip()
    return path, value


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if key in GROUPS and key in merged and not isinstance(merged[key], dict):
            raise UserError(f"{key} must be a table of settings ([{key}]), got {merged[key]!r}")
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key in GROUPS:
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"spec file not found: {path}") from None
    except (ValueError, RecursionError) as error:  # TOMLDecodeError, UnicodeDecodeError, over-long int, nesting
        raise UserError(f"spec file {path} is not valid TOML: {error}") from None
    except OSError as error:
        raise UserError(f"cannot read spec file {path}: {error.strerror}") from None


def resolve(
    spec_file: Path | None = None,
    preset: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    data: dict[str, Any] | None = None,
) -> tuple[ExperimentSpec, str | None]:
    """The spec from a file (or its already-read `data`) and/or preset plus overrides, and the preset it
    started from. Later sources win: preset, then file, then each override in order."""
    from lottery.presets import presets

    if data is None:
        data = read_toml(spec_file) if spec_file is not None else {}
    data = dict(data)
    if "sweep" in data:
        raise UserError("this spec has a [sweep] table: run it with 'lottery sweep'")
    file_preset = data.pop("preset", None)
    if file_preset is not None and not isinstance(file_preset, str):
        raise UserError(f"preset must be a preset name (a string), got {file_preset!r}")
    for given, where in ((preset, "--preset"), (file_preset, f"preset in {spec_file or 'the spec'}")):
        if given is not None and not given.strip():
            raise UserError(f"{where} is empty: give a preset name (see 'lottery presets')")
    if preset is not None and file_preset is not None and preset != file_preset:
        raise UserError(
            f"{spec_file or 'the spec'} starts from preset {file_preset!r} but --preset {preset!r} was given: "
            "give one of them"
        )
    preset = preset or file_preset
    base = presets.get(preset).settings if preset else {}
    data = _merge(base, data)
    for text in overrides:
        path, value = parse_override(text)
        if path[0] == "preset":
            raise UserError("choose the preset with --preset NAME, not --set")
        if len(path) == 1:
            data = _merge(data, {path[0]: value})
        elif len(path) == 3:  # one entry of a table field: --set model.options.hidden=64
            group = data.get(path[0], {})
            table = group.get(path[1], {}) if isinstance(group, dict) else {}
            data = _merge(data, {path[0]: {path[1]: {**(table if isinstance(table, dict) else {}), path[2]: value}}})
        else:
            data = _merge(data, {path[0]: {path[1]: value}})
    from lottery.plugins import stamp

    return stamp(build(data)), preset


def to_dict(spec: ExperimentSpec, omit_defaults: bool = False) -> dict[str, Any]:
    """The spec as plain JSON-able data; with `omit_defaults`, only settings that differ from defaults."""
    default = ExperimentSpec()
    out: dict[str, Any] = {}
    for name in GROUPS:
        group = {}
        flat = getattr(GROUPS[name], "FLAT", None)
        for f in dataclasses.fields(getattr(spec, name)):
            value = getattr(getattr(spec, name), f.name)
            if f.name == flat:  # its entries are the group's own keys (those left out: their defaults)
                group.update({**GROUPS[name].flat_defaults(full=not omit_defaults), **value})
                continue
            if omit_defaults and value == getattr(getattr(default, name), f.name):
                continue
            group[f.name] = list(value) if isinstance(value, tuple) else value
        if group or not omit_defaults:
            out[name] = group
    if not (omit_defaults and spec.replicates == default.replicates):
        out["replicates"] = spec.replicates
    return out


def spec_hash(spec: ExperimentSpec) -> str:
    """A stable name for the experiment: settings left at their defaults do not enter it."""
    canonical = json.dumps(to_dict(spec, omit_defaults=True), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def to_toml(spec: ExperimentSpec) -> str:
    """TOML that `resolve` reads back to the same spec (None values are left out: they are defaults)."""

    def drop_none(d: dict[str, Any]) -> dict[str, Any]:
        return {k: drop_none(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}

    return tomli_w.dumps(drop_none(to_dict(spec)))
