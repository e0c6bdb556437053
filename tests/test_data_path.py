"""The fast data path (tensors on the device, batches gathered by index, batched augmentation) yields exactly the
examples that indexing the dataset one example at a time, with the same permutation and augmentation draws,
yields."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lottery import seeding
from lottery.data.augment import cifar_augment, crop_and_flip_one, draw_params
from lottery.data.batches import BatchStream, epoch_permutation

N, SHAPE = 53, (3, 8, 8)


def dataset(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((N, *SHAPE), generator=g)
    y = torch.randint(0, 10, (N,), generator=g)
    pad_value = torch.randn(SHAPE[0], generator=g)
    return x, y, pad_value


def one_at_a_time(
    x: torch.Tensor,
    y: torch.Tensor,
    iteration: int,
    batch_size: int,
    data_order_seed: int,
    augmentation_seed: int | None,
    pad_value: torch.Tensor,
    padding: int,
) -> list[tuple[torch.Tensor, int]]:
    """The reference: the epoch's permutation, the iteration's slice of it, each example indexed on its own and,
    with augmentation, cropped and flipped on its own with the parameters `draw_params` gives for the batch."""
    per_epoch = len(x) // batch_size
    epoch, position = divmod(iteration, per_epoch)
    order = epoch_permutation(len(x), data_order_seed, epoch)
    indices = order[position * batch_size : (position + 1) * batch_size].tolist()
    if augmentation_seed is not None:
        dy, dx, flip = draw_params(batch_size, seeding.generator("augmentation", augmentation_seed, iteration), padding)
    examples = []
    for j, i in enumerate(indices):
        image, label = x[i], int(y[i])
        if augmentation_seed is not None:
            image = crop_and_flip_one(image, int(dy[j]), int(dx[j]), bool(flip[j]), pad_value, padding)
        examples.append((image, label))
    return examples


def assert_same(batch: tuple[torch.Tensor, torch.Tensor], reference: list[tuple[torch.Tensor, int]]) -> None:
    xs, ys = batch
    assert len(xs) == len(ys) == len(reference)
    for j, (image, label) in enumerate(reference):
        assert torch.equal(xs[j], image), f"example {j}"
        assert int(ys[j]) == label, f"label {j}"


@settings(max_examples=40, deadline=None)
@given(
    iteration=st.integers(0, 60),
    batch_size=st.integers(1, N),
    data_order_seed=st.integers(0, 2**31),
    augmentation_seed=st.integers(0, 2**31),
    padding=st.integers(1, 4),
)
def test_augmented_batches_equal_one_example_at_a_time(
    iteration: int, batch_size: int, data_order_seed: int, augmentation_seed: int, padding: int
) -> None:
    x, y, pad_value = dataset()
    stream = BatchStream(x, y, batch_size, data_order_seed, augmentation_seed, cifar_augment(pad_value, padding))
    reference = one_at_a_time(x, y, iteration, batch_size, data_order_seed, augmentation_seed, pad_value, padding)
    assert_same(stream.batch(iteration), reference)


@settings(max_examples=20, deadline=None)
@given(iteration=st.integers(0, 60), batch_size=st.integers(1, N), data_order_seed=st.integers(0, 2**31))
def test_plain_batches_equal_one_example_at_a_time(iteration: int, batch_size: int, data_order_seed: int) -> None:
    x, y, pad_value = dataset(1)
    stream = BatchStream(x, y, batch_size, data_order_seed)
    assert_same(
        stream.batch(iteration), one_at_a_time(x, y, iteration, batch_size, data_order_seed, None, pad_value, 4)
    )


def test_any_iteration_order_gives_the_same_batches() -> None:
    """Order and augmentation are functions of the iteration alone: a stream asked out of order (as a resumed run
    or a rewound subnetwork asks) gives every batch a fresh stream gives in order."""
    x, y, pad_value = dataset(2)
    augment = cifar_augment(pad_value)
    in_order = BatchStream(x, y, 8, 5, 6, augment)
    expected = [in_order.batch(t) for t in range(20)]
    shuffled = BatchStream(x, y, 8, 5, 6, augment)
    for t in (17, 3, 12, 0, 19, 6, 6, 11):
        got = shuffled.batch(t)
        assert torch.equal(got[0], expected[t][0]) and torch.equal(got[1], expected[t][1])


def test_an_epoch_visits_distinct_examples_and_drops_the_last_partial_batch() -> None:
    x, y, _ = dataset(3)
    stream = BatchStream(x, y, 10, 1)
    per_epoch = N // 10
    seen = torch.cat([stream.indices(t) for t in range(per_epoch)])
    assert len(seen) == per_epoch * 10 and len(set(seen.tolist())) == len(seen)
    assert not torch.equal(stream.indices(0), stream.indices(per_epoch))  # a fresh permutation per epoch
