"""What the user's code contributes to an API experiment, as a hash: `fingerprint(train_fn, model, config)`.

The store names an API experiment by this hash, so that changed code or settings is a new experiment, never the
old results (the CLI's plugins are named by their source's hash the same way). It covers

- `train_fn`'s code (bytecode, constants and names, nested functions' code included), its default arguments, the
  values in its closure and the module-level names its code reads, recursively through the functions it calls;
  values are hashed by content: numbers, strings, containers, tensors, dtypes, devices, torch generators' state,
  `nn.Module`s (class and state dict), functions, modules (by name), classes (by qualified name), and other
  objects through their attributes (`__dict__`);
- the model: its class, its structure (`repr`), its initial weights W_0, and the code of the methods its own classes
  (and its submodules', not torch's) define (`forward`, `reset_parameters`, ...; not the globals those read);
- `config`: a mapping of plain values the user passes for what the hash cannot see (data read from disk, ...).

A value it cannot hash (an object without `__dict__`, e.g. a file handle or an iterator) is listed in
`Fingerprint.unknown`; `imp(directory=)` refuses such a `train_fn` unless `config=` says what determines it.
"""

from __future__ import annotations

import builtins
import dis
import functools
import hashlib
import importlib.metadata
import json
import math
import sysconfig
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lottery.errors import UserError

MAX_DEPTH = 12  # objects nested deeper than this are not followed (listed as unknown)


@dataclass
class Fingerprint:
    digest: str
    unknown: list[str] = field(default_factory=list)  # what could not be hashed: 'closure value loader (DataLoader)'


class _Hasher:
    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.unknown: list[str] = []
        self.seen: dict[int, int] = {}  # id -> order of first visit (cycles, shared objects)

    def put(self, *parts: Any) -> None:
        for part in parts:
            self.h.update(str(part).encode() + b"\x00")

    def value(self, value: Any, where: str, depth: int = 0) -> None:
        if value is None or isinstance(value, (bool, int, str, bytes, complex)):
            self.put(type(value).__name__, repr(value))
            return
        if isinstance(value, float):
            self.put("float", value.hex() if math.isfinite(value) else repr(value))
            return
        if depth > MAX_DEPTH:
            self.unknown.append(f"{where} (nested too deep)")
            return
        key = id(value)
        if key in self.seen:
            self.put("seen", self.seen[key])
            return
        self.seen[key] = len(self.seen)
        if isinstance(value, torch.Tensor):
            data = value.detach().cpu().contiguous()
            self.put("tensor", data.dtype, tuple(data.shape))
            self.h.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")  # 0-dim too
        elif isinstance(value, (torch.dtype, torch.device)):
            self.put("torch", value)
        elif isinstance(value, torch.Generator):
            self.value(value.get_state(), f"{where} (generator state)", depth + 1)
        elif isinstance(value, (list, tuple)):
            self.put(type(value).__name__, len(value))
            for i, item in enumerate(value):
                self.value(item, f"{where}[{i}]", depth + 1)
        elif isinstance(value, (set, frozenset)):
            self.put("set", len(value))
            for item in sorted(value, key=repr):
                self.value(item, f"{where} item", depth + 1)
        elif isinstance(value, Mapping):
            self.put("mapping", len(value))
            for k, v in value.items():
                self.value(k, f"{where} key", depth + 1)
                self.value(v, f"{where}[{k!r}]", depth + 1)
        elif isinstance(value, functools.partial):  # its function and arguments live in slots, not __dict__
            self.put("partial")
            self.value(value.func, f"{where}.func", depth + 1)
            self.value(value.args, f"{where}.args", depth + 1)
            self.value(value.keywords, f"{where}.keywords", depth + 1)
        elif isinstance(value, types.ModuleType):
            self.put("module", value.__name__)
        elif isinstance(value, types.MethodType):
            self.function(value.__func__, where, depth + 1)
            self.value(value.__self__, f"{where}.__self__", depth + 1)
        elif isinstance(value, (types.FunctionType, types.CodeType)):
            self.function(value, where, depth + 1)
        elif isinstance(value, (type, types.BuiltinFunctionType, types.BuiltinMethodType)):
            self.put("named", getattr(value, "__module__", None), getattr(value, "__qualname__", repr(value)))
        elif isinstance(value, nn.Module):
            self.put("module", type(value).__module__, type(value).__qualname__, repr(value))
            self.value(value.state_dict(), f"{where}.state_dict()", depth + 1)
            for cls in dict.fromkeys(c for m in value.modules() for c in type(m).__mro__):
                self.methods(cls, where, depth + 1)
        elif hasattr(value, "__array_interface__") and hasattr(value, "tobytes"):  # numpy arrays
            self.put("array", getattr(value, "dtype", ""), getattr(value, "shape", ""))
            self.h.update(value.tobytes())
        elif hasattr(value, "__dict__") or _slots(value):
            self.put("object", type(value).__module__, type(value).__qualname__)
            self.value(getattr(value, "__dict__", {}), f"{where} ({type(value).__name__})", depth + 1)
            for name in _slots(value):
                self.put("slot", name)
                self.value(getattr(value, name, None), f"{where}.{name}", depth + 1)
        else:
            self.unknown.append(f"{where} ({type(value).__name__})")

    def function(self, fn: types.FunctionType | types.CodeType, where: str, depth: int) -> None:
        if isinstance(fn, types.FunctionType) and _is_library(fn):  # torch's, the standard library's: by name
            top = (fn.__module__ or "").partition(".")[0]
            self.put("library", fn.__module__, fn.__qualname__, _version(top))
            return
        code = fn if isinstance(fn, types.CodeType) else fn.__code__
        self.code(code, where, depth)
        if isinstance(fn, types.CodeType):
            return
        self.value(fn.__defaults__, f"{where} defaults", depth + 1)
        self.value(fn.__kwdefaults__, f"{where} keyword defaults", depth + 1)
        for name, cell in zip(code.co_freevars, fn.__closure__ or ()):
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell (a name assigned later)
                contents = None
            self.put("free", name)
            self.value(contents, f"closure value {name!r} of {code.co_name}", depth + 1)
        for name in _global_names(code):
            if name in fn.__globals__:
                self.put("global", name)
                self.value(fn.__globals__[name], f"global {name!r} of {code.co_name}", depth + 1)
            elif not hasattr(builtins, name):
                self.put("missing global", name)

    def methods(self, cls: type, where: str, depth: int) -> None:
        """The code of the methods a user's class defines (its forward, its reset_parameters, ...), so that a changed
        model class is a new experiment; a library's class (torch's, lottery's) by name."""
        functions = {}
        for name, attr in vars(cls).items():
            attr = attr.__func__ if isinstance(attr, (staticmethod, classmethod)) else attr
            attr = attr.fget if isinstance(attr, property) else attr
            if isinstance(attr, types.FunctionType):
                functions[name] = attr
        if not functions or any(_is_library(fn) for fn in functions.values()):
            self.put("class", cls.__module__, cls.__qualname__)
            return
        for name in sorted(functions):
            self.put("method", cls.__qualname__, name)
            self.code(functions[name].__code__, f"{where} {cls.__qualname__}.{name}", depth)

    def code(self, code: types.CodeType, where: str, depth: int) -> None:
        self.put("code", code.co_name, code.co_argcount, code.co_kwonlyargcount, code.co_flags)
        self.h.update(code.co_code)
        self.put(code.co_names, code.co_varnames, code.co_freevars)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                self.code(const, f"{where}.{const.co_name}", depth + 1)
            else:
                self.value(const, f"{where} constant", depth + 1)


def _slots(value: Any) -> list[str]:
    """The `__slots__` names of a Python class's instance (none for classes written in C)."""
    names: list[str] = []
    for cls in type(value).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        names += [slots] if isinstance(slots, str) else [n for n in slots if n not in ("__dict__", "__weakref__")]
    return names


def _is_library(fn: types.FunctionType) -> bool:
    """A function of an installed package or of the standard library (not the user's own code)."""
    filename = fn.__code__.co_filename
    if any(part in filename for part in ("site-packages", "dist-packages")):
        return True
    standard = sysconfig.get_paths()["stdlib"]
    return filename.startswith(standard) or (fn.__module__ or "").partition(".")[0] in ("torch", "lottery")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return ""


def _global_names(code: types.CodeType) -> list[str]:
    """The module-level names `code` (and the code nested in it) reads."""
    names = []
    for instruction in dis.get_instructions(code):
        if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME") and isinstance(instruction.argval, str):
            names.append(instruction.argval)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names += _global_names(const)
    return sorted(set(names))


def plain_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """`config` as a JSON-able dict of strings, booleans, integers, finite numbers, lists and tables of these."""
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise UserError(f"imp: config= must be a mapping of settings, got {type(config).__name__}")

    def check(value: Any, name: str) -> Any:
        if isinstance(value, (str, bool, int)) or (isinstance(value, float) and math.isfinite(value)):
            return value
        if isinstance(value, (list, tuple)):
            return [check(v, f"{name}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, Mapping):
            return {str(k): check(v, f"{name}.{k}") for k, v in value.items()}
        raise UserError(
            f"imp: config value {name} = {value!r} must be a string, number, boolean, or a list or mapping of these"
        )

    return {str(k): check(v, str(k)) for k, v in config.items()}


def digest_tensors(tensors: Mapping[str, torch.Tensor]) -> str:
    """A hash of named tensors (names, dtypes, shapes, values)."""
    hasher = _Hasher()
    hasher.value(dict(tensors), "tensors")
    return hasher.h.hexdigest()[:20]


def model_identity(model: nn.Module) -> str:
    """The model's class, structure and current weights (W_0), hashed."""
    hasher = _Hasher()
    hasher.value(model, "model")
    return hasher.h.hexdigest()[:20]


def fingerprint(train_fn: Any, model: nn.Module, config: Mapping[str, Any] | None) -> Fingerprint:
    """The hash of what `train_fn`, `model` and `config` contribute (see the module docstring)."""
    hasher = _Hasher()
    hasher.put("model", model_identity(model))
    hasher.put("config", json.dumps(plain_config(config), sort_keys=True))
    if isinstance(train_fn, (types.FunctionType, types.MethodType, functools.partial)):
        hasher.value(train_fn, "train_fn")
    elif callable(train_fn) and (hasattr(train_fn, "__dict__") or _slots(train_fn)):  # its __call__ and state
        hasher.value(type(train_fn).__call__, "train_fn.__call__")
        hasher.value(train_fn, f"train_fn ({type(train_fn).__name__})")
    else:
        hasher.unknown.append(f"train_fn ({type(train_fn).__name__})")
    return Fingerprint(hasher.h.hexdigest()[:20], hasher.unknown)
