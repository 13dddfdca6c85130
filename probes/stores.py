"""`python -m probes extract` and `python -m probes retrieval build|query|eval`."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Optional

import faiss
import torch

from probes.config import ExtractConfig, RetrievalConfig
from ssast.config import ConfigError, load_config, save_config
from ssast.data.pipeline import ClipReader, DataError
from ssast.data.readers import read_dataset
from ssast.distributed import init_distributed, resolve_device
from ssast.embeddings import Store, embed_batch, extract
from ssast.features import fbank_features
from ssast.models import ASTEncoder, CheckpointError, load_encoder
from ssast.retrieval import build_index, query_by_example, search, to_cpu


def source_encoder(cfg: ExtractConfig) -> Optional[ASTEncoder]:
    if not cfg.checkpoint:
        return None
    return load_encoder(cfg.checkpoint, fstride=cfg.fstride, tstride=cfg.tstride, input_tdim=cfg.input_tdim)


def extract_store(cfg: ExtractConfig) -> Store:
    """The store of `cfg.dataset` through `cfg.checkpoint` (sharded over the processes of a torchrun / SLURM
    launch), written or found complete."""
    device = str(resolve_device(cfg.device))
    dist = init_distributed(torch.device(device))
    encoder = source_encoder(cfg)
    dataset = read_dataset(cfg.dataset, cfg.data.root)
    store = extract(encoder, dataset, cfg.features, cfg.data, cfg.embed, cfg.store_dir, dist, device,
                    recipe=dataclasses.asdict(cfg))
    if dist.main:
        print(f"store {store.folder}: {len(store.index)} clips ({store.meta['bad_clips']} unreadable), features "
              + ", ".join(f"{n} [{store.meta['dims'][n]}]" for n in store.names), file=sys.stderr)
    return store


def build(cfg: RetrievalConfig) -> dict:
    store = extract_store(cfg)
    feature = store.names[0]  # the first of embed.layers x embed.poolings
    x = store.features(feature)
    index, sizes = build_index(x, cfg.index)
    print(f"index {cfg.index.kind} over {len(x)} x {x.shape[1]} ({feature}): " +
          ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in sizes.items()), file=sys.stderr)
    folder = Path(cfg.index_dir)
    folder.mkdir(parents=True, exist_ok=True)
    faiss.write_index(to_cpu(index), str(folder / "index.faiss"))
    info = {"feature": feature, "store": str(store.folder), "sizes": sizes, "paths": store.paths}
    (folder / "index.json").write_text(json.dumps(info))
    save_config(cfg, folder / "config.yaml")  # how the indexed clips were embedded, for queries
    return {"index_dir": str(folder), **sizes}


def _load(cfg: RetrievalConfig) -> tuple[faiss.Index, dict]:
    folder = Path(cfg.index_dir)
    if not (folder / "index.json").is_file():
        raise CheckpointError(f"no index in {folder}: build one with python -m probes retrieval build")
    info = json.loads((folder / "index.json").read_text())
    index = faiss.read_index(str(folder / "index.faiss"))
    if cfg.index.gpu and faiss.get_num_gpus() > 0 and info["sizes"]["kind"] != "hnsw":
        index = faiss.index_cpu_to_all_gpus(index)
    return index, info


@torch.no_grad()
def query(cfg: RetrievalConfig) -> dict:
    """The `k` nearest indexed clips of each audio file, embedded as the index's clips were."""
    if not cfg.files:
        raise ConfigError("config key 'files' must list the audio files to query, got []")
    index, info = _load(cfg)
    built = load_config(RetrievalConfig, Path(cfg.index_dir) / "config.yaml")
    encoder = source_encoder(built)
    reader, out = ClipReader(built.features), {}
    for path in cfg.files:
        try:
            fbank = fbank_features(reader(path), built.features)
        except ValueError as e:
            raise DataError(f"cannot read audio {path}: {e}") from None
        x = embed_batch(encoder, fbank[None], built.embed)[info["feature"]].numpy()
        scores, ids = search(index, x, cfg.k)
        out[path] = [(info["paths"][i], float(s)) for s, i in zip(scores[0], ids[0]) if i >= 0]
        print(f"{path}:")
        for rank, (hit, s) in enumerate(out[path], 1):
            print(f"  {rank:2d}. {s:.4f} {hit}")
    return out


def evaluate_index(cfg: RetrievalConfig) -> dict:
    """Query by example with every indexed clip (itself excluded): precision, recall and mAP at k."""
    index, info = _load(cfg)
    store = Store(info["store"])
    x = store.features(info["feature"])
    result = {**query_by_example(index, x, store.label_array(), cfg.k), "index": info["sizes"]}
    print(f"{info['sizes']['kind']} index, {len(x)} clips, k={cfg.k}: precision@k {result['precision_at_k']:.4f}, "
          f"recall@k {result['recall_at_k']:.4f}, mAP@k {result['map_at_k']:.4f}, "
          f"{result['queries_per_s']:.0f} queries/s")
    return result


def retrieval(action: str, cfg: RetrievalConfig) -> dict:
    return {"build": build, "query": query, "eval": evaluate_index}[action](cfg)
