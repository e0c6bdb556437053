"""Binding an experiment's run directory to the network its recipe names, `networks/<kind>/<hash>`: nothing is
trusted by its name. A network directory is used only when it is a real directory inside the store whose
`key.json` is the recipe that names it, and the store's networks are of this store format (experiments/recipes.py
makes the recipes; experiments/views.py says which run directory needs which)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lottery.errors import UserError
from lottery.store import layout
from lottery.store.atomic import write_json
from lottery.store.identity import canonical, digest
from lottery.store.run_dir import RunDir

_checked_stores: set[str] = set()


SCRATCH_PREFIX = ".recompute-"  # `lottery verify --recompute`'s scratch store, directly in the store it checks


def refuse_nested(store: Path) -> None:
    """UserError (one line) where `store` lies inside another store's networks/ or one of its experiments: a store
    there would write into the outer one's networks or views. A recomputation's scratch store is the exception."""
    if Path(store).name.startswith(SCRATCH_PREFIX) and (Path(store).parent / layout.NETWORKS).is_dir():
        return
    path = Path(os.path.abspath(store))
    for above in (path, *path.parents):
        in_networks = above.name == layout.NETWORKS and (above / layout.FORMAT_FILE).is_file()
        if in_networks or (above / layout.RUNS_FILE).is_file():  # a store's networks/, or an experiment
            raise UserError(
                f"{store} lies inside the store {above.parent}'s {'networks' if in_networks else 'experiment'} "
                f"{above}: choose an output directory (--out) outside it, or the store itself"
            )


def _format_of_networks(networks_dir: Path) -> int | None:
    """The format the networks below `networks_dir` were written in, read from their recipes when the marker is
    missing: None (no network yet), 3 (recipes carry `version` and `arithmetic`) or 2."""
    for kind in sorted(p for p in networks_dir.iterdir() if p.is_dir() and not p.is_symlink()):
        for network in sorted(p for p in kind.iterdir() if p.is_dir() and not p.is_symlink()):
            try:
                recipe = json.loads((network / layout.KEY_FILE).read_text())
            except (OSError, ValueError):
                continue
            if isinstance(recipe, dict):
                return layout.FORMAT if {"version", "arithmetic"} <= set(recipe) else 2
    return None


def check_store(store: Path) -> None:
    """Refuse, in one line, a store whose networks were written by another store format (format 2: their seeds and
    names were derived otherwise, they cannot be re-keyed soundly; a newer format: a newer version of lottery);
    mark a new store with this format (and a store whose marker was deleted, from its networks' recipes)."""
    store = Path(store)
    if str(store) in _checked_stores:
        return
    refuse_nested(store)
    networks_dir = store / layout.NETWORKS
    marker = networks_dir / layout.FORMAT_FILE
    if networks_dir.is_symlink() or marker.is_symlink():
        raise UserError(
            f"refusing to use {networks_dir}: it is a link (to {networks_dir.resolve()}), where a store's networks/ "
            f"is a real directory inside it; remove that link (`lottery verify {store}` lists every such link)"
        )
    if marker.is_file():
        try:
            found = json.loads(marker.read_text())["format"]
        except (OSError, ValueError, KeyError, TypeError):
            found = None
        if not isinstance(found, int) or isinstance(found, bool):
            raise UserError(
                f'{marker} is damaged (it should hold {{"format": {layout.FORMAT}}}): delete it and run again '
                "(the format is then read from the networks' recipes)"
            )
    else:
        found = _format_of_networks(networks_dir) if networks_dir.is_dir() else None
        if found in (None, layout.FORMAT):
            write_json(marker, {"format": layout.FORMAT})
            found = layout.FORMAT
    if found > layout.FORMAT:
        raise UserError(
            f"{store} holds networks of store format {found}, written by a newer version of lottery (this one "
            f"reads format {layout.FORMAT}): use that version, or run into a new store (--out DIR)"
        )
    if found != layout.FORMAT:
        raise UserError(
            f"{store} holds networks of store format {found}, before networks were named by their full recipe: "
            "their seeds were derived otherwise, so they cannot be re-keyed soundly; run into a new store "
            "(--out DIR). `lottery show`, `report`, `export` and `verify` still read the old experiments"
        )
    _checked_stores.add(str(store))


def check_experiment(experiment: RunDir) -> None:
    """Refuse to grow an experiment of an earlier store format, in one line."""
    stored = experiment.read_json(layout.RUNS_FILE) if experiment.exists(layout.RUNS_FILE) else None
    if isinstance(stored, dict) and stored.get("format") not in (None, layout.FORMAT):
        raise UserError(
            f"{experiment.path} was made with store format {stored.get('format')}; this version writes format "
            f"{layout.FORMAT} (networks named by their full recipe): run its spec.toml into a new store (--out DIR)"
        )


def bind_one(view: Path, recipe: dict[str, Any]) -> Path:
    """Link the run directory `view` (a path inside an experiment, e.g. `layout.dense(...)`) to the network of
    `recipe`; the network's directory. A network directory is used only when it is a real directory of this store
    whose `key.json` is this recipe; where it holds anything else, UserError in one line."""
    view = Path(getattr(view, "path", view))
    target = _checked_target(layout.store_of_run(view), recipe)
    if layout.bind(view, target) and not (target / layout.KEY_FILE).exists():
        write_json(target / layout.KEY_FILE, recipe)  # before anything is trained into it
    return target


def claim(store: Path, recipe: dict[str, Any]) -> Path:
    """The directory of the network of `recipe` in `store`, made (with its recipe) where missing, linked by no
    experiment: a network no experiment's results name, such as a prefix run whose W_k is copied into its dense run.
    The same checks as `bind_one`."""
    target = _checked_target(Path(store), recipe)
    target.mkdir(parents=True, exist_ok=True)
    if not (target / layout.KEY_FILE).exists():
        write_json(target / layout.KEY_FILE, recipe)
    return target


def _checked_target(store: Path, recipe: dict[str, Any]) -> Path:
    """The network directory of `recipe`, refused in one line where it is not a real directory of this store whose
    recipe is `recipe` (or an empty one)."""
    check_store(store)
    target = layout.network(store, str(recipe["kind"]), digest(recipe))
    layout.confined(target / layout.KEY_FILE)  # no link on the way: networks/, its kind and the network are real
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise UserError(f"{target} is not a directory of the store (a link or a file): remove it, then run again")
    key_file = target / layout.KEY_FILE
    if key_file.is_symlink():
        raise UserError(f"{key_file} is a link: a network's recipe must be a file of the store; remove {target}")
    if key_file.is_file():
        try:
            stored = json.loads(key_file.read_text())
        except (OSError, ValueError):
            stored = None
        if stored is None or canonical(stored) != canonical(recipe):
            raise UserError(
                f"{target} holds another network than its name says (its key.json is not the recipe that names "
                "it): it was copied or edited; remove it (`lottery verify` lists such networks), then run again"
            )
    elif target.is_dir() and any(not layout.TEMPORARY.match(entry.name) for entry in target.iterdir()):
        # (a temporary file: the key.json another process binding this network at the same time is writing)
        raise UserError(f"{target} holds files but no recipe (key.json): remove it, then run again")
    return target
