"""Sampling: which clip each running example number reads, and the train/valid assembly of a data section.

Every sampler maps a running example number to a clip, as a pure function of the number and the seed: epoch
permutations of a rank's share, whole tar shards in windows, class-balanced draws, and mixtures of separate data
sets drawn in fixed proportions (as WebDataset's ``RandomMix`` mixes datasets), each source through its own
sampler, so that mixing shard sources keeps their sequential reads. The loader's batch counter is therefore all
an exact resume needs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ssast.config import Fraction, NonNegative, Positive, UserError, invalid
from ssast.data.index import Dataset, Examples, holdout_positions, read_dataset, split_holdout
from ssast.data.sources import FolderSource, Source, SourceConfig


@dataclass
class DataConfig:
    """How clips are read and batched: the data sets, batch size, workers, mixup and bad-clip limit."""

    root: str = ""  # prefix for relative data paths
    train: SourceConfig = field(default_factory=FolderSource)
    # Further training sets, mixed with `train` in the proportions of their weights (default: their sizes, the
    # reference's concatenation of AudioSet and LibriSpeech)
    mix_with: list[SourceConfig] = field(default_factory=list)
    valid: SourceConfig = field(default_factory=FolderSource)  # empty path: hold out `valid_holdout` clips
    valid_holdout: NonNegative = 0
    batch_size: Positive = 24  # per process
    num_parallel_calls: Positive = 2  # worker threads, each preparing whole batches
    prefetch: Positive = 2  # batches queued per worker
    balanced: bool = False  # class-balanced sampling with replacement (AudioSet-2M)
    mixup: Fraction = 0.0  # probability of waveform mixup per training clip
    max_bad_fraction: Fraction = 0.01  # stop when more clips than this fraction are unreadable
    # Training views per decoded clip (EAT's clone batch): a batch is batch_size / views clips, each decoded and
    # turned into an fbank once, then cropped and augmented (and, in pretraining, masked) views times.
    views: Positive = 1
    shard_window: Positive = 4  # tar shards: clips are shuffled within windows of this many shards

    def __post_init__(self):
        if self.batch_size % self.views:
            raise invalid("views", self.views, f"a divisor of batch_size ({self.batch_size})")


class DataError(UserError, RuntimeError):
    """Data that cannot feed a run (too many bad clips, too few for the processes); the message says what to do."""


def class_balanced_weights(dataset: Dataset) -> np.ndarray:
    """Sampling weight of each clip: sum over its labels of 1000 / (class count + 0.01)."""
    counts = dataset.examples.label_counts(len(dataset.classes))
    return dataset.examples.label_sums(1000.0 / (counts + 0.01))


class EpochSampler:
    """Running example number -> item: a fresh permutation of `items` per epoch, seeded by (*seed, epoch).

    The running number is the sampler's only state, so the loader's batch counter restores it exactly."""

    def __init__(self, items: Sequence, seed: tuple[int, ...]):
        if not len(items):
            raise DataError("a training set (or mixture source) has fewer clips than processes")
        self.items, self.seed = items, seed
        # Per-epoch order, cached thread-safely: the worker threads straddle at most two epochs.
        self.order = functools.lru_cache(maxsize=2)(self._permutation)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([*self.seed, epoch]).permutation(len(self.items))

    def __call__(self, number: int):
        """The example of running number `number`: the epoch's permutation, drawn from the seed and epoch."""
        epoch, i = divmod(number, len(self.items))
        return self.items[self.order(epoch)[i]]


class ShardSampler(EpochSampler):
    """`EpochSampler` over tar shards: each epoch a new order of the shards, and of the clips within each window
    of `window` consecutive shards in that order, so that reads stay within a few large files at a time."""

    def __init__(self, shards: list[np.ndarray], window: int, seed: tuple[int, ...]):
        super().__init__(np.concatenate(shards), seed)
        self.starts, self.window = np.cumsum([0] + [len(s) for s in shards]), window

    def _permutation(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([*self.seed, epoch])
        shards = rng.permutation(len(self.starts) - 1)
        clips = [np.arange(self.starts[s], self.starts[s + 1]) for s in shards]
        windows = [np.concatenate(clips[i : i + self.window]) for i in range(0, len(clips), self.window)]
        return np.concatenate([rng.permutation(w) for w in windows])


class BalancedSampler:
    """Running example number -> item drawn with replacement by `class_balanced_weights`."""

    def __init__(self, items: list, weights: np.ndarray, seed: int):
        self.items, self.seed, self.cumulative = items, seed, np.cumsum(weights)

    def __call__(self, number: int):
        """The example of running number `number`: a class-balanced draw seeded by the number."""
        u = np.random.default_rng([self.seed, number]).random() * self.cumulative[-1]
        return self.items[int(np.searchsorted(self.cumulative, u, side="right"))]


class MixtureSampler:
    """Running example number -> (source, item) of one of several sources in fixed proportions: each block of
    `BLOCK` numbers draws source s exactly k_s times (the weights apportioned to the block), in an order seeded by
    (seed, block), and a source's draws are numbered through its own sampler. Everything is a function of
    the running number, so the loader's batch counter restores the mixture exactly."""

    BLOCK = 10_000

    def __init__(self, parts: list, weights: Sequence[float], seed: int):
        share = np.asarray(weights, float) / np.sum(weights) * self.BLOCK
        k = np.floor(share).astype(int)
        k[np.argsort(k - share, kind="stable")[: self.BLOCK - k.sum()]] += 1  # largest remainders
        if (k == 0).any():
            raise DataError(f"a mixture weight below 1/{self.BLOCK} of the total: {list(weights)}")
        self.parts, self.k, self.seed = parts, k, seed
        self.block = functools.lru_cache(maxsize=2)(self._block)

    def _block(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        """The sources of block `b`'s numbers, and each draw's count among its source's earlier draws in it."""
        order = np.random.default_rng([self.seed, b]).permutation(np.repeat(np.arange(len(self.k)), self.k))
        before = np.empty_like(order)
        for s in range(len(self.k)):
            before[order == s] = np.arange(self.k[s])
        return order, before

    def __call__(self, number: int) -> tuple[int, object]:
        """The source of running number `number` in its block, and that source's next draw."""
        b, j = divmod(number, self.BLOCK)
        order, before = self.block(b)
        source = int(order[j])
        return source, self.parts[source](b * self.k[source] + before[j])

    def drawn(self, numbers: int) -> np.ndarray:
        """Draws of each source among the running numbers below `numbers`."""
        b, j = divmod(numbers, self.BLOCK)
        return b * self.k + np.bincount(self.block(b)[0][:j], minlength=len(self.k))


@dataclass
class Mixture:
    """The training set: one or more data sets, each kept as its own index, drawn in proportion to `weights` (0: a
    set's size). The labels stay when every set has the same classes; else the mixture is unlabelled."""

    parts: list[Dataset]
    names: list[str] = field(default_factory=lambda: ["train"])
    weights: list[float] = field(default_factory=lambda: [0.0])

    def __post_init__(self):
        same = all(p.classes == self.parts[0].classes for p in self.parts)
        self.classes = self.parts[0].classes if same else []
        self.multi_label = same and any(p.multi_label for p in self.parts)

    def __len__(self) -> int:
        return int(self.starts[-1])

    @functools.cached_property
    def starts(self) -> np.ndarray:
        """Where each part starts in the parts' concatenation."""
        return np.cumsum([0] + [len(p.examples) for p in self.parts])

    def locate(self, i: int) -> tuple[int, int]:
        """(part, position) of the `i`-th clip of the parts' concatenation."""
        part = int(np.searchsorted(self.starts, i, side="right")) - 1
        return part, i - int(self.starts[part])

    def example(self, part: int, position: int):
        """The `Example` at `position` of part `part` (without labels in an unlabelled mixture)."""
        example = self.parts[part].examples[position]
        return example if self.classes else example._replace(labels=())


def read_mixture(sources: Sequence[Source], root: str | Path = "") -> Mixture:
    """The training mixture of `sources`, each compiled on its own; named by their files (made unique)."""
    names = [Path(s.path).stem or s.kind for s in sources]
    names = [n if names.count(n) == 1 else f"{n}{i}" for i, n in enumerate(names)]
    return Mixture([read_dataset(s, root) for s in sources], names, [s.weight for s in sources])


def holdout(mixture: Mixture, count: int) -> tuple[Mixture, Dataset]:
    """(rest, held out): `count` clips evenly spaced through the mixture's sets, one after the other
    (`split_holdout` of their concatenation), out of its training parts."""
    if len(mixture.parts) == 1:
        rest, held = split_holdout(mixture.parts[0], count)
        return Mixture([rest], mixture.names, mixture.weights), held
    held, starts = holdout_positions(len(mixture), count), mixture.starts
    rest, chosen = [], []
    for part, a, b in zip(mixture.parts, starts[:-1], starts[1:], strict=True):
        mine = held[(held >= a) & (held < b)] - a
        rest.append(part.take(np.setdiff1d(np.arange(b - a), mine)))
        chosen += [mixture.example(len(rest) - 1, int(i)) for i in mine]
    valid = Dataset(Examples.pack(chosen), mixture.classes, mixture.multi_label)
    return Mixture(rest, mixture.names, mixture.weights), valid


def train_valid(data: DataConfig, root: str) -> tuple[Mixture, Optional[Dataset]]:
    """The training mixture of a data section and its validation set: ``data.valid`` when it names a manifest or
    a split, else ``data.valid_holdout`` clips held out of the training set, else none."""
    train = read_mixture([data.train, *data.mix_with], root)
    if data.valid.named():
        return train, read_dataset(data.valid, root)
    if data.valid_holdout:
        return holdout(train, data.valid_holdout)
    return train, None


def part_sampler(dataset: Dataset, data: DataConfig, seed: tuple[int, ...], rank: int, world: int):
    """Running number -> position of one data set: the rank's share in a new order each epoch (every world-th
    clip, or whole tar shards of its own), or a class-balanced draw from the whole set."""
    positions = range(len(dataset.examples))  # the loader handles positions; a clip is read when its batch is
    if data.balanced:
        return BalancedSampler(positions, class_balanced_weights(dataset), seed[0])
    if dataset.shard_stops:  # each rank reads whole shards of its own
        cuts = np.searchsorted(dataset.examples.row_ids(), [0, *dataset.shard_stops])  # the rows are in order
        mine = [np.arange(cuts[s], cuts[s + 1]) for s in range(rank, len(dataset.shard_stops), world)]
        if not sum(map(len, mine)):
            raise DataError(f"{len(dataset.shard_stops)} shards for {world} processes: write smaller shards")
        return ShardSampler(mine, data.shard_window, seed)
    return EpochSampler(positions[rank::world], seed)


def training_sampler(train: Mixture, data: DataConfig, seed: int, rank: int, world: int):
    """Running example number -> (part, position) in the training mixture: one set's `part_sampler`, or the
    sets' samplers drawn by weight (`MixtureSampler`), each shared out by rank."""
    if len(train.parts) == 1:
        sampler = part_sampler(train.parts[0], data, (seed,), rank, world)
        return lambda number: (0, sampler(number))
    if data.balanced:
        raise DataError("data.balanced samples one labelled set; a mixture (data.mix_with) draws by weights")
    parts = [part_sampler(p, data, (seed, i + 1), rank, world) for i, p in enumerate(train.parts)]
    sizes = [len(p.examples) for p in train.parts]
    return MixtureSampler(parts, [w or n for w, n in zip(train.weights, sizes, strict=True)], seed)
