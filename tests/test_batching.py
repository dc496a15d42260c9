"""Batching: dynamic padding (or pad-to-max-length), seed-driven epochs, length grouping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stabletune.data.batching import Encoded, collate, epoch_batches


def make_encoded(lengths, *, pairs: bool = True) -> Encoded:
    ids = [[101] + [1000 + i] * (n - 2) + [102] for i, n in enumerate(lengths)]
    tt = [[0] * (n // 2) + [1] * (n - n // 2) for n in lengths] if pairs else None
    return Encoded(input_ids=ids, token_type_ids=tt, labels=np.arange(len(lengths)) % 2, num_truncated=0)


def test_collate_pads_to_the_longest_or_to_pad_to():
    enc = make_encoded([5, 9, 3])
    b = collate(enc, [0, 2], pad_id=0)
    assert b["input_ids"].shape == (2, 5) and b["attention_mask"].sum(1).tolist() == [5, 3]
    assert b["input_ids"][1, 3:].tolist() == [0, 0] and b["token_type_ids"][1].tolist() == [0, 1, 1, 0, 0]
    assert b["labels"].tolist() == [0, 0]
    fixed = collate(enc, [0, 2], pad_id=0, pad_to=16)
    assert fixed["input_ids"].shape == (2, 16)
    for key in ("input_ids", "attention_mask", "token_type_ids"):  # the extra columns are padding only
        assert torch.equal(fixed[key][:, :5], b[key]) and not fixed[key][:, 5:].any()
    with pytest.raises(ValueError, match="shorter than the longest"):
        collate(enc, [1], pad_id=0, pad_to=8)


@pytest.mark.parametrize("group", [False, True])
def test_epoch_visits_every_example_once_in_a_seed_driven_order(group):
    lengths = np.random.default_rng(0).integers(3, 60, size=203)
    batches = epoch_batches(lengths, batch_size=16, generator=torch.Generator().manual_seed(7), group_by_length=group)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(203))
    assert [len(b) for b in batches].count(16) == 12 and sorted(len(b) for b in batches)[0] == 203 - 12 * 16
    again = epoch_batches(lengths, batch_size=16, generator=torch.Generator().manual_seed(7), group_by_length=group)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    other = epoch_batches(lengths, batch_size=16, generator=torch.Generator().manual_seed(8), group_by_length=group)
    assert not all(np.array_equal(a, b) for a, b in zip(batches, other))


def test_length_grouping_cuts_padding():
    lengths = np.random.default_rng(1).integers(3, 60, size=1000)

    def pad_fraction(group: bool) -> float:
        bs = epoch_batches(lengths, batch_size=32, generator=torch.Generator().manual_seed(0), group_by_length=group)
        width = sum(len(b) * lengths[b].max() for b in bs)
        return 1 - lengths.sum() / width

    assert pad_fraction(True) < 0.1 < 0.3 < pad_fraction(False)
