"""Identity-aware batch sampler, correct under DDP, deterministic per (seed, epoch) for exact resume."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler


class IdentityBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``batch_size`` pairs made of groups of ``images_per_identity`` pairs of one identity.

    Every epoch visits every pair once (identities with fewer pairs than a group are topped up by re-drawing their
    own pairs). Groups are shuffled, packed into *global* batches of ``batch_size * num_replicas`` pairs, and rank
    ``r`` takes slice ``r`` of each global batch, so ranks never overlap and all ranks see the same number of batches.

    Yields lists of ``(pair_index, example_seed)``: the seed drives all processor-side randomness of that example,
    which makes a resumed run reproduce the same batches. ``start_batch`` skips batches already trained this epoch.

    Args:
        labels (`Sequence[int]`): identity label of each pair.
        batch_size (`int`): pairs per process per batch (a multiple of ``images_per_identity``).
        images_per_identity (`int`): pairs of the same identity kept together.
        seed (`int`): base seed.
        num_replicas, rank (`int`): the DDP world.
    """

    def __init__(
        self,
        labels: Sequence[int],
        batch_size: int,
        images_per_identity: int = 2,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        if batch_size % images_per_identity != 0:
            raise ValueError(
                f"batch_size ({batch_size}) must be a multiple of images_per_identity ({images_per_identity})"
            )
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside world of {num_replicas}")
        self.by_label: dict[int, list[int]] = defaultdict(list)
        for index, label in enumerate(labels):
            self.by_label[int(label)].append(index)
        groups_per_global_batch = batch_size * num_replicas // images_per_identity
        if len(self.by_label) < groups_per_global_batch:
            raise ValueError(
                f"{len(self.by_label)} identities cannot fill a global batch of {groups_per_global_batch} identity "
                f"groups; lower --per_device_train_batch_size or raise --images_per_identity"
            )
        self.num_pairs = len(labels)
        self.batch_size = batch_size
        self.k = images_per_identity
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.label_of_pair = [int(label) for label in labels]
        self.epoch = 0
        self.start_batch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def _groups(self, rng: random.Random) -> list[list[int]]:
        groups = []
        for label in sorted(self.by_label):
            pairs = self.by_label[label][:]
            rng.shuffle(pairs)
            num_groups = math.ceil(len(pairs) / self.k)
            padded = pairs + [rng.choice(pairs) for _ in range(num_groups * self.k - len(pairs))]
            groups += [padded[i * self.k : (i + 1) * self.k] for i in range(num_groups)]
        rng.shuffle(groups)
        return groups

    def _global_batches(self) -> list[list[int]]:
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        rng = random.Random(f"{self.seed}-{self.epoch}")
        pending = self._groups(rng)
        per_batch = self.batch_size * self.num_replicas // self.k
        batches = []
        # A batch never holds two groups of one identity, or in-batch negatives would be false negatives.
        while len(pending) >= per_batch:
            batch, seen, deferred = [], set(), []
            j = 0
            while j < len(pending) and len(batch) < per_batch:
                group = pending[j]
                label = self.label_of_pair[group[0]]
                (deferred if label in seen else batch).append(group)
                seen.add(label)
                j += 1
            if len(batch) < per_batch:
                break  # too few distinct identities left: drop them this epoch (drop_last)
            batches.append([i for g in batch for i in g])
            pending = deferred + pending[j:]
        self._cache = (self.epoch, batches)
        return batches

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        batches = self._global_batches()
        for b, batch in enumerate(batches):
            if b < self.start_batch:
                continue
            lo = self.rank * self.batch_size
            positions = range(lo, lo + self.batch_size)
            # Seed of an example: a function of (seed, epoch, global batch, position) only.
            yield [(batch[p], hash((self.seed, self.epoch, b, p)) & 0x7FFFFFFF) for p in positions]

    def __len__(self) -> int:
        return len(self._global_batches()) - self.start_batch
