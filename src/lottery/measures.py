"""Stability measures: what is compared between two trained networks, one registration each.

A measure is a pair function (`Pair` -> a number, or None where it is undefined) registered with its name, label,
group and column by `register_measure`, the decorator the built-ins below and plugins alike use:

    @lottery.register_measure("cosine", label="cosine similarity", group="distance", pruning=True)
    def cosine(pair: lottery.measures.Pair) -> float: ...

The engine (experiments/stability.py) computes every registered measure for every pair of copies trained with
different data orders (`data_order`), and those with `pruning=True` also for every pair of the full network and its
subnetwork (`pruning`); each value is stored under the measure's column in the pair (analysis.json,
results.json), summarised over pairs (mean, min, max), written to stability.csv and logged to the trackers, and
the report shows it. Readers find the columns in the data (`present`), so a report of an experiment whose plugin
measure is not imported still shows it, under its column name.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from torch import Tensor

from lottery.analysis import barrier, distances
from lottery.analysis.function_space import disagreement, jaccard, mean_kl
from lottery.errors import UserError
from lottery.extension_points import check_drawable
from lottery.pruning import Mask
from lottery.registry import Registry

PARTS = ("data_order", "pruning")  # copies with different data orders; the full network vs its subnetwork
GROUPS = ("distance", "function space", "error barrier", "loss barrier", "mask")  # the built-ins' (any string goes)
SUMMARY_KEYS = ("pairs", "stable", "stable_mean_barrier")  # a part's summary keys that are not measures
KEYS = ("replicate", "rewind_iteration", "level", "kind", "density", "measure", "a", "b")  # a pair row's keys
RESERVED = (*SUMMARY_KEYS, *KEYS, "full", "subnetwork", "curve", "target_density")  # no measure's column


@dataclass
class Trained:
    """One network of a pair: its final and start weights, its test-set log-probabilities and the mask the next
    IMP level would keep (None without IMP levels), both computed once, when a measure first asks."""

    final: dict[str, Tensor]
    start: dict[str, Tensor]
    predict: Callable[[], Tensor] = field(repr=False)
    prune: Callable[[], Mask | None] = field(repr=False)

    @cached_property
    def log_probabilities(self) -> Tensor:
        """log softmax of its outputs on the test set (N, classes), float64 on the CPU."""
        return self.predict()

    @cached_property
    def next_mask(self) -> Mask | None:
        return self.prune()


@dataclass
class Pair:
    """Two trained networks compared: copies a and b (data order), or the full network a and its subnetwork b
    (pruning). `mask`: the coordinates distances cover (stability.distance_params); `reference`: the full network's
    final weights, which normalise distances; `curve`: the linear interpolation a -> b (`alpha`, `test_error`,
    `train_error`, `test_loss`, `train_loss`; data order only, else None)."""

    part: str
    a: Trained
    b: Trained
    mask: Mask
    reference: dict[str, Tensor]
    curve: dict[str, Any] | None = None

    @cached_property
    def distances(self) -> dict[str, float]:
        """`lottery.distances(a, b, mask, reference)`: l2, angle_degrees, normalized_l2."""
        return distances(self.a.final, self.b.final, self.mask, reference=self.reference)

    def isolated(self) -> Pair:
        """A copy of the pair (its tensors cloned) for a plugin's measure: what it changes in place (`w -= ...`)
        reaches neither the other measures nor the pairs and curves that share these networks."""
        return Pair(
            self.part,
            _isolated(self.a),
            _isolated(self.b),
            Mask(_clone(self.mask)),
            _clone(self.reference),
            copy.deepcopy(self.curve),
        )


def _clone(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {name: value.clone() for name, value in tensors.items()}


def _isolated(trained: Trained) -> Trained:
    def prune() -> Mask | None:
        mask = trained.next_mask
        return None if mask is None else Mask(_clone(mask))

    return Trained(_clone(trained.final), _clone(trained.start), lambda: trained.log_probabilities.clone(), prune)


@dataclass(frozen=True)
class Measure:
    """A registered measure: `column` is its key in each pair and summary (analysis.json, results.json) and its
    stability.csv column; `tag` names it in trackers (`stability/<kind>_k<k>/<tag>`, with `_data_order` and
    `_pruning` appended for measures of both parts); `figure`: drawn against the rewind iteration in the report."""

    name: str
    pair: Callable[[Pair], float | None]
    label: str
    group: str
    column: str
    pruning: bool = False
    tag: str = ""
    figure: bool = True

    @property
    def builtin(self) -> bool:
        module = getattr(inspect.unwrap(self.pair), "__module__", "") or ""
        return module == "lottery" or module.startswith("lottery.")

    def parts(self) -> tuple[str, ...]:
        return PARTS if self.pruning else PARTS[:1]

    def tags(self) -> list[str]:
        """Its names in trackers, one per part: the tag, or `<tag>_data_order` and `<tag>_pruning`."""
        return [self.tag] if not self.pruning else [f"{self.tag}_{part}" for part in PARTS]

    def value(self, pair: Pair) -> float | None:
        """The measure of `pair`; a plugin's failure is one line naming the measure."""
        if self.builtin:
            return self.pair(pair)
        try:
            value = self.pair(pair.isolated() if isinstance(pair, Pair) else pair)
            return None if value is None else float(value)
        except Exception as error:  # noqa: BLE001  (the plugin's own code failed: one line, its error)
            raise UserError(f"stability measure '{self.name}' failed: {type(error).__name__}: {error}") from None


class Measures(Registry[Measure]):
    """The registry of stability measures, in registration order (built-ins first)."""

    def add(self, measure: Measure) -> None:
        old = self._items.get(measure.name)
        if old is not None and old.builtin and not measure.builtin:
            raise UserError(f"stability measure '{measure.name}' has the name of a built-in one: choose another name")
        if old is not None and _origin(old.pair) != _origin(measure.pair):
            raise UserError(f"stability measure '{measure.name}' is registered twice (also by {_origin(old.pair)[0]})")
        taken = [m.name for m in self._items.values() if m.column == measure.column and m.name != measure.name]
        if taken or measure.column in RESERVED:
            why = f"the column of '{taken[0]}'" if taken else "a reserved key"
            raise UserError(f"stability measure '{measure.name}': column '{measure.column}' is {why}")
        tags = {tag: m.name for m in self._items.values() if m.name != measure.name for tag in m.tags()}
        clash = next((tag for tag in measure.tags() if tag in tags), None)
        if clash is not None:  # (two measures would write one tracker scalar, each overwriting the other)
            raise UserError(f"stability measure '{measure.name}': tracker name '{clash}' is that of '{tags[clash]}'")
        self._items[measure.name] = measure  # the same definition again (a module imported twice) replaces itself

    def registered(self, part: str | None = None) -> list[Measure]:
        return [m for m in self._items.values() if part is None or part in m.parts()]


measures = Measures("stability measure")


def register_measure(
    name: str,
    *,
    label: str,
    group: str,
    column: str | None = None,
    pruning: bool = False,
    tag: str | None = None,
    figure: bool = True,
) -> Callable[[Callable[[Pair], float | None]], Callable[[Pair], float | None]]:
    """Decorator: register `pair(Pair) -> float | None` as the stability measure `name`, shown as `label`, in
    `group` ('distance', 'function space', 'error barrier', 'loss barrier', 'mask', or a group of your own), stored
    under `column` (default: `name`); `pruning`: also measured between the full network and its subnetwork (it may
    not read `pair.curve`, which is None there); `tag`: its name in trackers (default: the column); `figure`: drawn
    against the rewind iteration in the report."""

    def add(function: Callable[[Pair], float | None]) -> Callable[[Pair], float | None]:
        for what, value in (("name", name), ("column", column or name)):
            if not isinstance(value, str) or not value.isidentifier():
                raise UserError(f"a stability measure needs a {what} of letters, digits and '_', got {value!r}")
        check_drawable(f"stability measure '{name}'", label)
        measures.add(Measure(name, function, label, group, column or name, pruning, tag or column or name, figure))
        return function

    return add


def _origin(function: Callable[..., Any]) -> tuple[str, str]:
    """Where a function is defined (file, qualified name): the same definition imported twice has one origin."""
    unwrapped = inspect.unwrap(function)
    try:
        where = inspect.getsourcefile(unwrapped) or ""
    except TypeError:
        where = ""
    return where, getattr(unwrapped, "__qualname__", repr(unwrapped))


def registered(part: str | None = None) -> list[Measure]:
    """The registered measures in registration order (built-ins first); of `part` ('data_order', 'pruning')."""
    return measures.registered(part)


def present(points: Iterable[dict[str, Any]], part: str | None = None) -> list[Measure]:
    """The measures of these analysed points (results.json's stability points): the registered ones, then any
    column found in the points' summaries that no registered measure has (a plugin not imported here), described
    by its column, in the group 'other'."""
    points = list(points)
    found = registered(part)
    known = {m.column for m in measures.registered()}
    extra: list[str] = []
    for p in points:
        for where in [part] if part else PARTS:
            extra += [c for c in p.get(where) or {} if _column(c) and c not in known and c not in extra]
    for column in extra:
        pruning = any(column in (p.get("pruning") or {}) for p in points)
        found.append(Measure(column, _unknown, column, "other", column, pruning, column))
    return found


def _column(key: Any) -> bool:
    """Whether a key of a stored summary can be a measure's column (it names files: stability_<column>_vs_rewind)."""
    return isinstance(key, str) and key.isidentifier() and key not in RESERVED


def _unknown(pair: Pair) -> float | None:
    raise RuntimeError("a measure found in stored results, not registered here, cannot be computed")


def pair_fields(points: list[dict[str, Any]]) -> list[str]:
    """The columns of a stability pair row (stability.csv, the trackers' stability table): the pair's keys, every
    measure's column, whether it is stable and a [masks] subject's target density."""
    return [*KEYS, *(m.column for m in present(points)), "stable", "target_density"]


# The built-in measures ("Stabilizing the Lottery Ticket Hypothesis" §2, "Linear Mode Connectivity and the LTH";
# docs/measured.md). Their order is the order of the keys in each pair.


@register_measure("l2", label="L2 distance", group="distance", pruning=True)
def l2(pair: Pair) -> float:
    """‖m⊙a − m⊙b‖₂ over the mask's coordinates."""
    return pair.distances["l2"]


@register_measure("angle_degrees", label="angle (°)", group="distance", pruning=True, tag="angle")
def angle_degrees(pair: Pair) -> float:
    """The angle between m⊙a and m⊙b, in degrees."""
    return pair.distances["angle_degrees"]


@register_measure("normalized_l2", label="L2 / norm of the full network", group="distance", pruning=True)
def normalized_l2(pair: Pair) -> float:
    """The L2 distance divided by the norm of the full network's masked weights."""
    return pair.distances["normalized_l2"]


@register_measure(
    "travelled_l2", label="L2 / distance travelled from the start", group="distance", pruning=True, figure=False
)
def travelled_l2(pair: Pair) -> float:
    """The L2 distance divided by the mean distance each network travelled from its start (NaN if neither moved)."""
    travelled = (
        distances(pair.a.final, pair.a.start, pair.mask)["l2"] + distances(pair.b.final, pair.b.start, pair.mask)["l2"]
    ) / 2
    return pair.distances["l2"] / travelled if travelled > 0 else math.nan


@register_measure(
    "disagreement_test", label="test prediction disagreement", group="function space", pruning=True, figure=False
)
def disagreement_test(pair: Pair) -> float:
    """The fraction of test examples whose most probable class differs."""
    return disagreement(pair.a.log_probabilities, pair.b.log_probabilities)


@register_measure("kl_test", label="test KL divergence (nats)", group="function space", pruning=True, figure=False)
def kl_test(pair: Pair) -> float:
    """½(KL(p‖q) + KL(q‖p)) per test example, averaged."""
    return mean_kl(pair.a.log_probabilities, pair.b.log_probabilities)


def _curve(pair: Pair) -> dict[str, Any]:
    if pair.curve is None:
        raise ValueError("a barrier is measured along the interpolation curve of a data-order pair")
    return pair.curve


@register_measure("barrier_test", label="test error barrier (points)", group="error barrier", figure=False)
def barrier_test(pair: Pair) -> float:
    """max over α of the test error along the path, minus the endpoints' mean (percentage points)."""
    return barrier(_curve(pair)["test_error"])


@register_measure("barrier_train", label="train error barrier (points)", group="error barrier", figure=False)
def barrier_train(pair: Pair) -> float:
    return barrier(_curve(pair)["train_error"])


@register_measure("loss_barrier_test", label="test loss barrier", group="loss barrier", figure=False)
def loss_barrier_test(pair: Pair) -> float:
    return barrier(_curve(pair)["test_loss"])


@register_measure("loss_barrier_train", label="train loss barrier", group="loss barrier", figure=False)
def loss_barrier_train(pair: Pair) -> float:
    return barrier(_curve(pair)["train_loss"])


@register_measure("mask_jaccard", label="Jaccard overlap of the next level's masks", group="mask", figure=False)
def mask_jaccard(pair: Pair) -> float | None:
    """|A ∩ B| / |A ∪ B| of the masks the next IMP level would keep from each copy (None without IMP levels)."""
    a, b = pair.a.next_mask, pair.b.next_mask
    return None if a is None or b is None else jaccard(a, b)
