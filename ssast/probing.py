"""Frozen-encoder evaluation: clip embeddings and a linear probe (standardise + logistic regression).

Clips longer than the encoder's input are cut into consecutive windows of its input length; a clip's
embedding is the mean over its windows of the mean-pooled final-norm patch tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from ssast.data.pipeline import AudioLoader, DataConfig
from ssast.data.readers import Dataset
from ssast.features import FeatureConfig
from ssast.models import ASTEncoder


@dataclass
class Features:
    """Normalised fbank of every clip of a data set, read once and shared by every encoder probed."""

    fbank: torch.Tensor  # [N, T, F]
    labels: np.ndarray  # [N] class index
    paths: list[str]


def read_features(dataset: Dataset, features: FeatureConfig, data: DataConfig, desc: str = "reading") -> Features:
    fbanks, labels, paths = [], [], []
    with tqdm(total=len(dataset.examples), desc=desc, unit="clip", mininterval=1) as bar:
        for batch in AudioLoader(dataset, features, data, train=False, batch_size=64):
            fbanks.append(batch["fbank"])
            labels.append(batch["target"].argmax(1).numpy())
            paths += batch["path"]
            bar.update(len(batch["path"]))
    return Features(torch.cat(fbanks), np.concatenate(labels), paths)


@torch.no_grad()
def embed(encoder: ASTEncoder, fbank: torch.Tensor, batch_size: int = 128, desc: str = "") -> np.ndarray:
    """[N, T, F] -> [N, d]: windows of the encoder's input length, avgtok pooling, mean over windows."""
    encoder.eval()
    n, t, f = fbank.shape
    window = encoder.cfg.input_tdim
    if t % window:
        raise ValueError(f"clip length {t} frames is not a multiple of the encoder input ({window} frames)")
    windows = fbank.reshape(n * t // window, window, f)
    starts = tqdm(range(0, len(windows), batch_size), desc=desc or "embedding", unit="batch", mininterval=1,
                  disable=not desc)
    pooled = torch.cat([encoder.pool(encoder(windows[i : i + batch_size]), "avgtok") for i in starts])
    return pooled.reshape(n, t // window, -1).mean(1).numpy()


def fbank_statistics(fbank: torch.Tensor) -> np.ndarray:
    """The non-learned baseline: per-mel-bin mean and standard deviation over time, [N, 2F]."""
    return torch.cat([fbank.mean(1), fbank.std(1)], 1).numpy()


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 c: float = 1.0) -> float:
    """Accuracy of a standardised multinomial logistic regression."""
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000, tol=1e-3))
    clf.fit(train_x, train_y)
    return float((clf.predict(test_x) == test_y).mean())


def fold_accuracy(x: np.ndarray, y: np.ndarray, folds: np.ndarray, c: float = 1.0) -> float:
    """Mean accuracy over folds, each tested on one fold and trained on the others (ESC-50)."""
    return float(np.mean([linear_probe(x[folds != k], y[folds != k], x[folds == k], y[folds == k], c)
                          for k in np.unique(folds)]))
