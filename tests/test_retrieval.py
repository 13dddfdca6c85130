import numpy as np
import pytest

from ssast.eval.retrieval import IndexConfig, build_index, evaluate, knn_classify, neighbours_excluding_self

pytestmark = pytest.mark.unit


def brute_force(x, labels, k):
    """The metrics by their definitions, with numpy: cosine similarities, self excluded, shared-label relevance."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    multi = labels.ndim == 2
    share = (labels @ labels.T > 0) if multi else labels[:, None] == labels[None, :]
    np.fill_diagonal(share, False)
    p, r, ap = [], [], []
    for q in range(len(x)):
        total = share[q].sum()
        if total == 0:
            continue
        rel = share[q, order[q]]
        p.append(rel.mean())
        r.append(rel.sum() / total)
        hits = np.flatnonzero(rel)
        ap.append(sum((j + 1) / (i + 1) for j, i in enumerate(hits)) / min(k, total))
    return np.mean(p), np.mean(r), np.mean(ap), len(p)


@pytest.mark.parametrize("multi", [False, True])
def test_retrieval_metrics_equal_a_brute_force_numpy_computation(multi):
    rng = np.random.default_rng(0)
    n, classes = 300, 7
    if multi:
        labels = (rng.random((n, classes)) < 0.2).astype(np.float32)
        labels[5] = 0  # a clip that shares no label: not a query
    else:
        labels = rng.integers(0, classes, n)
    centres = rng.standard_normal((classes, 32))
    x = (labels @ centres if multi else centres[labels]) + rng.standard_normal((n, 32)) * 1.5
    for k in (1, 10, 25):
        out = evaluate(x, labels, k=k)
        p, r, ap, q = brute_force(x, labels, k)
        assert out["precision_at_k"] == pytest.approx(p, abs=1e-9)
        assert out["recall_at_k"] == pytest.approx(r, abs=1e-9)
        assert out["map_at_k"] == pytest.approx(ap, abs=1e-9)
        assert out["queries"] == q and (q < n if multi else q == n)  # a clip sharing no label is not a query
    assert 0.3 < out["map_at_k"] < 1 and out["queries_per_s"] > 0


def test_approximate_indexes_find_the_exact_neighbours_on_clustered_data():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 64))[rng.integers(0, 200, 20000)] + 0.3 * rng.standard_normal((20000, 64))
    _, exact, _ = neighbours_excluding_self(build_index(x)[0], x[:500], 10)
    for kind in ("ivf", "hnsw"):
        index, info = build_index(x, IndexConfig(kind=kind))
        _, ids, _ = neighbours_excluding_self(index, x[:500], 10)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact, strict=True)])
        assert recall >= 0.95, (kind, info, recall)
    assert build_index(x, IndexConfig(kind="ivf"))[1]["nlist"] == min(int(4 * np.sqrt(20000)), 20000 // 39) == 512


def test_knn_votes_the_majority_and_breaks_ties_by_distance():
    train = np.array([[1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 0.9], [0.2, 0.8]])
    y = np.array([0, 0, 1, 1, 1])
    scores = knn_classify(train, y, np.array([[1.0, 0.05], [0.05, 1.0]]), k=3)
    assert scores.argmax(1).tolist() == [0, 1]
    tie = knn_classify(train[:4], y[:4], np.array([[1.0, 0.0]]), k=2 + 2, metric="l2")  # 2 votes each
    assert tie.argmax(1).tolist() == [0]
