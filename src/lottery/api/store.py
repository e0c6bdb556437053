"""Where `lottery.imp(..., directory=STORE)` keeps its runs: an experiment like the CLI's, in the same store.

The experiment is `<STORE>/<hash>/`, a view whose run directories (replicate 0's dense run, its IMP levels
rewound to k and their controls, in the layout `lottery.store.layout` spells) link to networks in
`<STORE>/networks/<kind>/<hash>`, listed in `runs.json`, with `spec.json` / `spec.toml` and
`results.json` / `results.csv`: `lottery show`, `report`, `compare`, `export`, `verify`, `ls`, `rm` and `gc` read it
like any other. Its spec records what the API run is (model class, iterations, pruning, levels, rewind point,
controls) and, in `model.options.api`, the fingerprint of the user's code and the `config=` mapping
(`lottery.api.fingerprint`): the experiment's hash and every network's key include that fingerprint, so changed
code or settings never read old results. Every safetensors file carries its provenance (experiment, run, kind,
level, density, rewind iteration) like the engine's.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lottery.api.fingerprint import Fingerprint, plain_config
from lottery.errors import UserError
from lottery.registry import API_DATASET
from lottery.spec import ExperimentSpec, build, spec_hash
from lottery.store import RunDir, check_collision, layout, locked, write_spec

SCOPES = {"global": "global_magnitude", "layerwise": "layerwise_magnitude"}
DATASET = API_DATASET  # dataset.name of an API experiment: the data is whatever the user's train_fn reads


def accuracy_of(result: Any) -> float | None:
    """The test accuracy (a fraction) in what `train_fn` returned, for the results table and the report: a mapping's
    `test_accuracy` or `accuracy` (fractions), or `test_error` or `error` (percent, as
    `lottery.classification_metrics` gives); None otherwise, and for NaN or infinity."""
    if not isinstance(result, Mapping):
        return None
    for key, scale in (("test_accuracy", None), ("accuracy", None), ("test_error", 100.0), ("error", 100.0)):
        value = result.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # NaN or inf: no accuracy (results.json stays strict JSON)
                return None
            return float(value) if scale is None else 1.0 - float(value) / scale
    return None


def api_spec(
    model_class: str,
    found: Fingerprint,
    config: Mapping[str, Any] | None,
    settings: dict[str, Any],
) -> ExperimentSpec:
    """The experiment spec of an API run: the engine's groups where they say what the run did, the rest (the
    fingerprint, `config`, the starting mask, a one-shot density) in `model.options.api`."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", model_class.rpartition(".")[2]) or "model"
    fraction = settings["fraction"]
    pruning: dict[str, Any] = {"strategy": SCOPES[settings["scope"]], "layers_to_ignore": list(settings["ignore"])}
    if fraction is not None:
        pruning["fraction"] = fraction
    if settings["scope"] == "layerwise" and settings["rates"]:
        pruning["rates"] = dict(settings["rates"])
    api = {
        "fingerprint": found.digest,
        "class": model_class,
        "config": plain_config(config) or None,
        "mask": settings["mask"],
        "density": settings["density"],
        "attach": None if settings["attach"] else False,  # recorded only when the driver did not hold the masks
    }
    data: dict[str, Any] = {
        "model": {"name": name, "options": {"api": {k: v for k, v in api.items() if v is not None}}},
        "dataset": {"name": DATASET},
        "training": {"training_steps": f"{settings['iterations']}it"},
        "pruning": pruning,
        "imp": {"levels": settings["levels"], "rewind": [f"{settings['rewind']}it"]},
    }
    if settings["controls"]:
        data["controls"] = {"kinds": list(settings["controls"]), "seeds": [settings["control_seed"]]}
    return build(data)


class ApiStore:
    """The API experiment under a store root: its run directories (links to networks, made up front) and the
    results, written like the CLI's."""

    def __init__(self, root: Path, spec: ExperimentSpec, found: Fingerprint, settings: dict[str, Any]) -> None:
        if not str(root).strip():
            raise UserError("imp: directory= is empty: give the store directory")
        self.spec, self.settings = spec, settings
        self.experiment = RunDir(Path(root) / spec_hash(spec))
        self.hash = spec_hash(spec)
        self.base = {"api": found.digest, "iterations": settings["iterations"], "attach": settings["attach"]}
        check_collision(self.experiment, spec)
        with locked(self.experiment.path):
            check_collision(self.experiment, spec)
            write_spec(self.experiment, spec, None)
            self._bind()

    def _keys(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        from lottery.experiments.recipes import plugin_code
        from lottery.extension_points import control_kinds
        from lottery.store import layout

        k, r = self.settings["rewind"], layout.replicate(self.experiment.path, 0)
        # the dense run starts from the starting mask applied to W_0 and holds it while it trains: it is in the key
        yield layout.dense(r), {**self.base, "kind": "dense", "snapshot": k, "mask": self.settings["mask"]}
        for level in range(1, self.settings["levels"] + 1):
            key = self.level_key(level)
            yield layout.level(r, k, level), key
            for kind in self.settings["controls"]:
                seed = self.settings["control_seed"]
                registered = control_kinds.get(kind)  # its seed: the engine's, paired (experiments/imp_step.py)
                code = {} if registered.builtin else {"code": plugin_code(registered.start)}
                # "fresh": how fresh weights are drawn (`lottery.reinitialize`: reset_parameters, then a lottery
                # Network's own init)
                yield (
                    layout.control(r, k, level, kind, seed),
                    {**key, "kind": kind, "seed": seed, "pairing": "paired", "fresh": "reset_then_init", **code},
                )

    def level_key(self, level: int) -> dict[str, Any]:
        s = self.settings
        pruning = {name: s[name] for name in ("fraction", "density", "scope", "rates", "ignore", "mask")}
        return {**self.base, "kind": "imp", "rewind": s["rewind"], "level": level, "pruning": pruning}

    def _bind(self) -> None:
        from lottery.experiments import views
        from lottery.store.networks import bind_one

        for view, key in self._keys():
            bind_one(view, key)
        views.record(self.experiment)  # runs.json

    def run(self, level: int, control: str | None = None) -> RunDir:
        """The run directory of IMP level `level` (0: dense) or of its control (`<kind>_seed<s>`), writing its
        provenance into every safetensors file."""
        r, k = layout.replicate(self.experiment.path, 0), self.settings["rewind"]
        path = layout.controls(r, k, level) / control if control else layout.imp_run(r, k, level)
        kind = control.rpartition("_seed")[0] if control else ("dense" if level == 0 else "imp")
        tags = {
            "experiment": self.hash,
            "spec_hash": self.hash,
            "run": path.relative_to(self.experiment.path).as_posix(),
            "kind": kind,
            "level": level,
            "rewind_iteration": None if level == 0 else k,
            "replicate": 0,
            "seed": self.settings["control_seed"] if control else None,
            "start_iteration": 0 if level == 0 else k,
            "end_iteration": self.settings["iterations"],
            "source": "lottery.imp (Python API)",
        }
        return RunDir(path).with_provenance({key: str(v) for key, v in tags.items() if v is not None})

    @contextmanager
    def training(self, run: RunDir) -> Iterator[float]:
        """Hold the run's lock while it trains (as the engine's loop does: `lottery gc` never removes it); yields the
        start time."""
        with locked(run.path):
            yield time.perf_counter()

    def write_results(self) -> None:
        """results.json and results.csv, under the experiment's lock, from what the store holds."""
        from lottery.experiments.run import write_results

        with locked(self.experiment.path):
            write_results(self.experiment, self.spec)
