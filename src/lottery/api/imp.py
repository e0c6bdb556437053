"""`lottery.imp`: IMP with rewinding around the user's own training function (Algorithm 1 of "Stabilizing").

`train_fn(model, mask, start, end)` trains `model` (which holds the start weights) from iteration `start` to
`end`, where an iteration is one step of an optimizer over the model's parameters: any loop, loss and data. The
driver watches the steps through torch's global optimizer step hooks (`torch.optim.optimizer.
register_optimizer_step_pre_hook`), which is how it

- snapshots W_k during the dense run (the weights after k steps; one call trains 0 -> T);
- attaches the level's mask to every optimizer that steps the model (`lottery.attach`): pruned weights, their
  gradients and optimizer state stay exactly zero in the user's loop with no call of theirs;
- checks that `train_fn` took exactly `end - start` steps.

Rewinding starts level L from m_L ⊙ W_k (a copy; bit for bit the engine's `Mask.apply_to`) at iteration k: for
the data order and the learning-rate schedule to continue from k as the method prescribes, they must be functions
of the iteration `train_fn` is given, not of how many times it was called.

With `directory=STORE` every run is stored as an experiment like the CLI's (`lottery.api.store`), named by a
fingerprint of the user's code and settings (`lottery.api.fingerprint`), and finished runs are read back.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lottery.api.fingerprint import digest_tensors, fingerprint
from lottery.api.masks import check_seed, not_reset, reinitialize, starting_mask
from lottery.api.store import SCOPES, ApiStore, accuracy_of, api_spec
from lottery.api.subnetwork import masked
from lottery.errors import UserError, first_line, unknown_name
from lottery.experiments import imp_step
from lottery.extension_points import control_kinds
from lottery.pruning import Mask
from lottery.spec import PruningSpec, Step, TrainingSpec
from lottery.store import RunDir, layout
from lottery.training import record

# The seed values of the chain `lottery.imp` runs, for its controls' seeds: those of replicate 0 of a spec with the
# default seeds, so that its controls are the engine's (`lottery run`, controls.pairing = 'paired').
CHAIN = imp_step.chain_seeds(TrainingSpec())
TrainFn = Callable[[nn.Module, Mask, int, int], Any]


@dataclass
class Run:
    """One training run of the driver: its mask, the state dict it started from, its final state dict, and
    whatever `train_fn` returned."""

    mask: Mask
    start: dict[str, Tensor]
    final: dict[str, Tensor]
    result: Any

    @property
    def density(self) -> float:
        return self.mask.density


@dataclass
class Level(Run):
    """IMP level `level` (0: the dense network), and its controls by name ('random_prune_seed0', ...)."""

    level: int = 0
    controls: dict[str, Run] = field(default_factory=dict)
    experiment: Path | None = None  # with imp(directory=): the experiment directory in the store


def _copy(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


class _Watch(masked):
    """`lottery.masked` for one run of `train_fn`: the mask held in every optimizer over the model's parameters
    (unless `enforce` is False, or nothing is pruned), the steps counted, and the weights after `snapshot_at` steps
    kept. The weights it starts from are already masked (m ⊙ W_k), so it does not zero them on entry."""

    zero_on_entry = False

    def __init__(self, model: nn.Module, mask: Mask, snapshot_at: int | None, enforce: bool) -> None:
        super().__init__(model, mask)
        self.hold = enforce and mask.density < 1
        self.snapshot_at = snapshot_at
        self.snapshot: dict[str, Tensor] | None = None

    def stepped(self) -> None:
        if self.steps == self.snapshot_at:
            self.snapshot = _copy(self.model)


def _iterations(value: int | str, per_epoch: int | None, what: str) -> int:
    if isinstance(value, int):
        return value
    step = Step.parse(value)
    if step.epochs and per_epoch is None:
        raise UserError(f"imp: {what} = {value!r} is in epochs; pass iterations_per_epoch=")
    return step.to_iterations(per_epoch or 1)


def _read_run(run: RunDir | None, order: list[str]) -> Run | None:
    """A finished run of the API's store (`lottery.training.record`, and what `train_fn` returned), or None."""
    done = record.read(run, order) if run is not None else None
    result = _read_result(run) if done is not None else _MISSING
    return None if result is _MISSING else Run(done.mask, done.start, done.final, result)


_MISSING = object()


def _write_result(run: RunDir, result: Any) -> None:
    """What `train_fn` returned, as JSON where it reads back equal (not a tuple, an int key or NaN, which JSON would
    change), else with torch.save where `torch.load(weights_only=True)` reads it back; otherwise UserError (a result
    that cannot be read back would be trained again on every call)."""
    try:
        text = json.dumps({"result": result}, allow_nan=False)
        if json.loads(text)["result"] == result:
            run.write("result.json", (text + "\n").encode())
            return
    except (TypeError, ValueError):
        pass
    buffer = io.BytesIO()
    try:
        torch.save(result, buffer)
        torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    except Exception as exc:  # noqa: BLE001  (pickling or loading any object: one line)
        first = first_line(exc)
        raise UserError(
            f"imp: train_fn returned a {type(result).__name__}, which directory= cannot store and read back ({first}); "
            "return numbers, strings, lists, tuples, dicts or tensors"
        ) from None
    run.write("result.pt", buffer.getvalue())


def _read_result(run: RunDir) -> Any:
    data = run.read_json("result.json")
    if data is not None:
        return data["result"]
    if run.read("result.pt", quiet=True) is None:
        return _MISSING
    try:
        return run.read_torch("result.pt")
    except Exception:  # noqa: BLE001  (not loadable with weights_only: retrain rather than fail)
        return _MISSING


def imp(
    model: nn.Module,
    train_fn: TrainFn,
    *,
    levels: int,
    iterations: int | str,
    rewind: int | str = 0,
    fraction: float | None = 0.2,
    density: float | None = None,
    scope: str = "global",
    rates: Mapping[str, float] | None = None,
    ignore: Iterable[str] = (),
    mask: Mask | None = None,
    names: Iterable[str] | None = None,
    controls: Iterable[str] = (),
    control_seed: int = 0,
    directory: Any = None,
    iterations_per_epoch: int | None = None,
    attach: bool = True,
    config: Mapping[str, Any] | None = None,
) -> Iterator[Level]:
    """IMP with rewinding: yields level 0 (the dense network), then levels 1..`levels`, each a `Level` with
    `.level`, `.mask`, `.start` (the state dict its training started from), `.final`, `.result` (what
    `train_fn` returned) and `.controls`.

    - `train_fn(model, mask, start, end)`: trains `model` from iteration `start` to `end` (optimizer steps).
    - `iterations`: T, the end of training (an int, or a step string such as '2ep' with `iterations_per_epoch`).
    - `rewind`: k (an int or '500it'); level L >= 1 trains m_L ⊙ W_k from k to T.
    - `fraction` / `density`, `scope`, `rates`, `ignore`: how each level prunes (see `lottery.prune`; `density`
      prunes level 1 to it in one shot). `mask`: the starting mask (default `Mask.ones(model)`); or `names`: the
      parameters to prune, like `lottery.prunable(model, ...)` returns (default `lottery.prunable(model)`).
    - `controls`: any registered control kind: 'random_prune', 'random_prune_global' (same per-layer or total
      density, random positions, on m ⊙ W_k), 'random_reinit' (the level's mask on fresh weights,
      `lottery.reinitialize`), or a plugin's (`lottery.register_control`); made by the engine's code
      (experiments/imp_step.py) with the engine's seed (its kind's stream, `control_seed` and the chain's seed values,
      paired: one seed for every level, as `controls.pairing = 'paired'`); trained like the level.
    - `directory`: a store (like the CLI's --out): the run is an experiment `<directory>/<hash>/` like the CLI's
      (`lottery show`, `report`, `compare`, `export`, `verify`, `ls` read it; `Level.experiment` is its path),
      atomic, checksummed and resumable: a finished run is read back, not retrained. The hash covers the settings,
      the model (class, structure, W_0) and `train_fn` (its code, defaults, closure values and the globals it
      reads, `lottery.api.fingerprint`), so changed code or values train anew. Default: in memory only.
    - `config`: a mapping of plain values (str, numbers, bools, lists, mappings) that determine training and the
      fingerprint cannot see (e.g. the data a DataLoader reads); needed with `directory` when something in
      `train_fn` cannot be hashed (refused in one line otherwise).
    - `attach`: hold each level's mask in every optimizer that steps the model while `train_fn` runs.
    """
    if not isinstance(model, nn.Module) or not any(True for _ in model.parameters()):
        raise UserError(f"imp: model must be a torch.nn.Module with parameters, got {type(model).__name__}")
    if not callable(train_fn):
        raise UserError(f"imp: train_fn must be a function train_fn(model, mask, start, end), got {train_fn!r}")
    if isinstance(levels, bool) or not isinstance(levels, int):
        raise UserError(f"imp: levels must be a whole number >= 0, got {levels!r}")
    check_seed(control_seed, "imp: control_seed")
    if iterations_per_epoch is not None and (
        isinstance(iterations_per_epoch, bool) or not isinstance(iterations_per_epoch, int) or iterations_per_epoch < 1
    ):
        raise UserError(f"imp: iterations_per_epoch must be a whole number >= 1, got {iterations_per_epoch!r}")
    if directory is not None and (not isinstance(directory, (str, os.PathLike)) or not os.fspath(directory).strip()):
        raise UserError(f"imp: directory= must be the store's path (a non-empty str or Path), got {directory!r}")
    end = _iterations(iterations, iterations_per_epoch, "iterations")
    k = _iterations(rewind, iterations_per_epoch, "rewind")
    if end < 1:
        raise UserError(f"imp: iterations must be at least 1, got {iterations!r} ({end} iterations)")
    if not 0 <= k < end:
        raise UserError(f"imp: rewind point {k} must be in [0, {end}) (iterations = {end})")
    if levels < 0:
        raise UserError(f"imp: levels must be >= 0, got {levels}")
    controls, ignore = tuple(controls), tuple(ignore)  # read twice (pruning, and the store's keys): not a generator
    for kind in controls:
        if kind not in control_kinds:
            raise UserError(f"imp: {unknown_name('control', kind, control_kinds)}")
    if scope not in SCOPES:
        raise UserError(f"imp: scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    if fraction is not None and density is not None:
        raise UserError("imp: give fraction or density, not both")
    uncovered = not_reset(model) if "random_reinit" in controls else []
    if uncovered:
        raise UserError(
            f"imp: the random_reinit control draws fresh weights with each module's reset_parameters, and none covers "
            f"{', '.join(uncovered[:5])}: give the module that holds it a reset_parameters() method"
        )
    mask = starting_mask(model, mask, names, "imp")
    _check_mask(model, mask)
    pruning = PruningSpec(
        strategy=SCOPES[scope],
        fraction=0.2 if fraction is None else fraction,
        rates=dict(rates or {}),
        layers_to_ignore=tuple(ignore),
    ).validate()
    order = list(mask)
    aliases = _aliases(model)
    modes = [(module, module.training) for module in model.modules()]
    grads = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    store = None
    if directory is not None:
        found = fingerprint(train_fn, model, config)
        if found.unknown and config is None:
            raise UserError(
                f"imp: cannot identify train_fn for the store: {'; '.join(found.unknown[:3])} cannot be hashed, so "
                "a changed value would return old results; pass config={...} with what determines training (data, "
                "hyperparameters), or leave out directory="
            )
        settings = {
            "iterations": end,
            "rewind": k,
            "levels": levels,
            "fraction": None if density is not None else fraction,
            "density": density,
            "scope": scope,
            "rates": dict(rates or {}),
            "ignore": list(ignore),
            "controls": list(controls),
            "control_seed": control_seed,
            "mask": digest_tensors(mask.to_tensors()),
            "attach": attach,
        }
        model_class = f"{type(model).__module__}.{type(model).__qualname__}"
        store = ApiStore(Path(directory), api_spec(model_class, found, config, settings), found, settings)

    def fresh(seed: int) -> dict[str, Tensor]:
        """Fresh weights of the user's model drawn with `seed` (`lottery.reinitialize`; the model is reloaded before
        every run). It is first loaded with W_0, so that what no reset_parameters draws (a buffer of the user's) is
        W_0's, as in a model just built (the engine's), whichever run the model trained last, or none."""
        model.load_state_dict(dense.start)
        return _copy(reinitialize(model, None, seed))

    def run_dir(level: int, control: str | None = None) -> RunDir | None:
        return store.run(level, control) if store is not None else None

    def train(run: RunDir | None, start: imp_step.Start, snapshot_at: int | None = None) -> tuple[Run, Any]:
        """Train `start` with `train_fn` from its iteration to the end, recorded in `run` where there is one
        (`lottery.training.record`, as the engine's loop records); (Run, the weights after `snapshot_at` steps)."""
        if start.optimizer_state is not None:
            raise UserError(
                "imp: a control starts with an optimizer state, which lottery.imp cannot give the optimizer of "
                "train_fn; use controls that start with a fresh optimizer (optimizer_state=None)"
            )
        begin = start.iteration
        if aliases:  # a tied weight's other names hold its masked value (load_state_dict loads every name)
            weights = {
                **start.weights,
                **{a: start.weights[n].clone() for a, n in aliases.items() if n in start.weights},
            }
            start = imp_step.Start(start.mask, weights, start.optimizer_state, start.iteration)
        with ExitStack() as stack:
            began = stack.enter_context(store.training(run)) if run is not None else time.perf_counter()
            finished = _read_run(run, order)  # finished by another process while this one waited for the lock
            if finished is not None:
                snapshot = run.read_tensors(layout.snapshot(snapshot_at)) if snapshot_at is not None else None
                if snapshot_at is None or snapshot is not None:
                    return finished, snapshot
            if run is not None:
                run = run.with_provenance({**(run.provenance or {}), "density": repr(float(start.mask.density))})
                record.begin(run, start.weights, start.mask)
            model.load_state_dict(start.weights)
            for module, mode in modes:  # train or eval, as given: not as the last train_fn left it (or none did)
                module.training = mode
            for parameter, wanted in grads:  # and which parameters train: as given
                parameter.requires_grad_(wanted)
            given = Mask({name: m.clone() for name, m in start.mask.items()})  # the held mask is the driver's
            with _Watch(model, start.mask, snapshot_at, attach) as watch:
                result = train_fn(model, given, begin, end)
            if given.keys() != start.mask.keys() or any(not torch.equal(given[n], m) for n, m in start.mask.items()):
                raise UserError(
                    "imp: train_fn changed the mask it was given; the levels' masks are lottery.imp's: "
                    "change a copy (e.g. lottery.Mask({n: m.clone() for n, m in mask.items()}))"
                )
            if watch.steps != end - begin:
                unseen = (
                    f" (an iteration is a step of the optimizer over '{watch.reference_name}', the first pruned "
                    "parameter, which no optimizer of train_fn stepped)"
                    if watch.steps == 0 and watch.other_steps
                    else ""
                )
                raise UserError(
                    f"imp: train_fn took {watch.steps} optimizer steps from iteration {begin} to {end}; "
                    f"it must take exactly {end - begin} (end - start){unseen}"
                )
            done = Run(start.mask, start.weights, _copy(model), result)
            if run is not None:
                if snapshot_at is not None:
                    run.write_tensors(layout.snapshot(snapshot_at), watch.snapshot)
                _write_result(run, result)
                summary = {
                    "start_iteration": begin,
                    "end_iteration": end,
                    "train_seconds": time.perf_counter() - began,
                    "density": start.mask.density,
                    "diverged": False,
                    "final_test_accuracy": accuracy_of(result),
                    "early_stop_test_accuracy": None,
                    "early_stop_iteration": None,
                }
                record.finish(run, done.final, summary)
        return done, watch.snapshot

    def train_each(runs: list[RunDir | None]) -> imp_step.Train[Run]:
        """`imp_step`'s training of a group of starts: `train_fn`, one after another."""
        return lambda starts: [train(run, start)[0] for run, start in zip(runs, starts, strict=True)]

    try:
        # Level 0: the dense network from W_0 to T, W_k saved on the way.
        run0 = run_dir(0)
        dense = _read_run(run0, order)
        w_k = run0.read_tensors(layout.snapshot(k)) if dense is not None and k > 0 else None
        if dense is None or (k > 0 and w_k is None):
            w_0 = mask.apply_to(_copy(model))
            dense, w_k = train(run0, imp_step.Start(mask, w_0, None, 0), k if k > 0 else None)
        if k == 0:
            w_k = dense.start
        yield Level(dense.mask, dense.start, dense.final, dense.result, level=0, experiment=_path(store))

        rules = imp_step.Rules(_kinds(model, mask), pruning)
        rewound = imp_step.Rewound(k, w_k)
        previous = dense
        for level in range(1, levels + 1):
            run = run_dir(level)
            done = _read_run(run, order)
            if done is None:
                one_shot = density if level == 1 else None
                trained = imp_step.Trained(previous.mask, previous.final)
                (done,) = imp_step.level([trained], [rewound], rules, train_each([run]), one_shot)
            result = Level(done.mask, done.start, done.final, done.result, level=level, experiment=_path(store))
            for kind in controls:
                name = layout.control_name(kind, control_seed)
                crun = run_dir(level, name)
                control = _read_run(crun, order)
                if control is None:
                    derived = imp_step.control_seed(kind, control_seed, CHAIN)  # paired: the same at every level
                    wanted = [(kind, derived)]
                    (control,) = imp_step.controls(
                        wanted, done.mask, rewound, fresh, lambda: dense.start, rules, train_each([crun])
                    )
                result.controls[name] = control
            yield result
            previous = done
    finally:
        if store is not None:
            store.write_results()  # what is finished so far, also when the loop stopped early


def _aliases(model: nn.Module) -> dict[str, str]:
    """{other name: first name} of every tied parameter or buffer of `model`'s state dict."""
    first: dict[int, str] = {}
    aliases = {}
    for name, value in model.state_dict(keep_vars=True).items():
        key = id(value)
        if key in first:
            aliases[name] = first[key]
        else:
            first[key] = name
    return aliases


def _check_mask(model: nn.Module, mask: Mask) -> None:
    """A starting mask names parameters of `model` (as `named_parameters` names them), each of its shape."""
    params = dict(model.named_parameters())
    for name, m in mask.items():
        if name not in params:
            raise UserError(f"imp: the mask names '{name}', which is not a parameter of {type(model).__name__}")
        if tuple(m.shape) != tuple(params[name].shape):
            raise UserError(
                f"imp: the mask of '{name}' has shape {tuple(m.shape)}; the parameter has {tuple(params[name].shape)}"
            )


def _path(store: ApiStore | None) -> Path | None:
    return store.experiment.path if store is not None else None


def _kinds(model: nn.Module, mask: Mask) -> dict[str, str]:
    from lottery.pruning import prunable

    own = prunable(model)
    return {name: own.get(name, "fc") for name in mask}
