"""Classification metrics of the AudioSet / ESC-50 / Speech Commands protocols.

mAP and mAUC are scikit-learn's per-class ``average_precision_score`` and ``roc_auc_score`` averaged over the
classes where they are defined: a class with no positive in `targets` has neither an AP nor an AUC (and a class
with no negative has no AUC), so it is left out of the mean rather than counted as 0 (scikit-learn's AP of such
a class) or raising (its AUC). `per_class_ap` gives NaN for those classes, so the files written say which.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm
from sklearn.metrics import average_precision_score, roc_auc_score


def _check(targets: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    targets, scores = np.asarray(targets), np.asarray(scores, dtype=np.float64)
    if targets.ndim != 2 or targets.shape != scores.shape:
        raise ValueError(f"targets and scores must both be [clips, classes], got {targets.shape} and {scores.shape}")
    return targets > 0.5, scores  # mixed-up soft targets count as positive above one half


def per_class_ap(targets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Average precision of each class; NaN for a class without a positive clip."""
    y, s = _check(targets, scores)
    return np.array(
        [average_precision_score(y[:, c], s[:, c]) if y[:, c].any() else math.nan for c in range(y.shape[1])]
    )


def per_class_auc(targets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of each class; NaN for a class without a positive or without a negative clip."""
    y, s = _check(targets, scores)
    return np.array(
        [roc_auc_score(y[:, c], s[:, c]) if 0 < y[:, c].sum() < len(y) else math.nan for c in range(y.shape[1])]
    )


def _mean_defined(values: np.ndarray, name: str) -> float:
    if np.isnan(values).all():
        raise ValueError(f"{name} is undefined: no class has both positive and negative clips")
    return float(np.nanmean(values))


def mean_average_precision(targets: np.ndarray, scores: np.ndarray) -> float:
    """Mean over classes with a positive clip of the per-class average precision."""
    return _mean_defined(per_class_ap(targets, scores), "mAP")


def mean_auc(targets: np.ndarray, scores: np.ndarray) -> float:
    """Mean over classes with positive and negative clips of the per-class ROC AUC."""
    return _mean_defined(per_class_auc(targets, scores), "mAUC")


def d_prime(auc: float) -> float:
    """Sensitivity index of an AUC: sqrt(2) * Phi^-1(auc)."""
    return float(math.sqrt(2.0) * norm.ppf(auc))


def accuracy(targets: np.ndarray, scores: np.ndarray) -> float:
    """Fraction of clips whose top-scored class is their (top) target class."""
    targets, scores = np.asarray(targets), np.asarray(scores)
    if targets.ndim == 2:
        targets = targets.argmax(1)
    return float((scores.argmax(1) == targets).mean())
