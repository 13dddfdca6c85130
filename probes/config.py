"""The probe stage's configuration schemas: `ProbeConfig` (linear probes and kNN, from `ssast.eval.probe_suite`),
extraction and retrieval."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ssast.config import Positive
from ssast.data.sampling import DataConfig
from ssast.data.sources import FolderSource, SourceConfig
from ssast.eval.embeddings import EmbedConfig, EmbedFeatureConfig
from ssast.eval.probe_suite import KnnConfig, ProbeConfig, ProbeTaskConfig
from ssast.eval.retrieval import IndexConfig

__all__ = ["ExtractConfig", "KnnConfig", "ProbeConfig", "ProbeTaskConfig", "RetrievalConfig"]


@dataclass
class ExtractConfig:
    """One data set through one encoder (or the fbank statistics) into an embedding store."""

    # A checkpoint or Hugging Face AST directory (see ssast.models.load_model), or `fbank`: the fbank's mean and
    # std over time, no encoder.
    checkpoint: str = ""
    fstride: Optional[Positive] = None  # released fine-tuned checkpoints: their geometry (input_tdim also resizes)
    tstride: Optional[Positive] = None
    input_tdim: Optional[Positive] = None
    dataset: SourceConfig = field(default_factory=FolderSource)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    device: str = "auto"
    store_dir: str = "runs/embeddings"
    features: EmbedFeatureConfig = field(default_factory=EmbedFeatureConfig)  # the checkpoint's unless set
    data: DataConfig = field(default_factory=DataConfig)


@dataclass
class RetrievalConfig(ExtractConfig):
    """An index over a store: one feature (the first of embed.layers x embed.poolings)."""

    index: IndexConfig = field(default_factory=IndexConfig)
    index_dir: str = "runs/index"  # build writes the index and its id -> clip map here; query and eval read it
    overwrite: bool = False  # build: replace an index already in index_dir
    k: Positive = 10
    files: list[str] = field(default_factory=list)  # query: audio files
    out: str = ""  # report: the folder of the page (index.html, audio, spectrograms)
    queries_per_class: Positive = 2  # report: query clips shown per class
    max_queries: Positive = 50  # report: at most this many query clips shown
