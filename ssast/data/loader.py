"""The loader: clips read, decoded and turned into features in batches, on fairseq2's native data pipeline.

Batch k holds the examples numbered k * B to (k + 1) * B - 1: in training a running number picks an example through
the training sampler (`ssast.data.sampling`), in evaluation it indexes the rank's shard. `num_parallel_calls` worker
pipelines each read + decode + run the front end + collate every W-th batch in their own prefetch thread, and the
loader takes their batches in turn, the way a DataLoader's worker processes do. Bad clips are dropped from their
batch, which then comes out smaller. Whole batches per thread rather than fairseq2's parallel map over clips: that
map waits for its whole group before handing results on, and its pipeline thread collates alone
(`benchmarks/data_pipeline.py` measures both).

Every random draw of an example (crop, SpecAugment, noise, mixup) comes from a generator seeded by (seed, rank,
the example's running number), and batch k always holds the same examples. The state of a loader is
therefore the number of batches it has handed out: a resumed loader starts its counter there and yields
exactly the batches an uninterrupted run would have seen, with nothing buffered in the checkpoint. This is the
only module that imports fairseq2.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Iterator, Optional

import numpy as np
import torch
from fairseq2.data.audio import AudioDecoder
from fairseq2.data.data_pipeline import DataPipeline, FileMapper, read_sequence

from ssast.data.index import Dataset
from ssast.data.sampling import DataConfig, DataError, Mixture, MixtureSampler, training_sampler
from ssast.features import (
    FeatureConfig,
    batch_model_input,
    check_waveform,
    collate_windows,
    kaldi_fbank,
    model_input,
    prepare_waveform,
    window_samples,
)

log = logging.getLogger(__name__)


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
            raise ValueError(_reason(e, path)) from None
        if audio["waveform"].numel() == 0:
            raise ValueError("no samples")
        return check_waveform(
            prepare_waveform(audio["waveform"], int(audio["sample_rate"]), self.features), self.features.sample_rate
        )


def _reason(e: Exception, path: str) -> str:
    """One line on why a file could not be read: fairseq2's message and the decoder's reason, which it nests."""
    if os.path.isdir(path):
        return "is a folder, not an audio file"
    lines = [str(x).splitlines()[0].removesuffix(" See nested exception for details.") for x in (e, e.__cause__) if x]
    reason = " ".join(lines) or type(e).__name__
    if "Format not recognised" in reason:
        reason += " (libsndfile reads wav, flac, ogg and mp3: convert other formats, e.g. with prepare's flac=)"
    return reason


class ClipLoader:
    """One example (part, position) of a mixture, with its running number -> [{"fbank", "target", "path"}] (`views`
    of them in training); ValueError with the reason for a bad clip."""

    def __init__(
        self,
        mixture: Mixture,
        features: FeatureConfig,
        train: bool,
        seed: int,
        rank: int,
        mixup: float,
        views: int = 1,
    ):
        self.mixture, self.features, self.train = mixture, features, train
        self.seed, self.rank, self.mixup, self.views = seed, rank, mixup, views
        self.read = ClipReader(features)

    def target(self, labels) -> torch.Tensor:
        """The label vector of a clip: multi-hot over the data set's classes."""
        t = torch.zeros(len(self.mixture.classes))
        t[list(labels)] = 1.0
        return t

    def __call__(self, item: tuple[int, int], number: Optional[int]) -> list[dict]:
        """The features and target of the clip `item` = (part, position) (in training, `views` crops of it, each
        with the draws of the running `number`)."""
        example = self.mixture.example(*item)
        wave = self.read(example.path)
        target = self.target(example.labels)
        clip = {"target": target, "path": example.path, "index": None if self.train else item[1]}
        if not self.train:
            return [{**view, **clip} for view in self.views_of(wave, 1)]
        seed = int(np.random.SeedSequence([self.seed, self.rank, number]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(seed)
        rng = np.random.default_rng(seed)
        if self.mixup > 0 and rng.random() < self.mixup:
            wave, clip["target"] = self._mix(wave, target, rng)
        return [{**view, **clip} for view in self.views_of(wave, self.views, generator)]

    def views_of(self, wave: torch.Tensor, views: int, generator: Optional[torch.Generator] = None) -> list[dict]:
        """The model inputs of a clip: {"fbank"}, or with ``features.device: model`` the window's samples {"wave",
        "frames"} (the filterbank follows on the device)."""
        f = self.features
        if f.device == "model":
            windows = [window_samples(wave, f, self.train, generator) for _ in range(views)]
            return [{"wave": samples, "frames": frames} for samples, frames in windows]
        whole = kaldi_fbank(wave, f.sample_rate, f.num_mel_bins, f.window)
        # model_input works in place on a crop of what it is given: each view but the last gets a copy
        copies = [whole.clone() for _ in range(views - 1)] + [whole]
        return [{"fbank": model_input(fbank, f, self.train, generator)} for fbank in copies]

    def batch(self, items: list[tuple[tuple[int, int], Optional[int]]]) -> dict:
        """(item, running number) pairs -> one collated batch of the readable clips, with "bad": "path: reason"
        lines."""
        clips, bad = [], []
        for item, number in items:
            try:
                clips += self(item, number)
            except ValueError as e:
                bad.append(f"{self.mixture.example(*item).path}: {e}")
        if not clips:
            return {"path": [], "bad": bad}
        if "wave" in clips[0]:
            inputs = collate_windows([c["wave"] for c in clips], [c["frames"] for c in clips], self.features)
        else:
            inputs = {"fbank": torch.stack([c["fbank"] for c in clips])}
        return {
            **inputs,
            "target": torch.stack([c["target"] for c in clips]),
            "path": [c["path"] for c in clips],
            "index": [c["index"] for c in clips],
            "bad": bad,
        }

    def _mix(self, wave: torch.Tensor, target: torch.Tensor, rng: np.random.Generator):
        """Waveform mixup with a uniformly drawn partner, lambda ~ Beta(10, 10), mixed labels."""
        partner = self.mixture.example(*self.mixture.locate(int(rng.integers(len(self.mixture)))))
        try:
            other = self.read(partner.path)
        except ValueError:
            return wave, target  # the partner is counted when it is read as an example itself
        other = torch.nn.functional.pad(other, (0, max(0, len(wave) - len(other))))[: len(wave)]
        lam = float(rng.beta(10, 10))
        mixed = lam * wave + (1 - lam) * other
        return mixed - mixed.mean(), lam * target + (1 - lam) * self.target(partner.labels)


class AudioLoader:
    """Iterable of collated batches {"fbank": [B, T, F], "target": [B, C], "path": [B], "index": [B]} on `device`,
    with exact resume (B is the batch size, less the batch's unreadable clips; "index": each clip's position in the
    data set in evaluation, None in training). With ``data.views`` V, a training batch is B / V clips, V rows each.
    For a GPU the workers pin their batches' memory and the copies do not wait; with ``features.device: model``
    the filterbank is computed there.

    Training is an endless stream (`training_sampler`). Evaluation is one pass over the rank's shard (every
    world-th example)."""

    def __init__(
        self,
        dataset: Dataset | Mixture,
        features: FeatureConfig,
        data: DataConfig,
        train: bool,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        batch_size: Optional[int] = None,
        device: torch.device | str = "cpu",
    ):
        self.features, self.device = features, torch.device(device)
        self.data, self.batch_size, self.views = data, batch_size or data.batch_size, data.views if train else 1
        self.clips = self.batch_size // self.views  # decoded per batch
        mixture = dataset if isinstance(dataset, Mixture) else Mixture([dataset])
        self.bad, self.names = BadClips(len(mixture), data.max_bad_fraction), mixture.names
        self.mixture = None
        if train:
            sampler = training_sampler(mixture, data, seed * 1000 + rank, rank, world)
            self.mixture = sampler if isinstance(sampler, MixtureSampler) else None
            self._examples = lambda k: [(sampler(n), n) for n in range(k * self.clips, (k + 1) * self.clips)]
            self._numbers = DataPipeline.count  # (first, step): endless
        else:
            if len(mixture.parts) > 1:
                raise DataError("evaluation reads one data set, not a mixture")
            shard = range(len(mixture))[rank::world]
            self._examples = lambda k: [((0, p), None) for p in shard[k * self.batch_size : (k + 1) * self.batch_size]]
            count = -(-len(shard) // self.batch_size)
            self._numbers = lambda first, step: read_sequence(range(first, count, step))
        self._clips = ClipLoader(mixture, features, train, seed, rank, data.mixup if train else 0.0, self.views)
        self._start(0)

    def _start(self, batches: int) -> None:
        """(Re)build the workers so that the loader hands out batches from number `batches` on."""
        self.batches = self._first = batches
        workers = self.data.num_parallel_calls
        self._workers = [
            iter(
                self._numbers(batches + j, workers)
                .map(lambda k: self._pinned(self._clips.batch(self._examples(k))))
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
                yield self._on_device(batch)

    def _pinned(self, batch: dict) -> dict:
        """In a worker: the batch's tensors in page-locked memory, when they are bound for a GPU."""
        if self.device.type != "cuda":
            return batch
        return {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in batch.items()}

    def _on_device(self, batch: dict) -> dict:
        """The batch on the loader's device, its filterbank computed there when the workers sent samples."""
        batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        if "wave" in batch:
            batch["fbank"] = batch_model_input(batch.pop("wave"), batch.pop("frames"), self.features)
        return batch

    def counts(self) -> dict[str, int]:
        """Clips read so far and, of those, the unreadable ones (skipped); over the whole run, resume included."""
        counts = {"clips_seen": self.bad.seen, "bad_clips": self.bad.bad}
        if self.mixture is not None:  # this process's draws of each source
            drawn = self.mixture.drawn(self.batches * self.clips)
            counts.update({f"clips_seen/{name}": int(n) for name, n in zip(self.names, drawn, strict=True)})
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
