"""Name -> entry tables, one per kind: `Registry` (strategies, mask sources, presets, initializers, ...) and
`PluginRegistry`, the one registry of each kind users extend (models, datasets, losses): built-ins and third-party
plugins register through the same decorator (`lottery.register_model`, ...) with the same signature.

An entry's identity: code of the `lottery` package is versioned by the recipes' VERSIONS; any other code by the
hash of its source (`Plugin.source_hash`: its file, and the modules it imports from its own package or directory),
which `lottery.plugins.stamp` records in the spec.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import inspect
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from lottery.errors import UserError, unknown_name

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._items[name] = item
            return item

        return add

    def get(self, name: str) -> T:
        if name not in self._items:
            raise unknown_name(self.kind, name, self._items)
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


@dataclass(frozen=True)
class Plugin:
    """A registered model, dataset or loss: its kind, name (for a family, `pattern` matches every name it builds:
    `name` is an example), and factory."""

    kind: str
    name: str
    factory: Callable[..., Any]
    pattern: str | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The factory's return; a plugin's own failure (its options of the wrong type, ...) is one line naming it."""
        if self.builtin:
            return self.factory(*args, **kwargs)
        try:
            return self.factory(*args, **kwargs)
        except UserError:
            raise
        except Exception as error:  # noqa: BLE001  (the plugin's own code failed: one line, its error)
            raise UserError(f"{self.describe()} failed: {type(error).__name__}: {error}") from None

    def matches(self, name: str) -> bool:
        return name == self.name or (self.pattern is not None and re.fullmatch(self.pattern, name) is not None)

    @property
    def builtin(self) -> bool:
        """Shipped with lottery (its factory is defined in the `lottery` package): versioned, not hashed."""
        module = getattr(inspect.unwrap(self.factory), "__module__", "") or ""
        return module == "lottery" or module.startswith("lottery.")

    def takes(self, argument: str) -> bool:
        """Whether the factory's signature names `argument` (what it receives of lottery's own arguments)."""
        try:
            return argument in inspect.signature(self.factory).parameters
        except (TypeError, ValueError):
            return False

    @property
    def source_file(self) -> Path | None:
        """The file that defines the factory (None for one without a source file): of a functools.partial, its
        function's; of a callable instance, its class's."""
        target = inspect.unwrap(self.factory)
        while isinstance(target, functools.partial):
            target = inspect.unwrap(target.func)
        if not (inspect.isfunction(target) or inspect.isclass(target) or inspect.ismethod(target)):
            target = type(target)
        try:
            path = inspect.getsourcefile(target)
        except TypeError:
            return None
        return Path(path).resolve() if path else None

    def source_hash(self) -> str:
        """'sha256:<16 hex>' of the code that defines the factory (UserError where there is no file, or where it
        changed on disk since it was registered: the process runs the code it loaded): the
        defining file and, where it is a module of a package, every module of that package (its top-level package's
        directory, so helpers it imports from its own package count), and the modules imported beside a top-level
        module file (from its directory)."""
        path = self.source_file
        if path is None or not path.is_file():
            raise UserError(
                f"{self.describe()} has no source file (defined in an interactive session or by exec): its code "
                "cannot enter the identity of what it computes; define it in a .py file and import that"
            )
        digest = hashlib.sha256()
        for file in _own_code(path, getattr(inspect.unwrap(self.factory), "__module__", "") or ""):
            digest.update(f"{file.name}\0".encode() + file.read_bytes())
        current = "sha256:" + digest.hexdigest()[:16]
        loaded = _loaded_code.get((path, _qualname(self.factory)))
        if loaded is not None and loaded != current:
            raise UserError(
                f"the code of {self.describe()} changed on disk since it was imported (the process runs the old "
                "code): import it again in a new process"
            )
        return current

    def note_loaded(self) -> None:
        """Record the hash of the plugin's code as it is imported (a registration): a later `source_hash` that finds
        other code on disk refuses, as the process would compute with the code it loaded, not with the file's."""
        path = self.source_file
        if not self.builtin and path is not None and path.is_file():
            key = (path, _qualname(self.factory))
            _loaded_code.pop(key, None)  # the same definition imported again (a reload): its code now
            _loaded_code[key] = self.source_hash()

    def describe(self) -> str:
        if self.builtin:
            return f"built-in {self.kind} '{self.name}'"
        return f"plugin {self.kind} '{self.name}' ({self.source_file or repr(self.factory)})"


_loaded_code: dict[tuple[Path, str], str] = {}  # (source file, qualified name) -> its code's hash when registered


def _qualname(factory: Callable[..., Any]) -> str:
    return getattr(factory, "__qualname__", repr(factory))  # with the source file: the same definition


def _own_code(path: Path, module: str) -> list[Path]:
    """The source files a plugin's code is: `path`; for a module of a package, every .py file of its top-level
    package; for a top-level module, also the modules (and packages) it imports from its own directory."""
    top = module.split(".")[0]
    package = sys.modules.get(top) if "." in module else None
    package_file = getattr(package, "__file__", None)
    if package_file and Path(package_file).name == "__init__.py":
        return sorted(Path(package_file).resolve().parent.rglob("*.py"))
    files = {path}
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError):
        return [path]
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    for name in sorted(imported):
        first = name.split(".")[0]
        if (path.parent / f"{first}.py").is_file():
            files.add(path.parent / f"{first}.py")
        elif (path.parent / first / "__init__.py").is_file():
            files.update((path.parent / first).rglob("*.py"))
    return sorted(files)


class PluginRegistry(Registry[Plugin]):
    """The registry of one kind users extend: `register(name)` is the decorator built-ins and plugins both use; a
    name is looked up among the registered entries (exact names, then families' patterns), then the installed
    packages' entry points of `group` (loaded when a spec names one)."""

    def __init__(self, kind: str, field: str, group: str) -> None:
        super().__init__(kind)
        self.field, self.group = field, group  # the spec setting that names one; the entry-point group
        _kinds[kind] = self

    def register(self, name: str, *, pattern: str | None = None) -> Callable[[F], F]:  # type: ignore[override]
        """Decorator: register `factory` as the `kind` called `name` (with `pattern`: every name it fully matches,
        a family such as r'resnet(20|32|44|56|110)'). A plugin may not take a built-in's name; one name registered
        by two definitions is refused (the same definition again, a module imported twice, replaces itself)."""

        def add(factory: F) -> F:
            if not isinstance(name, str) or not name or not name.isprintable():
                raise UserError(f"a plugin {self.kind} needs a printable, non-empty name, got {name!r}")
            entry = Plugin(self.kind, name, factory, pattern)
            if not entry.builtin and self.is_builtin(name):
                built_in = f"has the name of a built-in {self.kind}: choose another name"
                raise UserError(f"plugin {self.kind} '{name}' {built_in}")
            old = self._items.get(name)
            if old is not None and (old.source_file, _qualname(old.factory)) != (entry.source_file, _qualname(factory)):
                also = old.source_file or repr(old.factory)
                raise UserError(f"{entry.describe()} is registered twice (also by {also})")
            self._items[name] = entry
            entry.note_loaded()
            return factory

        return add

    def _registered(self, name: str) -> Plugin | None:
        if name in self._items:
            return self._items[name]
        return next((entry for entry in self._items.values() if entry.matches(name)), None)

    def find(self, name: str) -> Plugin | None:
        """The entry that builds `name`: registered already, or loaded from its entry point; None if neither."""
        found = self._registered(name)
        if found is not None:
            return found
        try:
            points = importlib.metadata.entry_points(group=self.group, name=name)
        except Exception:  # noqa: BLE001  (broken metadata of some installed package: no entry points)
            return None
        for point in points:
            try:
                factory = point.load()
            except Exception as error:  # noqa: BLE001  (the plugin's own import failed: say which)
                where = f"entry point {point.value} of plugin {self.kind} '{name}'"
                raise UserError(f"{where} fails to load: {error}") from None
            self.register(name)(factory)
            return self._items[name]
        return None

    def get(self, name: str) -> Plugin:
        found = self.find(name)
        if found is None:
            raise self.unknown(name)
        return found

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._registered(name) is not None

    def is_builtin(self, name: str) -> bool:
        """Whether a built-in entry builds `name`."""
        return any(entry.builtin and entry.matches(name) for entry in self._items.values())

    def builtin_names(self) -> list[str]:
        """The built-in names (one example per family)."""
        return sorted(name for name, entry in self._items.items() if entry.builtin)

    def names(self) -> list[str]:
        """Every registered name (one example per family) and the installed entry points' names."""
        try:
            points = [p.name for p in importlib.metadata.entry_points(group=self.group)]
        except Exception:  # noqa: BLE001
            points = []
        return sorted({*self._items, *points})

    def unknown(self, name: str) -> UserError:
        """An unknown name: the valid ones (built in and plugins), the closest suggested."""
        if self.kind == "dataset" and name == API_DATASET:
            return UserError(
                f"dataset '{API_DATASET}' is the data of an experiment lottery.imp made (the Python API: its "
                "train_fn reads the data): run it again from Python, lottery.imp(..., directory=STORE)"
            )
        error = unknown_name(self.field, name, self.names())
        return UserError(f"{error}; a {self.kind} of your own: --import MODULE (see docs/extending.md)")

    def check(self, name: str, recorded: str | None) -> Plugin:
        """The entry that builds `name`, whose code still hashes to `recorded` (a process building it from a stored
        or transmitted spec: a Ray worker, a resumed run); built-ins are not hashed."""
        entry = self.get(name)
        if recorded is not None and not entry.builtin and entry.source_hash() != recorded:
            raise UserError(f"the code of {entry.describe()} changed since this experiment's spec was resolved")
        return entry


API_DATASET = "train_fn"  # dataset.name of a lottery.imp experiment (api/store.py): no command can load its data
_kinds: dict[str, PluginRegistry] = {}
models = PluginRegistry("model", "model", "lottery.models")
datasets = PluginRegistry("dataset", "dataset", "lottery.datasets")
losses = PluginRegistry("loss", "training.loss", "lottery.losses")


def of(kind: str) -> PluginRegistry:
    """The registry of `kind` ('model', 'dataset', 'loss')."""
    if kind not in _kinds:
        raise ValueError(f"plugin kind must be one of {tuple(_kinds)}, got {kind!r}")
    return _kinds[kind]


def is_builtin(kind: str, name: str) -> bool:
    """Whether `name` is a built-in model, dataset or loss (`kind`)."""
    return of(kind).is_builtin(name)


def builtin_names(kind: str) -> list[str]:
    """The built-in names of `kind` (models: one example name per family)."""
    return of(kind).builtin_names()
