"""Fair linear probes on stored embeddings: the feature (layer and pooling) and the L2 strength are chosen on
held-out training data, never on the test part, and the standardisation is fitted on the training part only.

A probe is a standardised logistic regression: multinomial for single-label data (accuracy), one-vs-rest for
multi-label data (mAP, `ssast.eval.metrics`). Two solvers minimise the same objective, mean loss + ||W||^2 / (2 C n)
(scikit-learn's C * sum of losses + ||W||^2 / 2, divided by C n) to the same gradient tolerance: scikit-learn's
lbfgs on CPU, and a full-batch torch L-BFGS on any device (``solver: torch``, the default on a GPU). The C grid
is a regularisation path: each fit starts from the previous C's weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Sequence

import numpy as np
import torch
from joblib import Parallel, delayed
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from ssast.eval.metrics import accuracy, mean_average_precision

Solver = Literal["auto", "sklearn", "torch"]


def _torch_path(
    x: np.ndarray,
    y: np.ndarray,
    test_x: np.ndarray,
    cs: Sequence[float],
    multi_label: bool,
    n_classes: int,
    device: str,
    tol: float,
) -> list[np.ndarray]:
    xt = torch.as_tensor(x, dtype=torch.float32, device=device)
    test = torch.as_tensor(test_x, dtype=torch.float32, device=device)
    w = torch.zeros(x.shape[1], n_classes, device=device, requires_grad=True)
    b = torch.zeros(n_classes, device=device, requires_grad=True)
    target = torch.as_tensor(y, device=device)
    target = target.float() if multi_label else target.long()
    loss_fn = torch.nn.functional.binary_cross_entropy_with_logits if multi_label else torch.nn.functional.cross_entropy
    scale = n_classes if multi_label else 1  # one-vs-rest: a binary loss per class, summed, as scikit-learn's
    out = []
    for c in cs:  # each fit starts from the previous one's weights
        optimizer = torch.optim.LBFGS(
            [w, b],
            lr=1,
            max_iter=2000,
            tolerance_grad=tol,
            tolerance_change=1e-12,
            history_size=20,
            line_search_fn="strong_wolfe",
        )

        def closure(optimizer=optimizer, c=c):
            optimizer.zero_grad()
            loss = scale * loss_fn(xt @ w + b, target) + (w * w).sum() / (2 * c * len(xt))
            loss.backward()
            return loss

        optimizer.step(closure)
        with torch.no_grad():
            logits = test @ w + b
            out.append((logits.sigmoid() if multi_label else logits.softmax(-1)).cpu().numpy())
    return out


def probe_path(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    cs: Sequence[float],
    multi_label: bool = False,
    solver: Solver = "sklearn",
    device: str = "cpu",
    n_classes: Optional[int] = None,
    tol: float = 1e-4,
) -> list[np.ndarray]:
    """Class scores [n_test, classes] of the probe fitted on the training part (standardised on it) for each
    C of `cs` in turn, each fit warm-started from the previous one. `tol`: both solvers stop when the largest
    gradient entry of the mean-loss objective is below it."""
    scaler = StandardScaler().fit(train_x)
    x, test = scaler.transform(train_x), scaler.transform(test_x)
    n_classes = n_classes or (train_y.shape[1] if multi_label else int(train_y.max()) + 1)
    if solver == "torch" or (solver == "auto" and device != "cpu"):
        return _torch_path(x, train_y, test, cs, multi_label, n_classes, device, tol)
    estimator = LogisticRegression(max_iter=2000, tol=tol, warm_start=True)
    model = OneVsRestClassifier(estimator) if multi_label else estimator
    out = []
    # One BLAS thread: these small problems run several times slower when OpenMP threads (torch's and numpy's)
    # compete for the cores.
    with threadpool_limits(1):
        for c in cs:
            model.set_params(**{"estimator__C" if multi_label else "C": c}).fit(x, train_y)
            if multi_label:
                out.append(model.predict_proba(test))
            else:
                scores = np.zeros((len(test), n_classes))
                scores[:, model.classes_] = model.predict_proba(test)
                out.append(scores)
    return out


def probe_scores(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, c: float, **kwargs) -> np.ndarray:
    """Class scores of one probe (`probe_path` with a single C)."""
    return probe_path(train_x, train_y, test_x, [c], **kwargs)[0]


def task_metric(y: np.ndarray, scores: np.ndarray, multi_label: bool) -> float:
    """mAP for multi-label data, else accuracy."""
    return mean_average_precision(y, scores) if multi_label else accuracy(y, scores)


@dataclass
class ProbeResult:
    """One fair probe: the chosen feature and C, its test metric, and every feature's."""

    score: float  # test metric of the chosen feature and C
    feature: str
    c: float
    by_feature: dict[str, float]  # test metric of each feature at its own chosen C (the layer/pooling sweep)
    held_out: float  # the chosen feature's and C's mean metric on the held-out splits (what chose them)


def fair_probe(
    features: dict[str, np.ndarray],
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    inner: Sequence[tuple[np.ndarray, np.ndarray]],
    cs: Sequence[float],
    multi_label: bool = False,
    solver: Solver = "sklearn",
    device: str = "cpu",
    tol: float = 1e-4,
) -> ProbeResult:
    """Choose (feature, C) by the mean metric over the `inner` (fit, held-out) splits of the training indices,
    refit on all of `train` and score `test`. No index of `test` is ever used before the final score."""
    n_classes = y.shape[1] if multi_label else int(y.max()) + 1
    cs = sorted(cs)  # strong regularisation first: each warm start then has less to move

    def path(x, a, b, cs):
        scores = probe_path(x[a], y[a], x[b], cs, multi_label, solver, device, n_classes, tol)
        return [task_metric(y[b], s, multi_label) for s in scores]

    # The (feature, inner split) paths run on every core on CPU (each fit is single-threaded).
    parallel = Parallel(n_jobs=-1 if solver == "sklearn" else 1)
    jobs = [(name, split) for name in features for split in range(len(inner))]
    paths = dict(zip(jobs, parallel(delayed(path)(features[n], *inner[i], cs) for n, i in jobs), strict=True))
    chosen: dict[str, tuple[float, float]] = {}  # feature -> (inner metric, C)
    for name in features:
        inner_scores = np.mean([paths[name, i] for i in range(len(inner))], 0)
        best = int(np.argmax(inner_scores))
        chosen[name] = (float(inner_scores[best]), cs[best])
    finals = parallel(delayed(path)(x, train, test, [chosen[n][1]]) for n, x in features.items())
    by_feature = {name: score[0] for name, score in zip(features, finals, strict=True)}
    feature = max(chosen, key=lambda n: chosen[n][0])
    return ProbeResult(by_feature[feature], feature, chosen[feature][1], by_feature, chosen[feature][0])


def mean_std_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean, sample standard deviation and the half-width of the t confidence interval of the mean (0 and 0
    for a single value)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float(v.mean()), 0.0, 0.0
    std = float(v.std(ddof=1))
    return float(v.mean()), std, float(stats.t.ppf((1 + confidence) / 2, len(v) - 1) * std / np.sqrt(len(v)))
