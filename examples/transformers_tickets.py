"""Lottery tickets in a Transformer through the Hugging Face Trainer (`pip install 'lottery[transformers]'`).

Chen et al. 2020 ("The Lottery Ticket Hypothesis for Pre-trained BERT Networks") run IMP on BERT's encoder while
fine-tuning, rewinding to the pre-trained weights. Here a tiny BERT built from a config (no download) stands in for
the checkpoint; with a real one, replace `tiny_bert()` by

    model = transformers.AutoModelForSequenceClassification.from_pretrained("bert-base-uncased", num_labels=2)

and the synthetic tokens by your tokenized task. `lottery.prunable(model)` is Chen et al.'s choice: the attention
(Q, K, V, output) and feed-forward weights of the encoder layers; embeddings, LayerNorm, pooler and classifier are
kept. The script runs IMP with rewinding to iteration k = 0 (the weights the user loaded) and a random-pruning
control through `lottery.integrations.transformers.train_fn` (every run a `Trainer.train()` with AdamW and its
linear schedule), then the data-order stability of the last level: two copies trained by the Trainer with two
`data_seed`s, their distance and error barrier. Every pruned weight is checked to be exactly zero after training.

    python examples/transformers_tickets.py            # a few minutes on a laptop CPU
    python examples/transformers_tickets.py --quick    # the test suite runs this
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # this example never downloads

import torch  # noqa: E402
import transformers  # noqa: E402

import lottery  # noqa: E402
from lottery.integrations import transformers as lottery_hf  # noqa: E402

LENGTH = 16


class Tokens(torch.utils.data.Dataset):
    """Synthetic token sequences: label 1 if token 7 occurs more often than token 9."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(5, 12, (n, LENGTH), generator=g)
        self.labels = ((self.ids == 7).sum(1) > (self.ids == 9).sum(1)).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ones = torch.ones(LENGTH, dtype=torch.long)
        return {"input_ids": self.ids[i], "attention_mask": ones, "labels": self.labels[i]}


def tiny_bert() -> transformers.PreTrainedModel:
    config = transformers.BertConfig(
        vocab_size=16,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=LENGTH,
        num_labels=2,
    )
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config)


def accuracy(prediction: transformers.EvalPrediction) -> dict[str, float]:
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


def assert_pruned_zero(weights: dict[str, torch.Tensor], mask: lottery.Mask) -> None:
    for name, m in mask.items():
        assert bool((weights[name][~m] == 0).all()), f"{name}: a pruned weight is not zero"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="less data, fewer iterations and levels")
    options = parser.parse_args()
    n, iterations, levels = (96, 6, 1) if options.quick else (2048, 300, 4)
    transformers.logging.set_verbosity_error()
    train, test = Tokens(n, 0), Tokens(128, 1)
    with tempfile.TemporaryDirectory() as out:
        args = transformers.TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=16,
            learning_rate=1e-3,
            warmup_steps=iterations // 10,
            weight_decay=0.01,
            report_to=[],
            save_strategy="no",
            use_cpu=True,
            disable_tqdm=True,
            seed=0,
        )
        model = tiny_bert()  # stands in for from_pretrained: W_0 is the checkpoint
        print(
            "prunable (Chen et al.):",
            len(lottery.prunable(model)),
            "weights, e.g.",
            next(iter(lottery.prunable(model))),
        )
        fn = lottery_hf.train_fn(args, train, eval_dataset=test, compute_metrics=accuracy)
        found = []
        print(f"\n{'level':>5} {'density':>8} {'IMP accuracy':>13} {'random-pruned accuracy':>23}")
        for level in lottery.imp(
            model, fn, levels=levels, iterations=iterations, rewind=0, fraction=0.4, controls=["random_prune"]
        ):
            assert_pruned_zero(level.final, level.mask)
            control = level.controls.get("random_prune_seed0")
            random_acc = ""
            if control is not None:
                assert_pruned_zero(control.final, control.mask)
                random_acc = f"{control.result['eval_accuracy']:.3f}"
            print(f"{level.level:>5} {level.density:>8.3f} {level.result['eval_accuracy']:>13.3f} {random_acc:>23}")
            found.append(level)

        # Data-order stability of the last level: two copies of m ⊙ W_0 fine-tuned with data seeds 1 and 2.
        last = found[-1]
        batch = {key: torch.stack([test[i][key] for i in range(len(test))]) for key in ("input_ids", "attention_mask")}

        def evaluate(net: torch.nn.Module) -> dict[str, float]:
            with torch.no_grad():
                predicted = net(**batch).logits.argmax(-1)
            return {"error": 100.0 * float((predicted != test.labels).float().mean())}

        copies = []
        for seed in (1, 2):
            copy = tiny_bert()
            copy.load_state_dict(last.start)
            lottery_hf.train_fn(dataclasses.replace(args, data_seed=seed), train)(copy, last.mask, 0, iterations)
            assert_pruned_zero(copy.state_dict(), last.mask)
            copies.append(copy.eval())
        d = lottery.distances(copies[0], copies[1], last.mask)
        curve = lottery.interpolate(copies[0], copies[1], evaluate, points=5 if options.quick else 11)
        print(
            f"\nat {100 * last.density:.1f}% of the encoder weights, two data orders: L2 distance {d['l2']:.3f}, "
            f"barrier {lottery.barrier(curve):.2f} points (errors: {', '.join(f'{e:.1f}' for e in curve['error'])})"
        )


if __name__ == "__main__":
    main()
