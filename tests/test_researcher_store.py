"""Issue 27, items 1-2: one store for the API and the CLI. `lottery.imp(..., directory=)` is identified by a
fingerprint of the user's code (train_fn's code, closure values, globals) and `config=`, and writes an experiment
that `show`, `export`, `verify` and `report` read, with provenance in every file."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lottery
from lottery.api.fingerprint import fingerprint
from lottery.cli.main import main
from lottery.errors import UserError
from lottery.store.provenance import read_metadata

X = torch.randn(64, 6, generator=torch.Generator().manual_seed(0))
Y = (X[:, 0] > 0).long()


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.GroupNorm(3, 12), nn.ReLU(), nn.Dropout(0.0), nn.Linear(12, 2))


def make_train_fn(lr: float):
    def train_fn(model: nn.Module, mask: lottery.Mask, start: int, end: int) -> dict[str, float]:
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        for t in range(start, end):
            idx = torch.randperm(64, generator=torch.Generator().manual_seed(t))[:16]
            optimizer.zero_grad()
            F.cross_entropy(model(X[idx]), Y[idx]).backward()
            optimizer.step()
        with torch.no_grad():
            return {"test_accuracy": float((model(X).argmax(1) == Y).float().mean())}

    return train_fn


OPTIONS = dict(levels=2, iterations=8, rewind=2, fraction=0.5, controls=["random_prune"])


def test_changing_the_learning_rate_in_the_closure_does_not_return_old_results(tmp_path: Path) -> None:
    fast = list(lottery.imp(net(), make_train_fn(3e-3), directory=tmp_path, **OPTIONS))
    slow = list(lottery.imp(net(), make_train_fn(1e-4), directory=tmp_path, **OPTIONS))
    assert fast[0].experiment != slow[0].experiment
    assert not torch.equal(fast[0].final["0.weight"], slow[0].final["0.weight"])  # trained again, with 1e-4
    fresh = list(lottery.imp(net(), make_train_fn(1e-4), **OPTIONS))  # in memory: what 1e-4 gives
    assert all(torch.equal(a.final["0.weight"], b.final["0.weight"]) for a, b in zip(slow, fresh, strict=True))
    again = list(lottery.imp(net(), make_train_fn(3e-3), directory=tmp_path, **OPTIONS))
    assert again[0].experiment == fast[0].experiment  # the same code and values: the stored results
    assert torch.equal(again[-1].final["0.weight"], fast[-1].final["0.weight"])


def test_fingerprint_sees_code_closures_globals_and_the_model() -> None:
    base = fingerprint(make_train_fn(1e-3), net(), None)
    assert base.unknown == [] and base == fingerprint(make_train_fn(1e-3), net(), None)
    assert fingerprint(make_train_fn(2e-3), net(), None).digest != base.digest  # a closure value
    assert fingerprint(make_train_fn(1e-3), net(), {"data": "v2"}).digest != base.digest  # config
    other = net()
    with torch.no_grad():
        other[0].weight[0, 0] += 1
    assert fingerprint(make_train_fn(1e-3), other, None).digest != base.digest  # W_0

    def changed_code(model, mask, start, end):
        return make_train_fn(1e-3)(model, mask, start, end + 0)

    def changed_code_2(model, mask, start, end):
        return make_train_fn(1e-3)(model, mask, start, end + 1)

    assert fingerprint(changed_code, net(), None).digest != fingerprint(changed_code_2, net(), None).digest

    def with_lr(model, mask, start, end, lr=1e-3):
        return make_train_fn(lr)(model, mask, start, end)

    partial = functools.partial
    assert fingerprint(partial(with_lr, lr=1e-3), net(), None) != fingerprint(partial(with_lr, lr=2e-3), net(), None)

    class Trainer:  # a callable object: its __call__ and its attributes
        __slots__ = ("lr",)

        def __init__(self, lr: float) -> None:
            self.lr = lr

        def __call__(self, model, mask, start, end):
            return make_train_fn(self.lr)(model, mask, start, end)

    one, two = fingerprint(Trainer(1e-3), net(), None), fingerprint(Trainer(2e-3), net(), None)
    assert one.unknown == [] and one.digest != two.digest
    global X
    saved = X
    try:
        X = X + 1  # a global the train_fn reads
        assert fingerprint(make_train_fn(1e-3), net(), None).digest != base.digest
    finally:
        X = saved


def test_a_train_fn_that_cannot_be_identified_is_refused_unless_config_says(tmp_path: Path) -> None:
    stream = iter(range(10**6))  # no __dict__: its state cannot be hashed

    def train_fn(model: nn.Module, mask: lottery.Mask, start: int, end: int) -> int:
        next(stream)
        return make_train_fn(1e-3)(model, mask, start, end)

    with pytest.raises(UserError, match=r"cannot identify train_fn.*'stream'.*config=") as error:
        next(lottery.imp(net(), train_fn, directory=tmp_path, **OPTIONS))
    assert "\n" not in str(error.value)
    assert not any(tmp_path.iterdir())  # nothing written
    assert list(lottery.imp(net(), train_fn, **OPTIONS))  # in memory: nothing to reuse, so it runs
    done = list(lottery.imp(net(), train_fn, directory=tmp_path, config={"stream": "counter v1"}, **OPTIONS))
    assert (done[0].experiment / "spec.json").exists()
    with pytest.raises(UserError, match="config value"):
        next(lottery.imp(net(), train_fn, directory=tmp_path, config={"x": object()}, **OPTIONS))


def test_the_cli_reads_an_api_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    levels = list(lottery.imp(net(), make_train_fn(3e-3), directory=store, **OPTIONS))
    experiment = levels[0].experiment
    assert main(["show", str(experiment)]) == 0
    shown = capsys.readouterr().out
    assert "5 finished training run(s)" in shown and "random_prune" in shown and "Sequential" in shown
    accuracy = 100 * levels[2].result["test_accuracy"]
    assert f"{accuracy:.2f}" in shown.splitlines()[-2]  # the imp level 2 row holds train_fn's accuracy
    assert main(["verify", str(store)]) == 0
    final = experiment / "replicate_0" / "rewind_2it" / "level_2" / "final.safetensors"
    meta = read_metadata(final)
    assert meta["level"] == "2" and meta["rewind_iteration"] == "2" and meta["kind"] == "imp"
    assert float(meta["density"]) == levels[2].density and meta["experiment"] == experiment.name
    capsys.readouterr()
    assert main(["export", str(experiment), "--level", "2", "--out", str(tmp_path / "ticket")]) == 0
    model = net()
    mask = lottery.load_ticket(tmp_path / "ticket", model)
    assert all(torch.equal(mask[n], levels[2].mask[n]) for n in levels[2].mask)
    assert torch.equal(model.state_dict()["0.weight"], levels[2].start["0.weight"])  # the ticket m ⊙ W_k
    assert main(["report", str(experiment)]) == 0
    assert f"{accuracy:.2f}" in (experiment / "report" / "report.html").read_text()
    pytest.importorskip("pandas")
    tables = lottery.load_experiment(experiment)
    assert len(tables.results) == 5 and tables.spec["model"]["options"]["api"]["class"].endswith("Sequential")
