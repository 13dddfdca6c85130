"""Training and evaluation data pipelines on fairseq2's native data pipeline.

Batch k holds the examples numbered k * B to (k + 1) * B - 1: in training a running number picks an example
(per-epoch permutation of the rank's shard, or a class-balanced draw), in evaluation it indexes the rank's
shard. `num_parallel_calls` worker pipelines each read + decode + run the front end + collate every W-th batch
in their own prefetch thread, and the loader takes their batches in turn, the way a DataLoader's worker
processes do. Bad clips are dropped from their batch, which then comes out smaller. Whole batches per thread
rather than fairseq2's parallel map over clips: that map waits for its whole group before handing results on,
and its pipeline thread collates alone (`benchmarks/data_pipeline.py` measures both).

Every random draw of an example (crop, SpecAugment, noise, mixup) comes from a generator seeded by (seed, rank,
the example's running number), and batch k always holds the same examples. The state of a loader is
therefore the number of batches it has handed out: a resumed loader starts its counter there and yields
exactly the batches an uninterrupted run would have seen, with nothing buffered in the checkpoint. This is the
only module that imports fairseq2.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
from fairseq2.data.audio import AudioDecoder
from fairseq2.data.data_pipeline import DataPipeline, FileMapper, read_sequence

from ssast.config import Fraction, NonNegative, Positive, invalid
from ssast.data.readers import Dataset, DatasetConfig
from ssast.features import FeatureConfig, check_waveform, fbank_features, kaldi_fbank, model_input, prepare_waveform

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    """How clips are read and batched: the data sets, batch size, workers, mixup and bad-clip limit."""

    root: str = ""  # prefix for relative data paths
    train: DatasetConfig = field(default_factory=DatasetConfig)
    # Further training sets, mixed with `train` in the proportions of their weights (default: their sizes, the
    # reference's concatenation of AudioSet and LibriSpeech)
    mix_with: list[DatasetConfig] = field(default_factory=list)
    valid: DatasetConfig = field(default_factory=DatasetConfig)  # empty path: hold out `valid_holdout` clips
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


class DataError(RuntimeError):
    """Too many bad clips; the message says how many and where the list is."""


class BadClips:
    """Count of the unreadable clips in the batches handed out, each logged with its reason."""

    def __init__(self, dataset_size: int, max_fraction: float):
        self.dataset_size, self.max_fraction = dataset_size, max_fraction
        self.seen = self.bad = 0
        self.last: list[str] = []

    def record(self, good: int, bad: list[str]) -> None:
        """One batch: `good` clips read, `bad` as "path: reason" lines."""
        self.seen += good + len(bad)
        self.bad += len(bad)
        for line in bad:
            log.warning("skipping bad clip %s", line)
        self.last = (self.last + bad)[-100:]

    def check(self) -> None:
        """Stop the run when the unreadable fraction passes the limit."""
        if self.bad > self.max_fraction * max(self.seen, self.dataset_size):
            raise DataError(
                f"{self.bad} of {self.seen} clips read were unreadable (limit data.max_bad_fraction="
                f"{self.max_fraction}); last: {self.last[-1]}"
            )

    def state_dict(self) -> dict:
        """The counts, for a checkpoint."""
        return {"seen": self.seen, "bad": self.bad}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict`."""
        self.seen, self.bad = state["seen"], state["bad"]


class ClipReader:
    """Path -> prepared mono waveform at the front end's rate; raises ValueError with a reason when unusable."""

    def __init__(self, features: FeatureConfig):
        self.features = features
        self._files, self._decode = FileMapper(), AudioDecoder(dtype=torch.float32)

    def __call__(self, path: str) -> torch.Tensor:
        """The clip at `path`, decoded, mono, at the front end's rate, de-meaned and checked."""
        try:
            audio = self._decode(self._files(path)["data"])
        except Exception as e:  # fairseq2 raises several native error types for missing and corrupt files
            raise ValueError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
        if audio["waveform"].numel() == 0:
            raise ValueError("no samples")
        return check_waveform(
            prepare_waveform(audio["waveform"], int(audio["sample_rate"]), self.features), self.features.sample_rate
        )


class ClipLoader:
    """One numbered example -> [{"fbank", "target", "path"}] (`views` of them in training); ValueError with the
    reason for a bad clip."""

    def __init__(
        self,
        dataset: Dataset,
        features: FeatureConfig,
        train: bool,
        seed: int,
        rank: int,
        mixup: float,
        views: int = 1,
    ):
        self.dataset, self.features, self.train = dataset, features, train
        self.seed, self.rank, self.mixup, self.views = seed, rank, mixup, views
        self.read = ClipReader(features)

    def target(self, labels) -> torch.Tensor:
        """The label vector of a clip: multi-hot over the data set's classes."""
        t = torch.zeros(len(self.dataset.classes))
        t[list(labels)] = 1.0
        return t

    def __call__(self, position: int, number: Optional[int]) -> list[dict]:
        """The features and target of the data set's clip at `position` (in training, `views` crops of it, each
        with the draws of the running `number`)."""
        example = self.dataset.examples[position]
        wave = self.read(example.path)
        target = self.target(example.labels)
        clip = {"target": target, "path": example.path, "index": None if self.train else position}
        if not self.train:
            return [{"fbank": fbank_features(wave, self.features), **clip}]
        seed = int(np.random.SeedSequence([self.seed, self.rank, number]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(seed)
        rng = np.random.default_rng(seed)
        if self.mixup > 0 and rng.random() < self.mixup:
            wave, clip["target"] = self._mix(wave, target, rng)
        f = self.features
        whole = kaldi_fbank(wave, f.sample_rate, f.num_mel_bins, f.window)
        # model_input works in place on a crop of what it is given: each view but the last gets a copy
        copies = [whole.clone() for _ in range(self.views - 1)] + [whole]
        return [{"fbank": model_input(fbank, f, True, generator), **clip} for fbank in copies]

    def batch(self, items: list[tuple[int, Optional[int]]]) -> dict:
        """(position, running number) pairs -> one collated batch of the readable clips, with "bad":
        "path: reason" lines."""
        clips, bad = [], []
        for position, number in items:
            try:
                clips += self(position, number)
            except ValueError as e:
                bad.append(f"{self.dataset.examples[position].path}: {e}")
        if not clips:
            return {"path": [], "bad": bad}
        return {
            "fbank": torch.stack([c["fbank"] for c in clips]),
            "target": torch.stack([c["target"] for c in clips]),
            "path": [c["path"] for c in clips],
            "index": [c["index"] for c in clips],
            "bad": bad,
        }

    def _mix(self, wave: torch.Tensor, target: torch.Tensor, rng: np.random.Generator):
        """Waveform mixup with a uniformly drawn partner, lambda ~ Beta(10, 10), mixed labels."""
        partner = self.dataset.examples[int(rng.integers(len(self.dataset.examples)))]
        try:
            other = self.read(partner.path)
        except ValueError:
            return wave, target  # the partner is counted when it is read as an example itself
        other = torch.nn.functional.pad(other, (0, max(0, len(wave) - len(other))))[: len(wave)]
        lam = float(rng.beta(10, 10))
        mixed = lam * wave + (1 - lam) * other
        return mixed - mixed.mean(), lam * target + (1 - lam) * self.target(partner.labels)


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
    """Running example number -> item of one of several sources in fixed proportions: each block of `BLOCK`
    numbers draws source s exactly k_s times (the weights apportioned to the block), in an order seeded by
    (seed, block), and a source's draws are numbered through its own `EpochSampler`. Everything is a function of
    the running number, so the loader's batch counter restores the mixture exactly."""

    BLOCK = 10_000

    def __init__(self, parts: list[EpochSampler], weights: Sequence[float], seed: int):
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

    def __call__(self, number: int):
        """The item of running number `number`: its block's source, that source's next draw."""
        b, j = divmod(number, self.BLOCK)
        order, before = self.block(b)
        return self.parts[order[j]](b * self.k[order[j]] + before[j])

    def drawn(self, numbers: int) -> np.ndarray:
        """Draws of each source among the running numbers below `numbers`."""
        b, j = divmod(numbers, self.BLOCK)
        return b * self.k + np.bincount(self.block(b)[0][:j], minlength=len(self.k))


def training_sampler(dataset: Dataset, data: DataConfig, seed: int, rank: int, world: int):
    """Running example number -> position in `dataset`: the rank's share in a new order each epoch (every world-th
    clip, or whole tar shards), a class-balanced draw from the whole set, or a mixture's sources drawn by weight,
    each shared out by rank."""
    if len(dataset.sources) > 1:
        if data.balanced:
            raise DataError("data.balanced samples one labelled set; a mixture (data.mix_with) draws by weights")
        source = np.searchsorted([s.stop for s in dataset.sources], dataset.examples.row_ids(), side="right")
        parts = [np.flatnonzero(source == i) for i in range(len(dataset.sources))]
        return MixtureSampler(
            [EpochSampler(p[rank::world], (seed, i + 1)) for i, p in enumerate(parts)],
            [s.weight or len(p) for s, p in zip(dataset.sources, parts, strict=True)],
            seed,
        )
    positions = range(len(dataset.examples))  # the loader handles positions; a clip is read when its batch is
    if data.balanced:
        return BalancedSampler(positions, class_balanced_weights(dataset), seed)
    if dataset.shard_stops:  # each rank reads whole shards of its own
        cuts = np.searchsorted(dataset.examples.row_ids(), [0, *dataset.shard_stops])  # the rows are in order
        mine = [np.arange(cuts[s], cuts[s + 1]) for s in range(rank, len(dataset.shard_stops), world)]
        if not sum(map(len, mine)):
            raise DataError(f"{len(dataset.shard_stops)} shards for {world} processes: write smaller shards")
        return ShardSampler(mine, data.shard_window, (seed,))
    return EpochSampler(positions[rank::world], (seed,))


class AudioLoader:
    """Iterable of collated batches {"fbank": [B, T, F], "target": [B, C], "path": [B], "index": [B]} with exact
    resume (B is the batch size, less the batch's unreadable clips; "index": each clip's position in the data set
    in evaluation, None in training). With ``data.views`` V, a training batch is B / V clips, V rows each.

    Training is an endless stream (`training_sampler`). Evaluation is one pass over the rank's shard (every
    world-th example)."""

    def __init__(
        self,
        dataset: Dataset,
        features: FeatureConfig,
        data: DataConfig,
        train: bool,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        batch_size: Optional[int] = None,
    ):
        self.data, self.batch_size, self.views = data, batch_size or data.batch_size, data.views if train else 1
        self.clips = self.batch_size // self.views  # decoded per batch
        self.bad, self.sources = BadClips(len(dataset.examples), data.max_bad_fraction), dataset.sources
        self.mixture = None
        if train:
            sampler = training_sampler(dataset, data, seed * 1000 + rank, rank, world)
            self.mixture = sampler if isinstance(sampler, MixtureSampler) else None
            self._examples = lambda k: [(sampler(n), n) for n in range(k * self.clips, (k + 1) * self.clips)]
            self._numbers = DataPipeline.count  # (first, step): endless
        else:
            shard = range(len(dataset.examples))[rank::world]
            self._examples = lambda k: [(p, None) for p in shard[k * self.batch_size : (k + 1) * self.batch_size]]
            count = -(-len(shard) // self.batch_size)
            self._numbers = lambda first, step: read_sequence(range(first, count, step))
        self._clips = ClipLoader(dataset, features, train, seed, rank, data.mixup if train else 0.0, self.views)
        self._start(0)

    def _start(self, batches: int) -> None:
        """(Re)build the workers so that the loader hands out batches from number `batches` on."""
        self.batches = self._first = batches
        workers = self.data.num_parallel_calls
        self._workers = [
            iter(
                self._numbers(batches + j, workers)
                .map(lambda k: self._clips.batch(self._examples(k)))
                .prefetch(self.data.prefetch)
                .and_return()
            )
            for j in range(workers)
        ]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            try:
                batch = next(self._workers[(self.batches - self._first) % len(self._workers)])
            except StopIteration:  # the worker due for the next batch has none left: the pass is over
                return
            self.batches += 1
            self.bad.record(len(batch["path"]) // self.views, batch.pop("bad"))
            self.bad.check()
            if batch["path"]:
                yield batch

    def counts(self) -> dict[str, int]:
        """Clips read so far and, of those, the unreadable ones (skipped); over the whole run, resume included."""
        counts = {"clips_seen": self.bad.seen, "bad_clips": self.bad.bad}
        if self.mixture is not None:  # this process's draws of each source
            drawn = self.mixture.drawn(self.batches * self.clips)
            counts.update({f"clips_seen/{s.name}": int(n) for s, n in zip(self.sources, drawn, strict=True)})
        return counts

    def reset(self) -> None:
        """Back to the first batch (for another evaluation pass)."""
        self._start(0)

    def state_dict(self) -> dict:
        """The batches handed out so far and the bad-clip counts: all an exact resume needs."""
        return {"batches": self.batches, "bad": self.bad.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict`: the next batch is the one an uninterrupted run would see."""
        if "batches" not in state:
            raise DataError(
                "the checkpoint's data state is from an older pipeline that cannot be resumed exactly; "
                "start a fresh run directory"
            )
        self._start(state["batches"])
        self.bad.load_state_dict(state["bad"])
