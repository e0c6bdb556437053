"""The engine's self-describing extension points: a mask source (`[masks]`, lottery.pruning.sources) and a control
kind (`[controls]`, lottery.controls) each describe themselves in ONE registration, in their own module, which
everything else reads: the spec's validation and its flat `[masks]` option keys, the seed table
(`lottery.seeding.STREAMS`), the recipes, the engine, `lottery.imp`, the figures and the CLI. The built-ins use
exactly the decorators a plugin uses (`lottery.register_mask_source`, `lottery.register_control`; a plugin file is
loaded with `lottery run --import FILE`). docs/extending/mask-source.md and docs/extending/control.md show a complete
minimal example of each.

This module holds the tables only: the spec validates against them without importing the engine.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from lottery import seeding
from lottery.errors import UserError, unknown_name
from lottery.registry import Plugin, Registry

F = TypeVar("F", bound=Callable[..., Any])
SCORE_MODES = ("train", "eval")
RESERVED_OPTIONS = (  # MasksSpec's own settings: no source option may take their names
    *("sources", "densities", "ablations", "at", "scope", "seeds", "rounds", "schedule", "score_mode"),
    "source_options",
)
MASK_ENGINE_SOURCES = ("early_bird",)  # traced by the [masks] engine itself (experiments/masks.py), not a scorer
MASK_ABLATIONS = ("shuffle", "reinit", "invert")  # a [masks] kind '<source>_<ablation>' (experiments/masks.py)
ENGINE_KINDS = ("imp", "dense", "rigl", "set", "gmp", "rigl_rewound", "set_rewound", "gmp_rewound")  # results' kinds
# of the engine's own runs (IMP, the dense network, lottery.dynamic's methods and their retrained masks): a mask
# source or control kind names rows of the same `kind` column, so it may take none of them, nor another's name


_reading: list[bool] = []  # inside `reading_stored()`


@contextmanager
def reading_stored() -> Iterator[None]:
    """While a stored spec is read back by a reader (`lottery show`, `report`, `export`, `ls`): the names and option
    keys of mask sources and control kinds that no module of this process registered (a plugin's, run with
    --import) are kept as they are, unchecked, as a plugin model's name is. Running them needs the plugin."""
    _reading.append(True)
    try:
        yield
    finally:
        _reading.pop()


def reading() -> bool:
    """Whether a stored spec is being read back (`reading_stored`)."""
    return bool(_reading)


def known(name: str, registered: Iterable[str]) -> bool:
    """Whether a spec may name `name` among `registered` names: one of them, or any while a stored spec is read."""
    return name in tuple(registered) or bool(_reading)


def _is_builtin(fn: Callable[..., Any]) -> bool:
    return (getattr(fn, "__module__", "") or "").startswith("lottery.")


def _same_definition(a: Callable[..., Any], b: Callable[..., Any]) -> bool:
    """One definition registered again (a plugin module imported twice): the same module, qualified name and source
    file (a notebook cell run again with other code is another file of the same module)."""
    key = ("__module__", "__qualname__")
    same_file = Plugin("extension", "", a).source_file == Plugin("extension", "", b).source_file
    return same_file and all(getattr(a, k, None) == getattr(b, k, None) for k in key)


# -- mask sources --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaskSource:
    """A registered mask source: `score(ScoreInput) -> {name: scores}` (higher = keep); `options`, a dataclass whose
    fields are the source's settings, flat keys of `[masks]` (defaults, types and validation from it: a
    `validate(self)` method raising UserError, if it has one), given to the source as `ScoreInput.settings`; the seed
    stream of `masks.<name>`; whether it needs training batches (`masks.snip_batches` of them: its options must then
    have the `snip_batches` field); its default number of scoring rounds (1: one-shot; SynFlow: 100, exponential
    schedule); and the mode the model scores in by default ('train': batch statistics, dropout active; 'eval')."""

    name: str
    score: Callable[..., Any]
    stream: int
    options: type | None = None
    needs_data: bool = False
    default_rounds: int = 1
    default_mode: str = "train"

    def option_types(self) -> dict[str, tuple[Any, Any]]:
        """{option key: (type, default)} of the source's options dataclass."""
        if self.options is None:
            return {}
        hints = typing.get_type_hints(self.options)
        return {f.name: (hints[f.name], _default(f)) for f in dataclasses.fields(self.options)}

    def settings(self, given: dict[str, Any]) -> Any:
        """The options dataclass with `given`'s values for its fields (the rest: defaults); None without options."""
        if self.options is None:
            return None
        return self.options(**{key: given[key] for key in self.option_types() if key in given})

    @property
    def builtin(self) -> bool:
        return _is_builtin(self.score)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise ValueError(f"mask source option {f.name!r} needs a default (a [masks] setting left out takes it)")


mask_sources: Registry[MaskSource] = Registry("mask source")


def register_mask_source(
    name: str,
    *,
    stream: int,
    options: type | None = None,
    needs_data: bool = False,
    default_rounds: int = 1,
    default_mode: str = "train",
) -> Callable[[F], F]:
    """Decorator: `score(inp: ScoreInput) -> {parameter name: float64 scores}` (higher = keep) as the mask source
    `name` of `[masks] sources`. `stream`: the id of its seed stream `masks.<name>` (unique among all purposes,
    `lottery.seeding.STREAMS`; a taken id raises). `options`: a dataclass of its settings, each a flat key of `[masks]`
    with a default (`inp.settings` holds the spec's values). `needs_data`: it scores on `masks.snip_batches` seeded
    training batches (`inp.batches`). `default_rounds`, `default_mode`: see `MaskSource`."""
    if default_mode not in SCORE_MODES:
        raise ValueError(f"default_mode must be one of {SCORE_MODES}, got {default_mode!r}")
    if not isinstance(default_rounds, int) or default_rounds < 1:
        raise ValueError(f"default_rounds must be an integer >= 1, got {default_rounds!r}")
    if options is not None and not dataclasses.is_dataclass(options):
        raise ValueError(f"the options of mask source {name!r} must be a dataclass, got {options!r}")

    def add(score: F) -> F:
        _check_name("mask source", name)
        if name in MASK_ENGINE_SOURCES or name.endswith(tuple(f"_{a}" for a in MASK_ABLATIONS)):
            raise ValueError(f"mask source {name!r}: the name of the engine's source or of an ablation's kind")
        source = MaskSource(name, score, stream, options, needs_data, default_rounds, default_mode)
        if needs_data and "snip_batches" not in source.option_types():
            raise ValueError(f"mask source {name!r} needs data: its options need the field snip_batches: int = 1")
        for key, (kind, default) in source.option_types().items():
            if key in RESERVED_OPTIONS or key.startswith("early_bird"):
                raise ValueError(f"mask source {name!r}: option {key!r} is a [masks] setting of the engine")
            other = option_types().get(key)
            if other is not None and other != (kind, default):
                raise ValueError(
                    f"mask source {name!r}: option {key!r} is {kind} = {default!r}, another source's is {other[0]} = "
                    f"{other[1]!r} (a [masks] key has one type and default)"
                )
        _add(mask_sources, name, source, score, f"masks.{name}", stream)
        return score

    return add


def option_types() -> dict[str, tuple[Any, Any]]:
    """{key: (type, default)} of every registered mask source's options: the flat option keys of `[masks]`."""
    out: dict[str, tuple[Any, Any]] = {}
    for name in mask_sources:
        out.update(mask_sources.get(name).option_types())
    return out


def builtin_option_defaults() -> dict[str, Any]:
    """{key: default} of the built-in sources' options (what a spec written in full lists)."""
    out: dict[str, Any] = {}
    for name in mask_sources:
        source = mask_sources.get(name)
        if source.builtin:
            out.update({key: default for key, (_, default) in source.option_types().items()})
    return out


def check_options(given: dict[str, Any]) -> dict[str, Any]:
    """`given` (flat [masks] option values, already of their types) validated by every source that reads them, with
    the values equal to their default left out (a default never enters the spec's hash). UserError: an unknown key."""
    known = option_types()
    unregistered = {key: value for key, value in given.items() if key not in known and _reading}  # (a plugin's)
    for key in given:
        if key not in known and key not in unregistered:
            error = unknown_name("setting in [masks]", key, known)
            raise UserError(f"{error}; a plugin mask source's option needs its --import")
    for name in mask_sources:
        source = mask_sources.get(name)
        if source.options is not None and any(key in given for key in source.option_types()):
            settings = source.settings(given)
            if hasattr(settings, "validate"):
                settings.validate()
    kept = {key: value for key, value in given.items() if key in unregistered or value != known[key][1]}
    return dict(sorted(kept.items()))


# -- control kinds -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ControlKind:
    """A registered control kind: `start(ControlInput) -> ControlStart` makes its mask and start weights from the IMP
    level's mask, W_k (and the optimizer state at k), W_0, the fresh weights of a seed, and its derived seed; the seed
    stream of `control.<name>`; its label, colour map and line style in figures; whether `stability.controls` may
    analyse it; whether it starts from W_k (stability to pruning is defined for it)."""

    name: str
    start: Callable[..., Any]
    stream: int
    label: str
    colormap: str = "Greys"
    linestyle: str = "-."
    stability: bool = False
    from_rewound: bool = True

    @property
    def builtin(self) -> bool:
        return _is_builtin(self.start)


control_kinds: Registry[ControlKind] = Registry("control kind")


def register_control(
    name: str,
    *,
    stream: int,
    label: str | None = None,
    colormap: str = "Greys",
    linestyle: str = "-.",
    stability: bool = False,
    from_rewound: bool = True,
) -> Callable[[F], F]:
    """Decorator: `start(inp: ControlInput) -> ControlStart` as the control kind `name` of `[controls] kinds` (and
    `lottery.imp(controls=...)`, `lottery export --kind`, the figures). `stream`: the id of its seed stream
    `control.<name>` (unique, `lottery.seeding.STREAMS`). `label`, `colormap` (a matplotlib colour map name),
    `linestyle`: how figures draw it. `stability`: `stability.controls` may name it. `from_rewound`: it trains from
    W_k (not from fresh weights), so its stability to pruning is defined."""

    def add(start: F) -> F:
        _check_name("control kind", name)
        if name in ("imp", "dense"):
            raise ValueError(f"control kind {name!r} has the name of IMP's own runs: choose another")
        shown = label or name.replace("_", " ")
        if not _is_builtin(start):
            check_drawable(f"control kind '{name}'", shown, colormap, linestyle)
        kind = ControlKind(name, start, stream, shown, colormap, linestyle, stability, from_rewound)
        _add(control_kinds, name, kind, start, f"control.{name}", stream)
        return start

    return add


# -- shared --------------------------------------------------------------------------------------------------------


def check_drawable(what: str, label: object, colormap: str | None = None, linestyle: str | None = None) -> None:
    """UserError unless figures can draw `what` with these: a label string whose math (between '$' signs)
    matplotlib's mathtext parses, a registered matplotlib colour map, a line style matplotlib knows."""
    if not isinstance(label, str):
        raise UserError(f"{what} needs a label string, got {label!r}")
    if "$" not in label and colormap is None and linestyle is None:
        return
    import matplotlib
    from matplotlib import cbook
    from matplotlib.lines import Line2D
    from matplotlib.mathtext import MathTextParser

    try:
        if cbook.is_math_text(label):
            MathTextParser("path").parse(label, dpi=72)
    except ValueError as error:
        why = str(error).strip().splitlines()[-1]
        raise UserError(f"{what}: label {label!r} is not matplotlib mathtext ({why})") from None
    if colormap is not None and colormap not in matplotlib.colormaps:
        raise UserError(f"{what}: colormap {colormap!r} is not a matplotlib colour map (e.g. 'Greys', 'Reds')")
    try:
        if linestyle is not None:
            Line2D([], [], linestyle=linestyle)
    except ValueError:
        raise UserError(
            f"{what}: linestyle {linestyle!r} is not a matplotlib line style ('-', '--', '-.', ':')"
        ) from None


def run_plugin(what: str, fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)`; where `fn` is a plugin's (not the lottery package's), its own failure is one line naming `what`
    (e.g. "mask source 'jittered_magnitude'"), as a plugin model's or measure's is."""
    if _is_builtin(fn):
        return fn(*args)
    try:
        return fn(*args)
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001  (the plugin's own code failed: one line, its error)
        raise UserError(f"{what} failed: {type(error).__name__}: {error}") from None


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not name.isidentifier() or not name.isascii() or name != name.lower():
        raise ValueError(f"a {kind} needs a lower-case ASCII identifier as its name, got {name!r}")


def _check_kind(registry: Registry[Any], name: str) -> None:
    """A new mask source's or control kind's `name` is no other kind of results rows: none of the engine's, no mask
    source's or control kind's of the other registry, no '<source>_<ablation>' of a mask source."""
    kinds = {*ENGINE_KINDS, *(f"{s}_{a}" for s in mask_sources for a in MASK_ABLATIONS)}
    kinds |= set(control_kinds if registry is mask_sources else mask_sources)
    new = [name, *(f"{name}_{a}" for a in MASK_ABLATIONS)] if registry is mask_sources else [name]
    taken = next((kind for kind in new if kind in kinds or kind in control_kinds), None)
    if taken is not None:
        raise ValueError(f"{registry.kind} {name!r}: '{taken}' already names another kind of runs: choose another name")


def _add(registry: Registry[Any], name: str, item: Any, fn: Callable[..., Any], purpose: str, stream: int) -> None:
    """Add `item` under `name`, and its seed stream; the same definition again (a module imported twice) is the one
    registered already, another definition of the name raises."""
    if name not in registry and not _is_builtin(fn):  # (built-ins' kinds meet in a spec: ExperimentSpec.validate)
        _check_kind(registry, name)
    if name in registry:
        old = registry.get(name)
        old_fn = getattr(old, "score", None) or old.start
        if not _same_definition(old_fn, fn) or old.stream != stream:
            where = getattr(old_fn, "__module__", "?")
            raise UserError(f"{registry.kind} '{name}' is registered twice (also by {where})")
        return
    seeding.add_stream(purpose, stream)  # raises, adding nothing, where the id is taken
    registry.register(name)(item)
    Plugin("extension", name, fn).note_loaded()  # its code as loaded (the recipes' `code`: never other code)
