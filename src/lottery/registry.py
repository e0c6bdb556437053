"""A name -> plug-in table, one per plug-in kind (models, datasets, strategies, presets); the built-in names of
the kinds users add plugins to (`provide_builtin`, `is_builtin`, `builtin_names`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from lottery.errors import unknown_name

T = TypeVar("T")


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


# The built-in names of each kind a plugin may add to ('model', 'dataset', 'loss'): a lookup of whether a name is
# built in and a list of names, given here by the kind's registry (models.registry, data.base, training.losses)
# as it is imported. lottery.plugins and the spec's validation ask here, below the registries that import them.
_builtin: dict[str, tuple[Callable[[str], bool], Callable[[], list[str]]]] = {}


def provide_builtin(kind: str, contains: Callable[[str], bool], names: Callable[[], list[str]]) -> None:
    """Record the registry of the built-in `kind`s: `contains(name)` says whether one is built in, `names()` lists
    them (one example per model family)."""
    _builtin[kind] = (contains, names)


def _lookups(kind: str) -> tuple[Callable[[str], bool], Callable[[], list[str]]]:
    if kind not in _builtin:  # `import lottery` imports every registry first, so only a broken import gets here
        raise RuntimeError(f"no registry of built-in {kind}s is imported (it calls lottery.registry.provide_builtin)")
    return _builtin[kind]


def is_builtin(kind: str, name: str) -> bool:
    """Whether `name` is a built-in model, dataset or loss (`kind`)."""
    return _lookups(kind)[0](name)


def builtin_names(kind: str) -> list[str]:
    """The built-in names of `kind` (models: one example name per family)."""
    return _lookups(kind)[1]()
