"""Your own models, datasets, losses (and stability measures: `lottery.measures`) by name in specs: registered in
Python, through entry points, or `--import`. Built-ins register through the very same decorators.

A plugin module registers factories under names:

    @lottery.register_model("my_mlp")
    def my_mlp(input_shape, num_classes, hidden=64): ...      # -> any nn.Module; [model.options] as keywords

    @lottery.register_dataset("my_table")
    def my_table(rows=1000): ...                               # -> {"train": (x, y), "test": (x, y)}; [dataset.options]

    @lottery.register_loss("focal")
    def focal(output, target, reduction="mean"): ...           # like torch.nn.functional losses

(each also receives `spec`, its group of the spec, where its signature names it), and is loaded by
`lottery run --import my_module spec.toml` (a dotted module name importable from the current directory, or a path
to a .py file), or found through the entry-point groups `lottery.models`, `lottery.datasets` and `lottery.losses`
of an installed package (the entry point's name is the plugin's name). docs/extending.md has the contracts.

A plugin's code is part of the run's identity: `stamp` records a hash of the source that defines each plugin a spec
names (`model.source_hash`, `dataset.source_hash`, `training.loss_source_hash`), so the experiment hash changes
with the code, and a run never reuses results computed by other code. Built-ins are versioned by the recipes'
VERSIONS instead, so their specs carry no hash.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from lottery.errors import UserError
from lottery.registry import Plugin, datasets, losses, models, of

KINDS = ("model", "dataset", "loss")
SpecT = TypeVar("SpecT")

register_model = models.register
"""Decorator: `factory(input_shape=..., num_classes=..., spec=..., **[model.options]) -> nn.Module` as model `name`
(`pattern=`: every name it fully matches, a family). It receives input_shape, num_classes and spec (the ModelSpec)
only where its signature names them (input_shape and num_classes also through **kwargs). The model is built under
`torch.manual_seed(training.init_seed)`; a `lottery.models.Network` is then initialised by `model.init`."""

register_dataset = datasets.register
"""Decorator: `factory(spec=..., **[dataset.options])` as dataset `name`, returning `{"train": (x, y), "test": (x, y)}`
(optionally "val" and "num_classes"; each split a pair of tensors or a `TensorDataset`) or an `ImageData`; it
receives spec (the DatasetSpec) only where its signature names it."""

register_loss = losses.register
"""Decorator: `loss(output, target, reduction="mean")` as loss `name`; reduction is 'mean', 'sum' or 'none' (one loss
per example), as for `torch.nn.functional` losses; a loss whose signature names `spec` receives the TrainingSpec."""


def find(kind: str, name: str) -> Plugin | None:
    """The `kind` ('model', 'dataset', 'loss') that builds `name`: registered, or loaded from its entry point."""
    return of(kind).find(name)


def names(kind: str) -> list[str]:
    """The registered names of `kind` (one example per family) and the installed entry points' names."""
    return of(kind).names()


def unknown(kind: str, name: str) -> UserError:
    """An unknown model, dataset or loss name: the valid ones (built in and plugins), the closest suggested."""
    return of(kind).unknown(name)


def check(kind: str, name: str, recorded: str | None) -> Plugin:
    """The `kind` that builds `name`, whose code still hashes to `recorded` (built-ins: not hashed)."""
    return of(kind).check(name, recorded)


_imported: dict[str, tuple[str, bytes]] = {}  # a plugin file imported by path -> (module name, its content then)


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
        content, before = path.read_bytes(), _imported.get(str(path))
        if before is None or before[1] != content:  # a file changed since imported runs again: its code now
            name = _module_name(path) if before is None else before[0]
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise UserError(f"--import {entry}: not an importable Python file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # classes defined there find their source file (inspect) and pickle
            _run_import(entry, lambda: spec.loader.exec_module(module))
            _imported[str(path)] = (name, content)
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
    except SystemExit as error:  # (exit status 0 would end `lottery run` as a success that ran nothing)
        why = f"exited (sys.exit({error.code!r})) while imported: a plugin module defines and registers, nothing more"
        raise UserError(f"--import {entry} {why}") from None
    except ModuleNotFoundError as error:
        raise UserError(f"--import {entry}: {error} (run from the directory holding it, or give a path)") from None
    except Exception as error:  # noqa: BLE001  (the plugin's own code failed: one line, its error)
        raise UserError(f"--import {entry} failed: {type(error).__name__}: {error}") from None


FIELDS = (
    ("model", "model", "name", "source_hash"),
    ("dataset", "dataset", "name", "source_hash"),
    ("loss", "training", "loss", "loss_source_hash"),
)


def stamp(spec: SpecT) -> SpecT:
    """`spec` (an ExperimentSpec) with the source hash of each plugin it names recorded (built-in names: unchanged,
    no hash). A hash already in the spec must match the code: a spec copied from a run directory refuses to run
    changed code under the old experiment's name."""
    groups = {}
    for kind, group_name, name_field, hash_field in FIELDS:
        group = getattr(spec, group_name)
        name, recorded = getattr(group, name_field), getattr(group, hash_field)
        plugin = find(kind, name)
        if plugin is None or plugin.builtin:
            continue  # an unknown name is refused where it is used (Context.validate), with the valid names
        current = plugin.source_hash()
        if recorded is not None and recorded != current:
            raise UserError(
                f"{group_name}.{hash_field} = '{recorded}' but the code of {plugin.describe()} now hashes to "
                f"'{current}': remove the setting to run the changed code as a new experiment"
            )
        groups[group_name] = dataclasses.replace(group, **{hash_field: current})
    return dataclasses.replace(spec, **groups) if groups else spec  # type: ignore[type-var]
