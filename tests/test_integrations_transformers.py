"""lottery.integrations.transformers: masks hold exactly through the Hugging Face Trainer (AdamW with its LR
scheduler, gradient accumulation and clipping), runs continue from `start` exactly, W_k is the weights at iteration
k bit for bit, `lottery.imp` through the Trainer equals the same loop written by hand, and per-level results go to
the Trainer's own TensorBoard run. Models are built from tiny configs and trained on synthetic tokens: nothing is
downloaded (HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers reads it: never reach the hub

import pytest  # noqa: E402
import torch  # noqa: E402

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # the Trainer needs it (the 'transformers' extra installs it)

import lottery  # noqa: E402
from lottery import seeding  # noqa: E402
from lottery.errors import UserError  # noqa: E402
from lottery.integrations import transformers as lottery_hf  # noqa: E402

LENGTH = 8


class Tokens(torch.utils.data.Dataset):
    """Synthetic token sequences; the label says whether the first half's ids sum higher than the second's."""

    def __init__(self, n: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(5, 30, (n, LENGTH), generator=g)
        self.labels = (self.ids[:, : LENGTH // 2].sum(1) > self.ids[:, LENGTH // 2 :].sum(1)).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.ids[i],
            "attention_mask": torch.ones(LENGTH, dtype=torch.long),
            "labels": self.labels[i],
        }


def bert(seed: int = 0, dropout: float = 0.1):  # noqa: ANN201
    config = transformers.BertConfig(
        vocab_size=32,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=LENGTH,
        num_labels=2,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    torch.manual_seed(seed)
    return transformers.BertForSequenceClassification(config)


def arguments(tmp_path: Path, **changes: object):  # noqa: ANN201
    settings = {
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": 8,
        "learning_rate": 5e-3,
        "warmup_steps": 2,
        "weight_decay": 0.01,
        "report_to": [],
        "save_strategy": "no",
        "use_cpu": True,
        "disable_tqdm": True,
        "seed": 0,
        "logging_steps": 1,
        "max_grad_norm": 0.0,
        **changes,
    }
    return transformers.TrainingArguments(**settings)


def pruned_zero(weights: dict[str, torch.Tensor], mask: lottery.Mask) -> bool:
    return all(bool((weights[name][~m] == 0).all()) for name, m in mask.items())


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_callback_holds_the_mask_through_adamw_its_scheduler_and_accumulation(tmp_path: Path) -> None:
    model = bert()
    mask = lottery.prune(model, fraction=0.5)
    assert set(mask) == set(lottery.prunable(model))  # Chen et al.: attention and feed-forward weights only
    grads = []

    class Spy(transformers.TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs) -> None:  # noqa: ANN001
            params = dict(model.named_parameters())
            grads.append(sum(int(params[n].grad[~m].ne(0).sum()) for n, m in mask.items()))

    args = arguments(tmp_path, max_steps=4, gradient_accumulation_steps=2, max_grad_norm=1.0)
    callback = lottery_hf.LotteryCallback(mask)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Tokens(40), callbacks=[Spy(), callback])
    trainer.train()
    params = dict(model.named_parameters())
    assert pruned_zero(params, mask) and grads == [0, 0, 0, 0]  # gradients zero before clipping, at every step
    optimizer = lottery_hf._torch_optimizer(trainer.optimizer)
    assert isinstance(optimizer, torch.optim.AdamW)
    for name, m in mask.items():
        state = optimizer.state[params[name]]
        assert state and all(bool((v[~m] == 0).all()) for v in state.values() if v.shape == m.shape)
    assert int(sum((params[n] != 0).sum() for n in mask)) == mask.kept()  # the kept weights are all non-zero
    assert trainer.lr_scheduler.get_last_lr()[0] < args.learning_rate  # the linear schedule ran


def test_runs_continue_from_start_exactly(tmp_path: Path) -> None:
    """SGD has no state: 0 -> 3 then 3 -> 6 equals 0 -> 6 bit for bit (data order, warm-up + linear decay)."""
    args = arguments(tmp_path, optim="sgd", gradient_accumulation_steps=2)
    fn = lottery_hf.train_fn(args, Tokens(40))
    one = bert(dropout=0.0)
    two = copy.deepcopy(one)
    ones = lottery.Mask.ones(one)
    fn(one, ones, 0, 6)
    fn(two, ones, 0, 3)
    fn(two, ones, 3, 6)
    assert same(one.state_dict(), two.state_dict())


def hand_written(dataset: Tokens, batch_size: int = 8, lr: float = 5e-3, warmup: int = 2, decay: float = 0.01):  # noqa: ANN201
    """The Trainer's defaults as a plain loop: AdamW (fused, as HF's default 'adamw_torch_fused') with weight decay
    on all but biases and LayerNorm, the linear schedule with warm-up over T stepped to `start`, the order of
    epoch e from seeding.generator(seed 0, e) in full batches, the RNG seeded at the run's start."""

    def train_fn(model, mask, start, end):  # noqa: ANN001, ANN202
        named = list(model.named_parameters())
        no_decay = [p for n, p in named if n.endswith("bias") or "LayerNorm" in n]
        with_decay = [p for n, p in named if not (n.endswith("bias") or "LayerNorm" in n)]
        groups = [{"params": with_decay, "weight_decay": decay}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=True)
        schedule = transformers.get_linear_schedule_with_warmup(optimizer, warmup, end)
        for _ in range(start):
            schedule.step()
        torch.manual_seed(seeding.derive("dropout", 0, start))
        per_epoch = len(dataset) // batch_size
        model.train()
        for t in range(start, end):
            epoch, position = divmod(t, per_epoch)
            order = torch.randperm(len(dataset), generator=seeding.generator("data_order", 0, epoch))
            items = [dataset[int(i)] for i in order[position * batch_size : (position + 1) * batch_size]]
            batch = {key: torch.stack([item[key] for item in items]) for key in items[0]}
            model(**batch).loss.backward()
            optimizer.step()
            schedule.step()
            model.zero_grad()

    return train_fn


def test_imp_through_the_trainer_equals_the_hand_written_loop_and_w_k_is_exact(tmp_path: Path) -> None:
    data = Tokens(40)
    fn = lottery_hf.train_fn(arguments(tmp_path), data)
    options = {"levels": 1, "iterations": 6, "rewind": 2, "controls": ["random_prune"]}
    through = list(lottery.imp(bert(dropout=0.0), fn, **options))
    by_hand = list(lottery.imp(bert(dropout=0.0), hand_written(data), **options))
    for a, b in zip(through, by_hand):
        assert same(a.mask, b.mask) and same(a.final, b.final), f"level {a.level}"
        assert pruned_zero(a.final, a.mask)
    control = through[1].controls["random_prune_seed0"]
    assert pruned_zero(control.final, control.mask)
    assert same(control.final, by_hand[1].controls["random_prune_seed0"].final)
    # W_k: the weights after k = 2 iterations from W_0 (the checkpoint the user loaded), bit for bit.
    w_k = bert(dropout=0.0)
    fn(w_k, lottery.Mask.ones(w_k), 0, 2)
    assert same(through[1].mask.apply_to({k: v.detach() for k, v in w_k.state_dict().items()}), through[1].start)


def test_per_level_results_go_to_the_trainers_tensorboard_run(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def accuracy(prediction) -> dict[str, float]:  # noqa: ANN001
        return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}

    args = arguments(tmp_path, report_to=["tensorboard"])
    fn = lottery_hf.train_fn(args, Tokens(40), eval_dataset=Tokens(16, 1), compute_metrics=accuracy)
    for level in lottery.imp(bert(), fn, levels=1, iterations=3, rewind=1):
        logged = fn.log_level(level)
        assert logged["lottery/density"] == level.density and 0 <= logged["lottery/eval_accuracy"] <= 1
    runs = {p.parent for p in (tmp_path / "out").rglob("events.out.tfevents.*")}
    assert len(runs) == 1  # one TensorBoard run for the whole IMP
    events = EventAccumulator(str(runs.pop()))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    # the Trainer's trackers prefix what trainer.log reports with 'train/' (rewrite_logs)
    assert {"train/loss", "train/lottery/density", "train/lottery/level", "train/lottery/eval_accuracy"} <= tags
    assert [(e.step, e.value) for e in events.Scalars("train/lottery/level")] == [(0, 0.0), (1, 1.0)]


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="TrainingArguments"):
        lottery_hf.train_fn({"max_steps": 3}, Tokens(8))
    with pytest.raises(UserError, match="optimizer"):
        lottery_hf.train_fn(arguments(tmp_path), Tokens(8), optimizers=(None, None))

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):  # noqa: ANN204
            return iter(Tokens(8))

    with pytest.raises(UserError, match="map-style"):
        lottery_hf.train_fn(arguments(tmp_path), Stream())
    model = bert()
    with pytest.raises(UserError, match="smaller than one batch"):
        lottery_hf.train_fn(arguments(tmp_path), Tokens(4))(model, lottery.Mask.ones(model), 0, 2)


@pytest.mark.slow
def test_example_runs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """examples/transformers_tickets.py --quick: IMP with rewinding, a random-pruning control and a data-order stability
    check through the framework's trainer, its masks checked to hold (it asserts that itself)."""
    import runpy

    script = Path(__file__).resolve().parents[1] / "examples" / "transformers_tickets.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--quick"])
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert "random-pruned accuracy" in out and "barrier" in out


def test_every_run_and_level_goes_to_one_mlflow_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks file stores to opt in
    fn = lottery_hf.train_fn(arguments(tmp_path, report_to=["mlflow"]), Tokens(40))
    for level in lottery.imp(bert(), fn, levels=1, iterations=2, rewind=1):
        fn.log_level(level)
    assert mlflow.active_run() is None  # nothing left open
    client = mlflow.MlflowClient()
    runs = [run for experiment in client.search_experiments() for run in client.search_runs([experiment.experiment_id])]
    assert len(runs) == 1 and runs[0].info.run_id == fn.mlflow_run
    history = client.get_metric_history(fn.mlflow_run, "lottery/density")
    assert [(m.step, round(m.value, 4)) for m in history] == [(0, 1.0), (1, round(level.density, 4))]
    assert client.get_metric_history(fn.mlflow_run, "loss")  # the Trainer's own training log, same run


def test_rewinding_to_the_pre_trained_weights(tmp_path: Path) -> None:
    """Chen et al.: k = 0 is the checkpoint the user loaded; every level starts from m ⊙ those weights."""
    model = bert()
    loaded = {k: v.detach().clone() for k, v in model.state_dict().items()}
    fn = lottery_hf.train_fn(arguments(tmp_path), Tokens(40))
    levels = list(lottery.imp(model, fn, levels=1, iterations=2, rewind=0))
    assert same(levels[0].start, loaded)
    assert same(levels[1].start, levels[1].mask.apply_to(loaded))
    assert not same(levels[1].start, loaded) and set(levels[1].mask) == set(lottery.prunable(model))
