"""lottery.integrations.lightning: masks hold exactly through Lightning (single process; 2-process DDP with gloo in
the slow test), runs continue from `start` exactly, W_k is the weights at iteration k bit for bit, `lottery.imp`
through Lightning equals the same loop written by hand, and per-level results go to Lightning's own logger."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("lightning")

import lightning.pytorch as pl  # noqa: E402

import lottery  # noqa: E402
from lottery import seeding  # noqa: E402
from lottery.errors import UserError  # noqa: E402
from lottery.integrations import lightning as lottery_lightning  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from lightning_helpers import QUIET, TOTAL, loaders, model  # noqa: E402


def pruned_zero(weights: dict[str, torch.Tensor], mask: lottery.Mask) -> bool:
    return all(bool((weights[name][~m] == 0).all()) for name, m in mask.items())


def test_callback_holds_the_mask_in_a_plain_fit() -> None:
    """AdamW with weight decay, gradient clipping and accumulation: pruned weights, gradients and state stay 0."""
    net = model()
    mask = lottery.prune(net, fraction=0.5)
    callback = lottery_lightning.LotteryCallback(mask)
    seen = {}

    class Spy(pl.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:  # noqa: ANN001
            for name, parameter in pl_module.named_parameters():
                if name in mask and parameter.grad is not None:
                    seen[name] = seen.get(name, 0) + int(parameter.grad[~mask[name]].ne(0).sum())

    train, val = loaders()
    trainer = pl.Trainer(
        max_steps=10,
        logger=False,
        callbacks=[Spy(), callback],
        gradient_clip_val=0.5,
        accumulate_grad_batches=2,
        **QUIET,
    )
    trainer.fit(net, train, val)
    weights = dict(net.named_parameters())
    assert pruned_zero(weights, mask)
    assert seen and all(count == 0 for count in seen.values())  # gradients masked before clipping and the step
    optimizer = trainer.optimizers[0]
    for name, m in mask.items():
        for value in optimizer.state[weights[name]].values():
            if value.shape == m.shape:
                assert bool((value[~m] == 0).all())
    assert int(sum((weights[n] != 0).sum() for n in mask)) == mask.kept()  # the kept weights trained


def test_runs_continue_from_start_exactly() -> None:
    """SGD without momentum has no state, so 0 -> 6 then 6 -> 12 must equal 0 -> 12 bit for bit: the data order
    (shuffled, 2 micro-batches per iteration) and the LR schedule continue from 6."""
    train, _ = loaders()
    fn = lottery_lightning.train_fn(train, logger=False, accumulate_grad_batches=2, **QUIET)
    one = model(optimizer="sgd")
    one.net[2].p = 0.0  # no dropout: a run's RNG is seeded at its start
    two = copy.deepcopy(one)
    ones = lottery.Mask.ones(one)
    fn(one, ones, 0, TOTAL)
    fn(two, ones, 0, 6)
    fn(two, ones, 6, TOTAL)
    assert all(torch.equal(a, b) for a, b in zip(one.state_dict().values(), two.state_dict().values()))
    three = copy.deepcopy(two)
    fn(three, ones, 0, TOTAL)  # and not what the same steps from the start would give
    assert not all(torch.equal(a, b) for a, b in zip(one.state_dict().values(), three.state_dict().values()))


def hand_written(train_set, seed: int = 0, batch_size: int = 8, accumulate: int = 2):  # noqa: ANN001, ANN201
    """The same training as lightning.train_fn, written as a plain loop: epoch e's order from
    seeding.generator("data_order", seed, e), full batches, the RNG seeded at the start, AdamW and the LambdaLR stepped
    to `start`, the loss divided by the accumulation, as Lightning does."""
    x, y = train_set.tensors
    per_epoch = len(x) // batch_size

    def batch(b: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, position = divmod(b, per_epoch)
        order = torch.randperm(len(x), generator=seeding.generator("data_order", seed, epoch))
        index = order[position * batch_size : (position + 1) * batch_size]
        return x[index], y[index]

    def train_fn(net, mask, start, end):  # noqa: ANN001, ANN202
        config = net.configure_optimizers()
        optimizer, schedule = config["optimizer"], config["lr_scheduler"]["scheduler"]
        for _ in range(start):
            schedule.step()
        torch.manual_seed(seeding.derive("dropout", seed, start))
        net.train()
        for t in range(start, end):
            for j in range(accumulate):
                inputs, targets = batch(t * accumulate + j)
                (F.cross_entropy(net(inputs), targets) / accumulate).backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()

    return train_fn


def test_imp_through_lightning_equals_the_hand_written_loop_and_w_k_is_exact() -> None:
    train, val = loaders()
    fn = lottery_lightning.train_fn(train, val, logger=False, accumulate_grad_batches=2, **QUIET)
    options = {"levels": 2, "iterations": TOTAL, "rewind": 4, "controls": ["random_prune"]}
    through = list(lottery.imp(model(), fn, **options))
    by_hand = list(lottery.imp(model(), hand_written(train.dataset), **options))
    for a, b in zip(through, by_hand):
        assert a.mask.keys() == b.mask.keys() and all(torch.equal(a.mask[n], b.mask[n]) for n in a.mask)
        assert all(torch.equal(a.final[k], b.final[k]) for k in a.final), f"level {a.level}"
        assert pruned_zero(a.final, a.mask) and 0 <= a.result["val_acc"] <= 1
        control = a.controls.get("random_prune_seed0")
        if control is not None:
            assert pruned_zero(control.final, control.mask)
            assert all(torch.equal(control.final[k], b.controls["random_prune_seed0"].final[k]) for k in a.final)
    assert [level.mask.kept() for level in through] == [108, 86, 69]  # 108 weights; round(0.2 * kept) removed
    # W_k: the weights after k = 4 iterations of a run from W_0, bit for bit (level 1 starts from m ⊙ W_k).
    w_k = model()
    fn(w_k, lottery.Mask.ones(w_k), 0, 4)
    expected = through[1].mask.apply_to({k: v.detach() for k, v in w_k.state_dict().items()})
    assert all(torch.equal(expected[k], through[1].start[k]) for k in expected)


def test_per_level_results_go_to_lightnings_own_logger(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train, val = loaders()
    logger = TensorBoardLogger(tmp_path, name="tickets")
    fn = lottery_lightning.train_fn(train, val, logger=logger, log_every_n_steps=1, **QUIET)
    for level in lottery.imp(model(), fn, levels=1, iterations=6, rewind=2, controls=["random_prune"]):
        logged = fn.log_level(level)
        assert logged["lottery/density"] == level.density and "lottery/val_acc" in logged
    runs = [p for p in (tmp_path / "tickets").iterdir() if p.is_dir()]
    assert len(runs) == 1  # one run for the whole IMP, not one per fit
    events = EventAccumulator(str(runs[0]))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train_loss", "val_acc", "lottery/density", "lottery/level", "lottery/val_acc"} <= set(tags)
    assert "lottery/random_prune_seed0/val_acc" in tags
    assert [(e.step, round(e.value, 4)) for e in events.Scalars("lottery/density")] == [(0, 1.0), (1, 0.7963)]
    steps = [e.step for e in events.Scalars("train_loss")]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # one step axis over the runs (6 + 4 + 4)


def test_bad_input_is_one_line() -> None:
    train, _ = loaders()
    with pytest.raises(UserError, match="max_steps"):
        lottery_lightning.train_fn(train, max_steps=5)
    with pytest.raises(UserError, match="DataLoader"):
        lottery_lightning.train_fn([(torch.zeros(1, 6), torch.zeros(1))])

    class EpochSchedule(type(model())):
        def configure_optimizers(self):  # noqa: ANN201
            optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
            return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, 1)]

    torch.manual_seed(0)
    net = EpochSchedule()
    with pytest.raises(UserError, match="interval"):
        lottery_lightning.train_fn(train, logger=False, **QUIET)(net, lottery.Mask.ones(net), 0, 2)
    with pytest.raises(UserError, match="LightningModule"):
        lottery_lightning.train_fn(train)(torch.nn.Linear(2, 2), lottery.Mask(), 0, 2)


DDP_SCRIPT = """
import os, sys, torch
sys.path.insert(0, {tests!r})
import lightning.pytorch as pl
from lightning_helpers import QUIET, loaders, model
import lottery
from lottery.integrations import lightning as lottery_lightning

torch.set_num_threads(1)
rank = int(os.environ["RANK"])
train, val = loaders()
ddp = {{**QUIET, "strategy": "ddp", "devices": 2, "num_nodes": 1}}
# lottery.imp through Lightning with DDP: every rank runs the same IMP.
net = model()
fn = lottery_lightning.train_fn(train, val, logger=False, **ddp)
levels = list(lottery.imp(net, fn, levels=1, iterations=6, rewind=2, controls=["random_prune"]))
# A plain fit whose rank 1 was given another mask: the callback trains rank 0's on every rank.
plain = model(seed=1)
mask = lottery.prune(plain, fraction=0.5)
if rank == 1:
    mask = lottery.random_mask_like(mask, seed=7)
callback = lottery_lightning.LotteryCallback(mask)
pl.Trainer(max_steps=5, logger=False, callbacks=[callback], **ddp).fit(plain, train)
torch.save({{"masks": [level.mask for level in levels], "finals": [level.final for level in levels],
             "controls": [level.controls["random_prune_seed0"].final for level in levels[1:]],
             "callback_mask": callback.mask, "plain": plain.state_dict()}}, {out!r} + f"/rank{{rank}}.pt")
"""


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_ddp_with_gloo_keeps_the_mask_identical_on_every_rank(tmp_path: Path) -> None:
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent), out=str(tmp_path)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    for level in range(2):
        assert same(r0["masks"][level], r1["masks"][level])
        assert same(r0["finals"][level], r1["finals"][level])  # the same subnetwork trained on every rank
        assert pruned_zero(r0["finals"][level], r0["masks"][level])
    assert same(r0["controls"][0], r1["controls"][0])
    assert same(r0["callback_mask"], r1["callback_mask"]) and r0["callback_mask"].density == 0.5
    assert same(r0["plain"], r1["plain"]) and pruned_zero(r0["plain"], r0["callback_mask"])
    assert "differs from rank 0's" in done.stderr  # rank 1 said that it takes rank 0's mask


@pytest.mark.slow
def test_example_runs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """examples/lightning_tickets.py --quick: IMP with rewinding, a random-pruning control and a data-order stability
    check through the framework's trainer, its masks checked to hold (it asserts that itself)."""
    import runpy

    script = Path(__file__).resolve().parents[1] / "examples" / "lightning_tickets.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--quick"])
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert "random-pruned accuracy" in out and "barrier" in out


def test_callback_holds_the_mask_when_lightning_casts_the_model() -> None:
    """precision='bf16-true' casts the module after the callback's setup: the gradient hooks follow the dtype."""
    net = model()
    mask = lottery.prune(net, fraction=0.5)
    train, _ = loaders()
    trainer = pl.Trainer(
        max_steps=3, logger=False, precision="bf16-true", callbacks=[lottery_lightning.LotteryCallback(mask)], **QUIET
    )
    trainer.fit(net, train)
    weights = dict(net.named_parameters())
    assert weights["net.0.weight"].dtype == torch.bfloat16 and pruned_zero(weights, mask)


def test_callback_attaches_to_optimizers_lightning_re_creates() -> None:
    """Adamax writes eps into the state of zero-gradient coordinates, so only an attached mask keeps its pruned
    state zero: an optimizer re-created mid-fit (strategy.setup_optimizers) must be attached too."""

    class AdamaxModule(type(model())):
        def configure_optimizers(self):  # noqa: ANN201
            return torch.optim.Adamax(self.parameters(), lr=0.01)

    class Recreate(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, index) -> None:  # noqa: ANN001
            if index == 2:
                self.old = trainer.optimizers[0]
                trainer.strategy.setup_optimizers(trainer)

    torch.manual_seed(0)
    net = AdamaxModule()
    mask = lottery.prune(net, fraction=0.5)
    recreate = Recreate()
    train, _ = loaders()
    callbacks = [recreate, lottery_lightning.LotteryCallback(mask)]
    trainer = pl.Trainer(max_steps=4, logger=False, callbacks=callbacks, **QUIET)
    trainer.fit(net, train)
    new = trainer.optimizers[0]
    assert new is not recreate.old
    weights = dict(net.named_parameters())
    assert pruned_zero(weights, mask)
    for name, m in mask.items():
        state = new.state[weights[name]]
        assert state["exp_inf"].abs().sum() > 0 and bool((state["exp_inf"][~m] == 0).all())
