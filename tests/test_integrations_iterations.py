"""The integrations' training order (lottery.integrations.iterations): the batch of a micro-batch index depends on
that index alone, epochs are permutations in full batches, and data-parallel ranks split each epoch."""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from lottery import seeding
from lottery.errors import UserError
from lottery.integrations.iterations import IterationOrder, IterationSampler


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 60),
    batch=st.integers(1, 9),
    world=st.integers(1, 4),
    shuffle=st.booleans(),
    seed=st.integers(0, 2**31),
    probes=st.lists(st.integers(0, 40), min_size=1, max_size=8),
)
@example(n=1, batch=1, world=3, shuffle=False, seed=0, probes=[0])  # fewer examples than ranks: padded twice
def test_order_is_a_function_of_the_index(
    n: int, batch: int, world: int, shuffle: bool, seed: int, probes: list[int]
) -> None:
    share = -(-n // world)
    if share < batch:
        with pytest.raises(UserError, match="smaller than one batch"):
            IterationOrder(n, batch, shuffle, seed, 0, world)
        return
    orders = [IterationOrder(n, batch, shuffle, seed, rank, world) for rank in range(world)]
    per_epoch = share // batch
    assert all(order.per_epoch == per_epoch for order in orders)
    fresh = IterationOrder(n, batch, shuffle, seed, 0, world)
    for b in probes:  # any order of calls gives the same batches as a fresh order asked once
        assert orders[0].indices(b) == IterationOrder(n, batch, shuffle, seed, 0, world).indices(b)
        assert fresh.indices(b) == orders[0].indices(b)
    epoch = probes[0] // per_epoch
    ranks = [order.epoch_order(epoch).tolist() for order in orders]
    assert all(len(r) == share for r in ranks)
    assert sorted(set().union(*ranks)) == list(range(n))  # every example, some repeated only to pad
    permutation = (
        torch.randperm(n, generator=seeding.generator("data_order", seed, epoch)) if shuffle else torch.arange(n)
    )
    if world == 1:
        assert ranks[0] == permutation.tolist()
        batches = [orders[0].indices(epoch * per_epoch + i) for i in range(per_epoch)]
        assert all(len(b) == batch for b in batches) and len({i for b in batches for i in b}) == per_epoch * batch


def test_a_dataloader_over_the_sampler_yields_exactly_those_micro_batches() -> None:
    data = torch.arange(23)
    order = IterationOrder(len(data), 4, True, 7)
    loader = DataLoader(data, batch_size=4, sampler=IterationSampler(order, 3, 11))
    batches = [b.tolist() for b in loader]
    assert len(loader) == 8 and batches == [order.indices(b) for b in range(3, 11)]
    assert order.per_epoch == 5  # 23 // 4: the partial batch of each epoch is dropped
