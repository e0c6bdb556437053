"""User models, datasets and losses, by name in specs: registered in Python, through entry points, or `--import`.

A plugin module registers factories under names:

    @lottery.plugins.register_model("my_mlp")
    def my_mlp(input_shape, num_classes, hidden=64): ...      # -> any nn.Module; [model.options] as keywords

    @lottery.plugins.register_dataset("my_table")
    def my_table(rows=1000): ...                               # -> {"train": (x, y), "test": (x, y)}; [dataset.options]

    @lottery.plugins.register_loss("focal")
    def focal(output, target, reduction="mean"): ...           # like torch.nn.functional losses

and is loaded by `lottery run --import my_module spec.toml` (a dotted module name importable from the current
directory, or a path to a .py file), or found through the entry-point groups `lottery.models`,
`lottery.datasets` and `lottery.losses` of an installed package (the entry point's name is the plugin's name).

A plugin's code is part of the run's identity: `stamp` records a hash of the source file that defines each
plugin a spec names (`model.source_hash`, `dataset.source_hash`, `training.loss_source_hash`), so the experiment
hash changes with the code, and a run never reuses results computed by other code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lottery.errors import UserError, unknown_name
from lottery.registry import builtin_names, is_builtin

if TYPE_CHECKING:
    from lottery.spec.groups import ExperimentSpec

KINDS = ("model", "dataset", "loss")  # built-in names: lottery.registry.is_builtin, builtin_names
ENTRY_POINT_GROUPS = {"model": "lottery.models", "dataset": "lottery.datasets", "loss": "lottery.losses"}


@dataclass(frozen=True)
class Plugin:
    kind: str
    name: str
    factory: Callable[..., Any]

    @property
    def source_file(self) -> Path | None:
        """The file that defines the factory (None for one without a source file)."""
        try:
            path = inspect.getsourcefile(inspect.unwrap(self.factory))
        except TypeError:
            return None
        return Path(path).resolve() if path else None

    def source_hash(self) -> str:
        """'sha256:<16 hex>' of the code that defines the factory ('builtin:<qualname>' where there is no file): the
        defining file and, where it is a module of a package, every module of that package (its top-level package's
        directory, so helpers it imports from its own package count), and the modules imported beside a top-level
        module file (from its directory)."""
        path = self.source_file
        if path is None or not path.is_file():
            return f"builtin:{getattr(self.factory, '__qualname__', repr(self.factory))}"
        digest = hashlib.sha256()
        for file in _own_code(path, getattr(inspect.unwrap(self.factory), "__module__", "") or ""):
            digest.update(f"{file.name}\0".encode() + file.read_bytes())
        return "sha256:" + digest.hexdigest()[:16]

    def describe(self) -> str:
        return f"plugin {self.kind} '{self.name}' ({self.source_file or self.factory!r})"


def _own_code(path: Path, module: str) -> list[Path]:
    """The source files a plugin's code is: `path`; for a module of a package, every .py file of its top-level
    package; for a top-level module, also the modules (and packages) it imports from its own directory."""
    import ast
    import sys

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


_plugins: dict[str, dict[str, Plugin]] = {kind: {} for kind in KINDS}
_imported: set[str] = set()


def register(kind: str, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `factory` as the plugin `kind` ('model', 'dataset', 'loss') called `name`."""
    if kind not in KINDS:
        raise ValueError(f"plugin kind must be one of {KINDS}, got {kind!r}")

    def add(factory: Callable[..., Any]) -> Callable[..., Any]:
        if not isinstance(name, str) or not name or not name.isprintable():
            raise UserError(f"a plugin {kind} needs a printable, non-empty name, got {name!r}")
        if is_builtin(kind, name):
            raise UserError(f"plugin {kind} '{name}' has the name of a built-in {kind}: choose another name")
        plugin = Plugin(kind, name, factory)
        old = _plugins[kind].get(name)
        if old is not None and (old.source_file, _qualname(old.factory)) != (plugin.source_file, _qualname(factory)):
            raise UserError(f"{plugin.describe()} is registered twice (also by {old.source_file or old.factory!r})")
        _plugins[kind][name] = plugin  # the same definition again (a module imported twice) replaces itself
        return factory

    return add


def _qualname(factory: Callable[..., Any]) -> str:
    return getattr(factory, "__qualname__", repr(factory))  # with the source file: the same definition


def register_model(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: `factory(input_shape=..., num_classes=..., **[model.options]) -> nn.Module` as model `name`
    (it receives input_shape and num_classes only where its signature names them or takes **kwargs). The model
    is built under `torch.manual_seed(training.init_seed)`, so its own initialisation is seeded."""
    return register("model", name)


def register_dataset(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: `factory(**[dataset.options])` as dataset `name`, returning `{"train": (x, y), "test": (x, y)}`
    (optionally "val" and "num_classes"; each split a pair of tensors or a `TensorDataset`) or an `ImageData`."""
    return register("dataset", name)


def register_loss(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: `loss(output, target, reduction="mean")` as loss `name`; reduction is 'mean', 'sum' or 'none'
    (one loss per example), as for `torch.nn.functional` losses."""
    return register("loss", name)


def find(kind: str, name: str) -> Plugin | None:
    """The plugin `kind` called `name`: registered already, or loaded from its entry point; None if neither."""
    if name in _plugins[kind]:
        return _plugins[kind][name]
    try:
        points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUPS[kind], name=name)
    except Exception:  # noqa: BLE001  (broken metadata of some installed package: no entry points)
        return None
    for point in points:
        try:
            factory = point.load()
        except Exception as error:  # noqa: BLE001  (the plugin's own import failed: say which)
            raise UserError(f"entry point {point.value} of plugin {kind} '{name}' fails to load: {error}") from None
        register(kind, name)(factory)
        return _plugins[kind][name]
    return None


def names(kind: str) -> list[str]:
    """Registered plugin names and installed entry-point names of `kind`."""
    try:
        points = [p.name for p in importlib.metadata.entry_points(group=ENTRY_POINT_GROUPS[kind])]
    except Exception:  # noqa: BLE001
        points = []
    return sorted({*_plugins[kind], *points})


def import_modules(entries: Iterable[str]) -> tuple[str, ...]:
    """Import plugin modules (dotted names importable from the current directory, or paths to .py files);
    the entries in a form another process can import again (paths made absolute)."""
    done = []
    for entry in entries:
        done.append(_import(entry))
    return tuple(done)


def _import(entry: str) -> str:
    if entry.endswith(".py") or os.sep in entry or "/" in entry:
        path = Path(entry).expanduser().resolve()
        if not path.is_file():
            raise UserError(f"--import {entry}: no such Python file")
        if str(path) not in _imported:
            name = _module_name(path)
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise UserError(f"--import {entry}: not an importable Python file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # classes defined there find their source file (inspect) and pickle
            _run_import(entry, lambda: spec.loader.exec_module(module))
            _imported.add(str(path))
        return str(path)
    if not all(part.isidentifier() for part in entry.split(".")):
        raise UserError(f"--import {entry!r}: give a module name (my_models, pkg.models) or a path to a .py file")
    _run_import(entry, lambda: _import_name(entry))
    return entry


def _module_name(path: Path) -> str:
    """The name a plugin file is imported under: its stem, unless that names another module (a `matplotlib.py`
    given by path must not stand in for matplotlib for the rest of the process)."""
    stem = path.stem
    if stem.isidentifier() and stem not in sys.modules:
        try:
            found = importlib.util.find_spec(stem)
        except (ImportError, ValueError):
            found = None
        if found is None or (found.origin is not None and Path(found.origin).resolve() == path):
            return stem
    return f"_lottery_{stem}"


def _import_name(entry: str) -> None:
    """Import the dotted module `entry`: its top-level package or module from the current directory when it is there
    (else as Python finds it: installed, or on $PYTHONPATH). The current directory is searched only while that
    module runs, and after everything else, so that neither later imports (a `matplotlib.py` lying in the working
    directory) nor the module's own imports of installed packages are shadowed by the directory's files."""
    top = entry.partition(".")[0]
    here = os.getcwd()
    found = importlib.machinery.PathFinder.find_spec(top, [here]) if top not in sys.modules else None
    if found is None:
        importlib.import_module(entry)
        return
    with _searched_last(here):
        module = importlib.util.module_from_spec(found)
        sys.modules[top] = module  # as the import system does: the module finds itself while it runs
        try:
            if found.loader is not None:  # (None: a namespace package, a folder without __init__.py)
                found.loader.exec_module(module)
        except BaseException:
            del sys.modules[top]
            raise
        importlib.import_module(entry)  # a submodule of a package found here: through the package's own path


@contextmanager
def _searched_last(directory: str) -> Iterator[None]:
    """`directory` at the end of sys.path for the duration (a plugin module's imports of its sibling files)."""
    added = directory not in sys.path
    if added:
        sys.path.append(directory)
    try:
        yield
    finally:
        if added and directory in sys.path:
            sys.path.remove(directory)
        importlib.invalidate_caches()


def _run_import(entry: str, load: Callable[[], Any]) -> None:
    try:
        load()
    except UserError:
        raise
    except ModuleNotFoundError as error:
        raise UserError(f"--import {entry}: {error} (run from the directory holding it, or give a path)") from None
    except Exception as error:  # noqa: BLE001  (the plugin's own code failed: one line, its error)
        raise UserError(f"--import {entry} failed: {type(error).__name__}: {error}") from None


FIELDS = (("model", "model", "name", "source_hash"), ("dataset", "dataset", "name", "source_hash"),
          ("loss", "training", "loss", "loss_source_hash"))  # fmt: skip


def stamp(spec: ExperimentSpec) -> ExperimentSpec:
    """`spec` with the source hash of each plugin it names recorded (built-in names: unchanged, no hash). A hash
    already in the spec must match the code: a spec copied from a run directory refuses to run changed code under
    the old experiment's name."""
    groups = {}
    for kind, group_name, name_field, hash_field in FIELDS:
        group = getattr(spec, group_name)
        name, recorded = getattr(group, name_field), getattr(group, hash_field)
        if is_builtin(kind, name):
            continue  # (a recorded hash is refused by the spec's own validation)
        plugin = find(kind, name)
        if plugin is None:
            continue  # an unknown name is refused where it is used (Context.validate), with the valid names
        current = plugin.source_hash()
        if recorded is not None and recorded != current:
            raise UserError(
                f"{group_name}.{hash_field} = '{recorded}' but the code of {plugin.describe()} now hashes to "
                f"'{current}': remove the setting to run the changed code as a new experiment"
            )
        groups[group_name] = dataclasses.replace(group, **{hash_field: current})
    return dataclasses.replace(spec, **groups) if groups else spec


def unknown(kind: str, name: str) -> UserError:
    """An unknown model, dataset or loss name: the valid ones (built in and plugins), the closest suggested."""
    field = {"model": "model", "dataset": "dataset", "loss": "training.loss"}[kind]
    error = unknown_name(field, name, [*builtin_names(kind), *names(kind)])
    return UserError(f"{error}; a {kind} of your own: --import MODULE (see docs/plugins.md)")


def check(kind: str, name: str, recorded: str | None) -> Plugin:
    """The plugin `kind` `name` whose code still hashes to `recorded` (a process building it from a stored or
    transmitted spec: a Ray worker, a resumed run)."""
    plugin = find(kind, name)
    if plugin is None:
        raise unknown(kind, name)
    if recorded is not None and plugin.source_hash() != recorded:
        raise UserError(f"the code of {plugin.describe()} changed since this experiment's spec was resolved")
    return plugin
