"""The probe stage's commands: ``linear`` (probes of a recipe, printed as tables), ``extract`` (one store) and
``retrieval build|query|eval|report``. The work is the library's: `ssast.eval.probe_suite`, `ssast.eval.embeddings`,
`ssast.eval.retrieval`; the report page is `probes.report`'s."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Optional

import faiss
import torch

from probes.config import ExtractConfig, ProbeConfig, RetrievalConfig
from probes.report import write_report
from ssast.config import ConfigError, load_config, save_config
from ssast.data.index import read_dataset
from ssast.data.loader import ClipReader
from ssast.data.sampling import DataError
from ssast.distributed import World, set_up
from ssast.eval.embeddings import Store, embed_batch, extract
from ssast.eval.probe_suite import run_probes
from ssast.eval.retrieval import build_index, query_by_example, search, to_cpu
from ssast.eval.tables import choices, plot_sweep, sweep, table
from ssast.features import FeatureConfig, fbank_features
from ssast.files import atomic_write_text
from ssast.models import ASTEncoder, CheckpointError
from ssast.models.loading import encoder_and_front_end
from ssast.train.run_folder import claim_output, hold_folder

INDEX_FILES = ("index.faiss", "index.json", "config.yaml")


def linear(cfg: ProbeConfig) -> dict:
    """Probe every feature source of the recipe on every task; print the tables, write `cfg.output`."""
    if cfg.output:
        claim_output(
            Path(cfg.output).parent, [Path(cfg.output).name], "probe results", "output", overwrite=cfg.overwrite
        )
    results = run_probes(cfg)
    if not results:  # not the main process
        return {}
    names = [t.name for t in cfg.tasks]
    swept = any(len(r[0]["by_feature"]) > 1 for g in results.values() for r in g.values())
    print(table(results, names))
    print(choices(results, names))
    if swept:
        print(sweep(results, names))
    if cfg.output:
        atomic_write_text(Path(cfg.output), json.dumps(results, indent=1))
        if swept:
            plot_sweep(results, names, Path(cfg.output).with_suffix(".sweep.png"))
    return results


def source_encoder(cfg: ExtractConfig) -> tuple[Optional[ASTEncoder], FeatureConfig]:
    """The encoder `cfg.checkpoint` names (None for ``fbank``, the fbank statistics) and the front end to embed with
    (the encoder's own normalisation unless the recipe sets one)."""
    if not cfg.checkpoint:
        raise ConfigError(
            "config key 'checkpoint' must name a checkpoint or a Hugging Face AST directory, or be fbank "
            "(the fbank's mean and std, no encoder)"
        )
    if cfg.checkpoint == "fbank":
        return None, cfg.features.resolved(None, "the fbank statistics")
    geometry = dict(fstride=cfg.fstride, tstride=cfg.tstride, input_tdim=cfg.input_tdim)
    encoder, trained = encoder_and_front_end(cfg.checkpoint, **geometry)
    return encoder, cfg.features.resolved(trained, cfg.checkpoint)


def extract_store(cfg: ExtractConfig, world: Optional[World] = None) -> Store:
    """The store of `cfg.dataset` through `cfg.checkpoint` (sharded over the processes of a torchrun / SLURM
    launch), written or found complete."""
    world = world or set_up(cfg.device)
    device, dist = str(world.device), world.dist
    encoder, front_end = source_encoder(cfg)
    dataset = read_dataset(cfg.dataset, cfg.data.root)
    store = extract(
        encoder, dataset, front_end, cfg.data, cfg.embed, cfg.store_dir, dist, device, recipe=dataclasses.asdict(cfg)
    )
    if dist.main:
        print(
            f"store {store.folder}: {len(store.index)} clips ({store.meta['bad_clips']} unreadable), features "
            + ", ".join(f"{n} [{store.meta['dims'][n]}]" for n in store.names),
            file=sys.stderr,
        )
    return store


def build(cfg: RetrievalConfig) -> dict:
    """An index over the store's first feature, written to `cfg.index_dir` with its clip list and recipe; one build
    at a time writes into a folder."""
    folder = Path(cfg.index_dir)
    world = set_up(cfg.device)
    with hold_folder(folder, "a retrieval index build", world.dist, "index_dir"):
        claim_output(folder, INDEX_FILES, "an index", "index_dir", overwrite=cfg.overwrite)
        return _build(cfg, folder, world)


def _build(cfg: RetrievalConfig, folder: Path, world: World) -> dict:
    store = extract_store(cfg, world)
    feature = store.names[0]  # the first of embed.layers x embed.poolings
    x = store.features(feature)
    index, sizes = build_index(x, cfg.index)
    print(
        f"index {cfg.index.kind} over {len(x)} x {x.shape[1]} ({feature}): "
        + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in sizes.items()),
        file=sys.stderr,
    )
    folder.mkdir(parents=True, exist_ok=True)
    faiss.write_index(to_cpu(index), str(folder / "index.faiss"))
    info = {
        "checkpoint": cfg.checkpoint,
        "data": f"{cfg.dataset.kind} {Path(cfg.data.root) / cfg.dataset.path}",
        "feature": feature,
        "store": str(store.folder),
        "sizes": sizes,
        "paths": store.paths,
        "labels": [[store.classes[c] for c in clip] for clip in store.labels],
    }
    atomic_write_text(folder / "index.json", json.dumps(info))
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
    """{file: [(indexed clip, cosine score, its labels)]}: the `k` nearest indexed clips of each audio file, embedded
    as the index's clips were."""
    if not cfg.files:
        raise ConfigError("config key 'files' must list the audio files to query, got []")
    index, info = _load(cfg)
    built = load_config(RetrievalConfig, Path(cfg.index_dir) / "config.yaml")
    encoder, front_end = source_encoder(built)
    reader, out = ClipReader(front_end), {}
    labels = info.get("labels") or [[] for _ in info["paths"]]  # indexes built before labels were stored
    for path in cfg.files:
        try:
            fbank = fbank_features(reader(path), front_end)
        except ValueError as e:
            raise DataError(f"cannot read audio {path}: {e}") from None
        x = embed_batch(encoder, fbank[None], built.embed)[info["feature"]].numpy()
        scores, ids = search(index, x, cfg.k)
        out[path] = [
            (info["paths"][i], float(s), ",".join(labels[i])) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0
        ]
        print(f"{path}:")
        for rank, (hit, s, label) in enumerate(out[path], 1):
            print(f"  {rank:2d}. {s:.4f} {label or '-'}  {hit}")
    return out


def evaluate_index(cfg: RetrievalConfig) -> dict:
    """Query by example with every indexed clip (itself excluded): precision, recall and mAP at k."""
    index, info = _load(cfg)
    store = Store(info["store"])
    x = store.features(info["feature"])
    result = {**query_by_example(index, x, store.label_array(), cfg.k), "index": info["sizes"]}
    print(
        f"{info['sizes']['kind']} index, {len(x)} clips: precision@{cfg.k} {result['precision_at_k']:.4f}, "
        f"recall@{cfg.k} {result['recall_at_k']:.4f}, mAP@{cfg.k} {result['map_at_k']:.4f}, "
        f"{result['queries_per_s']:.0f} queries/s"
    )
    return result


def report(cfg: RetrievalConfig) -> dict:
    """The retrieval report of the index, a static folder in `cfg.out` (`probes.report`); its metrics."""
    if not cfg.out:
        raise ConfigError("config key 'out' must name a folder for the report, got ''")
    index, info = _load(cfg)
    store = Store(info["store"])
    out = Path(cfg.out)
    claim_output(out, ["index.html", "metrics.json"], "a retrieval report", "out", overwrite=cfg.overwrite)
    x = store.features(info["feature"])
    metrics = write_report(index, info, x, store.label_array(), cfg.k, out, cfg.queries_per_class, cfg.max_queries)
    o = metrics["overall"]
    summary = f"precision@{cfg.k} {o['precision_at_k']:.4f}, mAP@{cfg.k} {o['map_at_k']:.4f}"
    print(f"{out / 'index.html'}: {len(x)} clips: {summary}")
    return metrics


RETRIEVAL = {"build": build, "query": query, "eval": evaluate_index, "report": report}
