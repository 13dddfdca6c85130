"""Fair linear probes on stored embeddings: the feature (layer and pooling) and the L2 strength are chosen on
held-out training data, never on the test part, and the standardisation is fitted on the training part only.

A probe is a standardised logistic regression: multinomial for single-label data (accuracy), one-vs-rest for
multi-label data (mAP, `ssast.metrics`). Two solvers minimise the same objective, mean loss + ||W||^2 / (2 C n)
(scikit-learn's C * sum of losses + ||W||^2 / 2, divided by C n): scikit-learn's lbfgs on CPU, and a full-batch
torch L-BFGS on any device (``solver: torch``, the default on a GPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Sequence

import numpy as np
import torch
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler

from ssast.metrics import accuracy, mean_average_precision

Solver = Literal["auto", "sklearn", "torch"]


def _torch_logistic(x: np.ndarray, y: np.ndarray, test_x: np.ndarray, c: float, multi_label: bool,
                    n_classes: int, device: str) -> np.ndarray:
    xt = torch.as_tensor(x, dtype=torch.float32, device=device)
    w = torch.zeros(x.shape[1], n_classes, device=device, requires_grad=True)
    b = torch.zeros(n_classes, device=device, requires_grad=True)
    target = torch.as_tensor(y, device=device)
    target = target.float() if multi_label else target.long()
    optimizer = torch.optim.LBFGS([w, b], lr=1, max_iter=1000, tolerance_grad=1e-6, tolerance_change=1e-9,
                                  history_size=20, line_search_fn="strong_wolfe")
    loss_fn = torch.nn.functional.binary_cross_entropy_with_logits if multi_label else torch.nn.functional.cross_entropy
    # one-vs-rest sums a binary loss per class, as scikit-learn's separate binary problems do
    scale = n_classes if multi_label else 1

    def closure():
        optimizer.zero_grad()
        loss = scale * loss_fn(xt @ w + b, target) + (w * w).sum() / (2 * c * len(xt))
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        logits = torch.as_tensor(test_x, dtype=torch.float32, device=device) @ w + b
        return (logits.sigmoid() if multi_label else logits.softmax(-1)).cpu().numpy()


def probe_scores(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, c: float, multi_label: bool = False,
                 solver: Solver = "sklearn", device: str = "cpu", n_classes: Optional[int] = None) -> np.ndarray:
    """Class scores [n_test, classes] of a probe fitted on the training part (standardised on it)."""
    scaler = StandardScaler().fit(train_x)
    x, test = scaler.transform(train_x), scaler.transform(test_x)
    n_classes = n_classes or (train_y.shape[1] if multi_label else int(train_y.max()) + 1)
    if solver == "torch" or (solver == "auto" and device != "cpu"):
        return _torch_logistic(x, train_y, test, c, multi_label, n_classes, device)
    if multi_label:
        clf = OneVsRestClassifier(LogisticRegression(C=c, max_iter=1000, tol=1e-4)).fit(x, train_y)
        return clf.predict_proba(test)
    clf = LogisticRegression(C=c, max_iter=1000, tol=1e-4).fit(x, train_y)
    scores = np.zeros((len(test), n_classes))
    scores[:, clf.classes_] = clf.predict_proba(test)
    return scores


def task_metric(y: np.ndarray, scores: np.ndarray, multi_label: bool) -> float:
    return mean_average_precision(y, scores) if multi_label else accuracy(y, scores)


@dataclass
class ProbeResult:
    score: float  # test metric of the chosen feature and C
    feature: str
    c: float
    by_feature: dict[str, float]  # test metric of each feature at its own chosen C (the layer/pooling sweep)


def fair_probe(features: dict[str, np.ndarray], y: np.ndarray, train: np.ndarray, test: np.ndarray,
               inner: Sequence[tuple[np.ndarray, np.ndarray]], cs: Sequence[float], multi_label: bool = False,
               solver: Solver = "sklearn", device: str = "cpu") -> ProbeResult:
    """Choose (feature, C) by the mean metric over the `inner` (fit, held-out) splits of the training indices,
    refit on all of `train` and score `test`. No index of `test` is ever used before the final score."""
    n_classes = y.shape[1] if multi_label else int(y.max()) + 1
    fit = lambda x, a, b, c: task_metric(y[b], probe_scores(x[a], y[a], x[b], c, multi_label, solver, device,
                                                              n_classes), multi_label)
    chosen: dict[str, tuple[float, float]] = {}  # feature -> (inner metric, C)
    for name, x in features.items():
        inner_scores = [np.mean([fit(x, a, b, c) for a, b in inner]) for c in cs]
        best = int(np.argmax(inner_scores))
        chosen[name] = (inner_scores[best], cs[best])
    by_feature = {name: fit(x, train, test, chosen[name][1]) for name, x in features.items()}
    feature = max(chosen, key=lambda n: chosen[n][0])
    return ProbeResult(by_feature[feature], feature, chosen[feature][1], by_feature)


def mean_std_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean, sample standard deviation and the half-width of the t confidence interval of the mean (0 and 0
    for a single value)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float(v.mean()), 0.0, 0.0
    std = float(v.std(ddof=1))
    return float(v.mean()), std, float(stats.t.ppf((1 + confidence) / 2, len(v) - 1) * std / np.sqrt(len(v)))
