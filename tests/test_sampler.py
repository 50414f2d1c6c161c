"""Identity-aware batch sampler: groups, DDP split, determinism, resume skipping."""

from collections import Counter

import pytest

from tbps_hf.training.sampler import IdentityBatchSampler

# 30 identities with 1..5 pairs each (uneven on purpose)
LABELS = [label for label in range(30) for _ in range(1 + label % 5)]


def _batches(**kw):
    return list(IdentityBatchSampler(LABELS, **kw))


def test_batches_are_identity_groups_without_repeated_identities():
    batches = _batches(batch_size=8, images_per_identity=2, seed=1)
    assert batches, "an epoch must yield batches"
    for batch in batches:
        assert len(batch) == 8
        labels = [LABELS[i] for i, _ in batch]
        # consecutive pairs form one group of one identity; no identity appears in two groups
        groups = [labels[j : j + 2] for j in range(0, 8, 2)]
        assert all(g[0] == g[1] for g in groups)
        assert len({g[0] for g in groups}) == 4


def test_epoch_covers_almost_every_pair():
    seen = Counter(i for batch in _batches(batch_size=8, images_per_identity=2, seed=3) for i, _ in batch)
    # every pair can only be dropped with the last incomplete batch (< 8 groups' worth of pairs)
    assert len(seen) >= len(LABELS) - 16


def test_ddp_ranks_are_disjoint_and_equal_length():
    per_rank = [
        list(IdentityBatchSampler(LABELS, batch_size=4, images_per_identity=2, seed=5, num_replicas=2, rank=r))
        for r in range(2)
    ]
    assert len(per_rank[0]) == len(per_rank[1]) > 0
    for b0, b1 in zip(*per_rank):
        labels0 = {LABELS[i] for i, _ in b0}
        labels1 = {LABELS[i] for i, _ in b1}
        assert not labels0 & labels1, "the two ranks' halves of a global batch share an identity"
    # two ranks together = the single-process global batches of twice the size, split in halves
    single = list(IdentityBatchSampler(LABELS, batch_size=8, images_per_identity=2, seed=5))
    assert [[i for i, _ in b0 + b1] for b0, b1 in zip(*per_rank)] == [[i for i, _ in b] for b in single]


def test_deterministic_per_epoch_and_different_across_epochs():
    a = IdentityBatchSampler(LABELS, batch_size=8, images_per_identity=2, seed=7)
    b = IdentityBatchSampler(LABELS, batch_size=8, images_per_identity=2, seed=7)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)


def test_start_batch_skips_exactly_the_trained_prefix():
    sampler = IdentityBatchSampler(LABELS, batch_size=8, images_per_identity=2, seed=9)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, start_batch=3)
    assert list(sampler) == full[3:]
    assert len(sampler) == len(full) - 3


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="multiple of images_per_identity"):
        IdentityBatchSampler(LABELS, batch_size=7, images_per_identity=2)
    with pytest.raises(ValueError, match="identities cannot fill"):
        IdentityBatchSampler([0, 0, 1, 1], batch_size=8, images_per_identity=2)
