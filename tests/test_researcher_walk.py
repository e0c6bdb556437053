"""Issue 27: a new user's walk, end to end and small: a GroupNorm + dropout CNN of their own through the Python API
into a store, the CLI with a plugin into the same store, then show, export (into a plain nn.Module), report,
compare, ls, rm and gc."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lottery
from lottery.cli.main import main

X = torch.randn(96, 1, 8, 8, generator=torch.Generator().manual_seed(0))
Y = (X.mean(dim=(1, 2, 3)) > 0).long()


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.drop = nn.Dropout(0.1)
        self.out = nn.Linear(8 * 16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.norm(self.conv(x))), 2)
        return self.out(self.drop(x.flatten(1)))


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN()


def train_fn(model: nn.Module, mask: lottery.Mask, start: int, end: int) -> dict[str, float]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    lottery.attach(mask, optimizer)
    model.train()
    for t in range(start, end):
        torch.manual_seed(t)  # dropout and the batch of iteration t: functions of t
        idx = torch.randperm(96)[:32]
        optimizer.zero_grad()
        F.cross_entropy(model(X[idx]), Y[idx]).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        return {"test_accuracy": float((model(X).argmax(1) == Y).float().mean())}


PLUGIN = textwrap.dedent(
    """
    from torch import nn
    from lottery.plugins import register_model

    @register_model("walk_cnn")
    def walk_cnn(input_shape, num_classes):
        return nn.Sequential(nn.Conv2d(input_shape[0], 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ReLU(),
                             nn.Dropout(0.1), nn.Flatten(), nn.Linear(4 * input_shape[1] * input_shape[2], num_classes))
    """
)


@pytest.mark.slow
def test_a_new_users_walk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "runs"
    levels = list(lottery.imp(make_model(), train_fn, levels=2, iterations=12, rewind=2, directory=store))
    api = levels[0].experiment
    assert api is not None and api.parent == store

    plugin = tmp_path / "walk_plugin.py"
    plugin.write_text(PLUGIN)
    cli = [
        "run",
        "--import",
        str(plugin),
        "--out",
        str(store),
        "--progress",
        "log",
        "--set",
        "model.name=walk_cnn",
        "--set",
        "dataset.name=synthetic",
        "--set",
        "dataset.validation_size=100",
        "--set",
        "dataset.subset=300",
        "--set",
        "training.batch_size=50",
        "--set",
        "training.training_steps=12it",
        "--set",
        "training.eval_every=6it",
        "--set",
        "imp.levels=1",
    ]
    assert main(cli) == 0
    out = capsys.readouterr()
    engine = Path(out.out.strip().splitlines()[-1])
    assert "[network 2 of 2" in out.err

    assert main(["show", str(api)]) == 0 and "3 finished training run(s)" in capsys.readouterr().out
    assert main(["export", str(api), "--level", "2", "--out", str(tmp_path / "ticket")]) == 0
    model = make_model()
    mask = lottery.load_ticket(tmp_path / "ticket", model)  # into a plain nn.Module: all keys match
    assert mask.density == pytest.approx(levels[2].density)
    assert main(["report", str(api)]) == 0 and (api / "report" / "report.html").exists()
    assert main(["compare", str(api), str(engine), "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp" / "report.html").exists()
    capsys.readouterr()

    assert main(["ls", str(store)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert sorted(line.split()[0] for line in listed) == sorted([api.name, engine.name])
    assert all(" done " in line for line in listed)
    networks = sorted((store / "networks").glob("*/*"))
    assert main(["rm", str(api)]) == 0 and not api.exists()
    assert sorted((store / "networks").glob("*/*")) == networks  # the view only
    assert main(["gc", str(store), "--dry-run"]) == 0
    assert sorted((store / "networks").glob("*/*")) == networks
    assert main(["gc", str(store)]) == 0
    left = sorted((store / "networks").glob("*/*"))
    assert len(left) == 2 and main(["verify", str(engine)]) == 0  # the CLI experiment's dense run and level 1
    assert main(["show", str(engine)]) == 0
