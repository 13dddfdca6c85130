"""Clip embeddings of a frozen encoder, streamed to disk: the store that probes, kNN and retrieval read.

A store is a folder: ``store.json`` (what it holds: the encoder's weight hash, the recipe, the clips' paths and
labels, every shard's row count) and, per process, ``shard<r>/<feature>.npy`` arrays of one row per clip, written
batch by batch, so memory stays flat whatever the data set size (readers memory-map them). A feature is a layer and a
pooling, ``L<layer>_<pooling>``, or ``fbank`` (the fbank's mean and std over time, no encoder). Rows are stored
with their clip's index in the data set; `Store.features` returns them in data-set order, so any number of
processes gives the same store. Extraction with the same inputs (weights, recipe, clip list) finds the store
complete and reuses it; two jobs that want the same store (the runs of a sweep) take turns on a lock on its folder,
held by the main process of each, and the second finds it complete.

Layers count from 1 to the encoder's depth (negative: from the end); layer ``depth`` is the final normed output
(what fine-tuning pools), earlier layers the raw block outputs; ``layer_mix`` adds the mean or the concatenation of
the layers asked for. Poolings of the patch tokens: ``avgtok`` (mean),
``cls`` (mean of the prefix tokens), ``meanstd`` (mean and std, concatenated), ``freq`` (mean over time of each
frequency row of the patch grid, concatenated: keeps where in frequency). Clips longer than the encoder's input
are cut into windows of its input length and the window embeddings averaged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch

from ssast.cli import progress
from ssast.config import Positive, PositiveFloat
from ssast.data.index import Dataset
from ssast.data.loader import AudioLoader
from ssast.data.sampling import DataConfig
from ssast.distributed import Dist, barrier
from ssast.features import FeatureConfig
from ssast.files import FolderLock, WriteError, atomic_write_text, no_space
from ssast.models import ASTEncoder
from ssast.models.ast import Pooling
from ssast.models.formats import weights_hash

log = logging.getLogger("ssast")


@dataclass
class EmbedFeatureConfig(FeatureConfig):
    """The front end of embeddings. Its normalisation is the encoder's own (its training run's, or what a released
    or Hugging Face source stores): left unset here, it follows the encoder; set, it is used, with a warning naming
    both values when it differs from the encoder's."""

    mean: Optional[float] = None
    std: Optional[PositiveFloat] = None

    def resolved(self, trained: Optional[FeatureConfig], source: str) -> FeatureConfig:
        """The front end to embed `source` with: this one, with the normalisation and mel bins of `trained` (the
        front end `source` was trained with; None: the fbank statistics, or encoders with no training), and
        AudioSet's normalisation where neither says."""
        values = {f.name: getattr(self, f.name) for f in fields(FeatureConfig)}
        for key in ("mean", "std"):
            given, own = values[key], getattr(trained, key) if trained else None
            if given is None:
                values[key] = own if own is not None else getattr(FeatureConfig(), key)
            elif own is not None and given != own:
                log.warning("features.%s=%g differs from %s's own %g: embedding with %g as asked", key, given, source,
                            own, given)  # fmt: skip
        if trained is not None:
            values["num_mel_bins"] = trained.num_mel_bins
        front = FeatureConfig(**values)
        log.info("front end of %s: mean %g, std %g, %d mel bins", source, front.mean, front.std, front.num_mel_bins)
        return front


@dataclass
class EmbedConfig:
    """Which features a store holds (layers x poolings, layer mixes), their dtype, and the batch size."""

    layers: list[int] = field(default_factory=lambda: [-1])  # 1..depth, or negative from the end
    poolings: list[Pooling] = field(default_factory=lambda: ["avgtok"])
    # also, per pooling, the mean (``Lmean_<pooling>``) or the concatenation (``Lcat_<pooling>``) of the layers
    layer_mix: list[Literal["mean", "concat"]] = field(default_factory=list)
    dtype: Literal["float16", "float32"] = "float32"
    batch_size: Positive = 32  # clips per batch (128 raised the extraction's peak memory by about 200 MB)


def pooled_dim(encoder: Optional[ASTEncoder], feature: str, cfg: EmbedConfig, fbank_bins: int = 128) -> int:
    """The width of one feature's rows."""
    if encoder is None:
        return 2 * fbank_bins
    layers, pooling = feature.split("_", 1)
    dim = encoder.pooled_dim(pooling)
    return dim * len(cfg.layers) if layers == "Lcat" else dim


def layer_number(encoder: ASTEncoder, layer: int) -> int:
    """Layer 1..depth of a layer index that may count from the end."""
    depth = encoder.cfg.depth
    n = layer + depth + 1 if layer < 0 else layer
    if not 1 <= n <= depth:
        raise ValueError(f"layer {layer} does not exist in a {depth}-layer encoder")
    return n


MIXES = {"mean": "Lmean", "concat": "Lcat"}


def feature_names(encoder: Optional[ASTEncoder], cfg: EmbedConfig) -> list[str]:
    """The features a store of `encoder` holds, in order (``fbank`` without an encoder)."""
    if encoder is None:
        return ["fbank"]
    return [f"L{layer_number(encoder, layer)}_{p}" for layer in cfg.layers for p in cfg.poolings] + [
        f"{MIXES[m]}_{p}" for m in cfg.layer_mix for p in cfg.poolings
    ]


@torch.no_grad()
def embed_batch(encoder: Optional[ASTEncoder], fbank: torch.Tensor, cfg: EmbedConfig) -> dict[str, torch.Tensor]:
    """[B, T, F] normalised fbank -> {feature: [B, D]}, windows of the encoder's input averaged."""
    if encoder is None:
        return {"fbank": torch.cat([fbank.mean(1), fbank.std(1)], 1)}
    n, t, f = fbank.shape
    window = encoder.cfg.input_tdim
    if t % window:
        raise ValueError(f"clip length {t} frames is not a multiple of the encoder input ({window} frames)")
    windows = fbank.reshape(n * t // window, window, f)
    wanted = {layer_number(encoder, layer) for layer in cfg.layers}
    out: dict[str, list[torch.Tensor]] = {}
    for i in range(0, len(windows), cfg.batch_size):
        layers = encoder.forward_layers(windows[i : i + cfg.batch_size])
        for layer in wanted:
            for p in cfg.poolings:
                out.setdefault(f"L{layer}_{p}", []).append(encoder.pool(layers[layer - 1].float(), p))
    pooled = {k: torch.cat(v).reshape(n, t // window, -1).mean(1) for k, v in out.items()}
    for mix in cfg.layer_mix:
        for p in cfg.poolings:
            per_layer = [pooled[f"L{layer_number(encoder, layer)}_{p}"] for layer in cfg.layers]
            pooled[f"{MIXES[mix]}_{p}"] = torch.stack(per_layer).mean(0) if mix == "mean" else torch.cat(per_layer, 1)
    return pooled


def store_key(encoder: Optional[ASTEncoder], dataset: Dataset, features: FeatureConfig, cfg: EmbedConfig) -> str:
    """What a store's contents depend on: weights, front end, features asked for, and the clip list."""
    h = hashlib.sha256(weights_hash(encoder).encode())
    h.update(
        json.dumps(
            [features.__dict__, feature_names(encoder, cfg), cfg.dtype, [(e.path, e.labels) for e in dataset.examples]],
            sort_keys=True,
            default=str,
        ).encode()
    )
    return h.hexdigest()[:16]


class RowWriter:
    """An ``.npy`` file of shape (n, d) filled block by block with plain writes. A writable memory map would do
    the same, but the pages it writes count in the process's resident memory until it is closed, which grows with
    the data set; the page cache of a plain file does not."""

    def __init__(self, path: Path, n: int, d: int, dtype):
        header = np.lib.format.open_memmap(path, "w+", dtype, (n, d))  # the header and a sparse file of full size
        offset, self.dtype = header.offset, dtype
        del header
        self.file = open(path, "r+b")
        self.file.seek(offset)

    def write(self, rows: np.ndarray) -> None:
        """Append rows."""
        self.file.write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())

    def close(self) -> None:
        """Close the file."""
        self.file.close()


class Store:
    """A finished store: `features(name)` [N, D] rows in data-set order (clips that could not be read are
    missing: `index` says which data-set clips the rows are), `paths`, `labels`."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "store.json").read_text())
        rows = [np.load(self.folder / f"shard{r}" / "index.npy") for r in range(self.meta["shards"])]
        self.index = np.concatenate(rows)
        self._order = np.argsort(self.index, kind="stable")
        self.index = self.index[self._order]
        self.paths = [self.meta["paths"][i] for i in self.index]
        self.labels = [self.meta["labels"][i] for i in self.index]
        self.classes, self.multi_label = self.meta["classes"], self.meta["multi_label"]

    @property
    def names(self) -> list[str]:
        """The features the store holds."""
        return self.meta["features"]

    def features(self, name: str) -> np.ndarray:
        """Rows [N, D] of one feature in data-set order (float32)."""
        if name not in self.names:
            raise KeyError(f"store {self.folder} holds {self.names}, not {name!r}")
        parts = [
            np.load(self.folder / f"shard{r}" / f"{name}.npy", mmap_mode="r")[:n]
            for r, n in enumerate(self.meta["rows"])
        ]
        return np.concatenate(parts)[self._order].astype(np.float32)

    def label_array(self) -> np.ndarray:
        """Class ids [N] (single-label data) or multi-hot [N, C]."""
        if not self.multi_label:
            return np.array([labels[0] if labels else -1 for labels in self.labels])
        out = np.zeros((len(self.labels), len(self.classes)), dtype=np.float32)
        for i, labels in enumerate(self.labels):
            out[i, labels] = 1
        return out


def extract(
    encoder: Optional[ASTEncoder],
    dataset: Dataset,
    features: FeatureConfig,
    data: DataConfig,
    cfg: EmbedConfig,
    store_dir: str | Path,
    dist: Optional[Dist] = None,
    device: str | torch.device = "cpu",
    recipe: Optional[dict] = None,
    desc: str = "embedding",
) -> Store:
    """Embed every clip of `dataset` into the store ``<store_dir>/<key>`` (`store_key`), or find it complete."""
    dist = dist or Dist()
    key = store_key(encoder, dataset, features, cfg)
    folder = Path(store_dir) / key
    if _complete(folder, key):
        return Store(folder)
    with _writing(folder, dist.main):
        barrier(dist)
        if _complete(folder, key):  # written by a job that held the lock before this one
            return Store(folder)
        try:
            _write_store(encoder, dataset, features, data, cfg, key, folder, dist, torch.device(device), recipe, desc)
        except OSError as e:
            full = no_space(e, Path(e.filename) if e.filename else folder / "store.json")
            if full is None:
                raise
            for shard in folder.glob("shard*"):  # no half store: the next extraction embeds its clips anew
                shutil.rmtree(shard, ignore_errors=True)
            raise WriteError(
                f"{full}; the store {folder} was not completed: free some space and run it again"
            ) from None
    return Store(folder)


def _complete(folder: Path, key: str) -> bool:
    """Whether the store of `key` in `folder` is whole (``store.json`` comes last)."""
    meta = folder / "store.json"
    return meta.is_file() and json.loads(meta.read_text()).get("key") == key


@contextlib.contextmanager
def _writing(folder: Path, main: bool):
    """One writer per store: the main process holds an advisory lock on the folder (released by the kernel if it
    dies); the other processes of its job wait for it at a barrier."""
    if not main:
        yield
        return
    with FolderLock(folder, "an embedding store being written", wait_s=math.inf):
        yield


def _write_store(encoder, dataset, features, data, cfg, key, folder, dist, device, recipe, desc) -> None:
    """Embed this process's share into its shard, then (main process) write ``store.json``."""
    dims = {name: pooled_dim(encoder, name, cfg, features.num_mel_bins) for name in feature_names(encoder, cfg)}
    loader = AudioLoader(
        dataset, features, data, train=False, rank=dist.rank, world=dist.world, batch_size=cfg.batch_size, device=device
    )
    n = len(range(dist.rank, len(dataset.examples), dist.world))
    _embed_shard(encoder, loader, n, cfg, dims, folder / f"shard{dist.rank}", device, desc, dist.main)
    barrier(dist)
    if dist.main:
        shards = [json.loads((folder / f"shard{r}" / "rows.json").read_text()) for r in range(dist.world)]
        meta = {
            "key": key,
            "weights": weights_hash(encoder),
            "features": list(dims),
            "dims": dims,
            "dtype": cfg.dtype,
            "shards": dist.world,
            "rows": [s["rows"] for s in shards],
            "bad_clips": sum(s["bad"] for s in shards),
            "paths": [e.path for e in dataset.examples],
            "labels": [list(e.labels) for e in dataset.examples],
            "classes": dataset.classes,
            "multi_label": dataset.multi_label,
            "recipe": recipe or {},
        }
        atomic_write_text(folder / "store.json", json.dumps(meta))
    barrier(dist)


def _embed_shard(
    encoder: Optional[ASTEncoder],
    loader: AudioLoader,
    n: int,
    cfg: EmbedConfig,
    dims: dict[str, int],
    shard: Path,
    device: torch.device,
    desc: str,
    show: bool,
) -> None:
    """This process's `n` clips into ``shard/<feature>.npy`` rows, ``index.npy`` (each row's data-set index) and
    ``rows.json`` (rows written, unreadable clips, seconds)."""
    shard.mkdir(parents=True, exist_ok=True)
    dtype = np.float16 if cfg.dtype == "float16" else np.float32
    arrays = {name: RowWriter(shard / f"{name}.npy", n, d, dtype) for name, d in dims.items()}
    indices: list[int] = []
    if encoder is not None:
        encoder.to(device).eval()
    autocast = (
        torch.autocast(device.type, torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    )
    rows, start = 0, time.perf_counter()
    with progress(n, desc, show) as advance, autocast:
        for batch in loader:
            out = embed_batch(encoder, batch["fbank"].to(device), cfg)
            for name, array in arrays.items():
                array.write(out[name].float().cpu().numpy())
            indices += batch["index"]  # the data-set index of each row (bad clips have none)
            rows += len(batch["path"])
            advance(len(batch["path"]))
    for array in arrays.values():
        array.close()
    np.save(shard / "index.npy", np.array(indices, dtype=np.int64))
    stats = {"rows": rows, "bad": loader.counts()["bad_clips"], "seconds": time.perf_counter() - start}
    atomic_write_text(shard / "rows.json", json.dumps(stats))
