import math

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import average_precision_score, roc_auc_score

from ssast.eval.metrics import accuracy, d_prime, mean_auc, mean_average_precision, per_class_ap, per_class_auc

pytestmark = pytest.mark.unit


def random_multilabel(seed=0, n=300, c=12):
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, c)) < 0.15).astype(np.float32)
    scores = np.clip(targets * 0.3 + rng.random((n, c)), 0, None)
    scores[:40, 3] = 0.5  # ties
    targets[:, 5] = 0  # a class with no positive clip
    targets[:, 7] = 1  # a class with no negative clip
    return targets, scores


def test_map_and_mauc_equal_sklearn_per_class_over_the_classes_where_defined():
    targets, scores = random_multilabel()
    ap = [average_precision_score(targets[:, c], scores[:, c]) for c in range(12) if c != 5]
    auc = [roc_auc_score(targets[:, c], scores[:, c]) for c in range(12) if c not in (5, 7)]
    assert mean_average_precision(targets, scores) == pytest.approx(np.mean(ap), abs=1e-12)
    assert mean_auc(targets, scores) == pytest.approx(np.mean(auc), abs=1e-12)
    assert math.isnan(per_class_ap(targets, scores)[5]) and per_class_ap(targets, scores)[7] == 1.0
    assert np.isnan(per_class_auc(targets, scores)[[5, 7]]).all()
    # sklearn's own macro average counts the class without positives as AP 0: 1/12 lower than ours times 11/12
    assert average_precision_score(targets, scores, average="macro") == pytest.approx(np.sum(ap) / 12, abs=1e-12)


def test_map_of_a_hand_worked_example():
    targets = np.array([[1, 0], [0, 1], [1, 0], [0, 1]])
    scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.7, 0.6], [0.1, 0.2]])
    # class 0: positives ranked 1st and 3rd -> AP = (1/1 + 2/3) / 2; class 1: ranked 1st and 3rd of (.7,.6,.2,.1)
    assert per_class_ap(targets, scores) == pytest.approx([5 / 6, 5 / 6])
    assert mean_auc(targets, scores) == pytest.approx(0.75)  # 3 of 4 positive-negative pairs ordered, both classes
    assert accuracy(targets, scores) == 0.75  # row 2 picks class 0


def test_d_prime_and_accuracy():
    assert d_prime(0.5) == 0.0
    assert d_prime(float(norm.cdf(1.0))) == pytest.approx(math.sqrt(2), abs=1e-12)
    assert accuracy(np.array([0, 2, 1]), np.array([[1, 0, 0], [0, 0, 1], [0, 0, 1]])) == pytest.approx(2 / 3)


def test_undefined_metrics_and_bad_shapes_raise():
    with pytest.raises(ValueError, match="undefined"):
        mean_average_precision(np.zeros((4, 2)), np.random.rand(4, 2))
    with pytest.raises(ValueError, match=r"\[clips, classes\]"):
        mean_auc(np.zeros((4, 2)), np.zeros((4, 3)))
