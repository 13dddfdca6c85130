"""Training and evaluation data pipelines on fairseq2's native data pipeline.

training: running number -> example (per-epoch permutation of the rank's shard, or class-balanced draw);
evaluation: examples -> shard(rank, world); then read + decode + front end (threads) -> drop bad clips ->
batch -> collate -> prefetch.

Every random draw of an example (crop, SpecAugment, noise, mixup) comes from a generator seeded by (seed, rank,
the example's running number). That number is produced by the pipeline itself, so ``state_dict()`` /
``load_state_dict()`` of the pipeline restore exactly the batches an uninterrupted run would have seen.
This is the only module that imports fairseq2.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import numpy as np
import torch
from fairseq2.data.audio import AudioDecoder
from fairseq2.data.data_pipeline import Collater, DataPipeline, FileMapper, read_sequence

from ssast.data.readers import Dataset, DatasetConfig
from ssast.features import FeatureConfig, fbank_features, prepare_waveform

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    root: str = ""  # prefix for relative data paths
    train: DatasetConfig = field(default_factory=DatasetConfig)
    valid: DatasetConfig = field(default_factory=DatasetConfig)  # empty path: hold out `valid_holdout` clips
    valid_holdout: int = 0
    batch_size: int = 24  # per process
    num_parallel_calls: int = 2  # decode + front-end threads
    prefetch: int = 2  # batches
    balanced: bool = False  # class-balanced sampling with replacement (AudioSet-2M)
    mixup: float = 0.0  # probability of waveform mixup per training clip
    max_bad_fraction: float = 0.01  # stop when more clips than this fraction are unreadable


class DataError(RuntimeError):
    """Too many bad clips; the message says how many and where the list is."""


class BadClips:
    """Thread-safe count of unreadable clips, each logged once per occurrence with its reason."""

    def __init__(self, dataset_size: int, max_fraction: float):
        self.dataset_size, self.max_fraction = dataset_size, max_fraction
        self.seen = self.bad = 0
        self.last: list[str] = []
        self._lock = threading.Lock()

    def record(self, ok: bool, path: str = "", reason: str = "") -> None:
        with self._lock:
            self.seen += 1
            if not ok:
                self.bad += 1
                self.last = (self.last + [f"{path}: {reason}"])[-100:]
                log.warning("skipping bad clip %s: %s", path, reason)

    def check(self) -> None:
        if self.bad > self.max_fraction * max(self.seen, self.dataset_size):
            raise DataError(f"{self.bad} of {self.seen} clips read were unreadable (limit data.max_bad_fraction="
                            f"{self.max_fraction}); last: {self.last[-1]}")

    def state_dict(self) -> dict:
        return {"seen": self.seen, "bad": self.bad}

    def load_state_dict(self, state: dict) -> None:
        self.seen, self.bad = state["seen"], state["bad"]


class ClipReader:
    """Path -> prepared mono waveform at the front end's rate; raises ValueError with a reason when unusable."""

    def __init__(self, features: FeatureConfig):
        self.features = features
        self._files, self._decode = FileMapper(), AudioDecoder(dtype=torch.float32)
        self._min_samples = int(features.sample_rate * 0.025)  # one 25-ms frame

    def __call__(self, path: str) -> torch.Tensor:
        try:
            audio = self._decode(self._files(path)["data"])
        except Exception as e:  # fairseq2 raises several native error types for missing and corrupt files
            raise ValueError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
        if audio["waveform"].numel() == 0:
            raise ValueError("no samples")
        wave = prepare_waveform(audio["waveform"], int(audio["sample_rate"]), self.features)
        if not torch.isfinite(wave[0]):  # one NaN or inf sample makes the removed mean, so every sample, non-finite
            raise ValueError("NaN or inf samples")
        if wave.shape[0] < self._min_samples:
            raise ValueError(f"{wave.shape[0]} samples, shorter than one frame")
        return wave


class ClipLoader:
    """One numbered example -> {"fbank", "target", "path"}, or None for a bad clip (counted in `bad`)."""

    def __init__(self, dataset: Dataset, features: FeatureConfig, train: bool, seed: int, rank: int,
                 mixup: float, bad: BadClips):
        self.dataset, self.features, self.train = dataset, features, train
        self.seed, self.rank, self.mixup, self.bad = seed, rank, mixup, bad
        self.read = ClipReader(features)

    def target(self, labels) -> torch.Tensor:
        t = torch.zeros(len(self.dataset.classes))
        t[list(labels)] = 1.0
        return t

    def __call__(self, item: dict) -> Optional[dict]:
        example = item["example"]
        try:
            wave = self.read(example["path"])
        except ValueError as e:
            self.bad.record(False, example["path"], str(e))
            return None
        self.bad.record(True)
        target, generator = self.target(example["labels"]), None
        if self.train:
            seed = int(np.random.SeedSequence([self.seed, self.rank, item["number"]]).generate_state(1)[0])
            generator = torch.Generator().manual_seed(seed)
            rng = np.random.default_rng(seed)
            if self.mixup > 0 and rng.random() < self.mixup:
                wave, target = self._mix(wave, target, rng)
        fbank = fbank_features(wave, self.features, self.train, generator)
        return {"fbank": fbank, "target": target, "path": example["path"]}

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
    counts = np.zeros(len(dataset.classes))
    for e in dataset.examples:
        counts[list(e.labels)] += 1
    class_weight = 1000.0 / (counts + 0.01)
    return np.array([class_weight[list(e.labels)].sum() for e in dataset.examples])


class EpochSampler:
    """Running example number -> example: a fresh permutation of `items` per epoch, seeded by (seed, epoch).

    The running number is the sampler's only state, so the pipeline's counter restores it exactly."""

    def __init__(self, items: list, seed: int):
        self.items, self.seed = items, seed
        self._epoch, self._order = -1, np.arange(0)

    def __call__(self, number: int):
        epoch, i = divmod(number, len(self.items))
        if epoch != self._epoch:
            self._epoch, self._order = epoch, np.random.default_rng([self.seed, epoch]).permutation(len(self.items))
        return self.items[self._order[i]]


class BalancedSampler:
    """Running example number -> example drawn with replacement by `class_balanced_weights`."""

    def __init__(self, items: list, weights: np.ndarray, seed: int):
        self.items, self.seed, self.cumulative = items, seed, np.cumsum(weights)

    def __call__(self, number: int):
        u = np.random.default_rng([self.seed, number]).random() * self.cumulative[-1]
        return self.items[int(np.searchsorted(self.cumulative, u, side="right"))]


class AudioLoader:
    """Iterable of collated batches {"fbank": [B, T, F], "target": [B, C], "path": [B]} with exact resume.

    Training is an endless stream: each rank reads its shard (every world-th example) in a new order each
    epoch, or samples the whole set class-balanced. Evaluation is one pass over the rank's shard."""

    def __init__(self, dataset: Dataset, features: FeatureConfig, data: DataConfig, train: bool, seed: int = 0,
                 rank: int = 0, world: int = 1, batch_size: Optional[int] = None):
        self.bad = BadClips(len(dataset.examples), data.max_bad_fraction)
        items = [{"path": e.path, "labels": list(e.labels)} for e in dataset.examples]
        if train:
            sampler = (BalancedSampler(items, class_balanced_weights(dataset), seed * 1000 + rank) if data.balanced
                       else EpochSampler(items[rank::world], seed * 1000 + rank))
            source = DataPipeline.count().map(lambda n: {"example": sampler(n), "number": n})
        else:
            source = read_sequence(items).shard(rank, world, allow_uneven=True).map(lambda e: {"example": e})
        loader = ClipLoader(dataset, features, train, seed, rank, data.mixup if train else 0.0, self.bad)
        self.pipeline = (source.map(loader, num_parallel_calls=data.num_parallel_calls)
                         .filter(lambda x: x is not None)
                         .bucket(batch_size or data.batch_size, drop_remainder=train)
                         .map(Collater())
                         .prefetch(data.prefetch)
                         .and_return())

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.pipeline:
            self.bad.check()
            yield batch

    def reset(self) -> None:
        self.pipeline.reset()

    def state_dict(self) -> dict:
        return {"pipeline": self.pipeline.state_dict(), "bad": self.bad.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.pipeline.load_state_dict(state["pipeline"])
        self.bad.load_state_dict(state["bad"])
