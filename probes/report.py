"""A retrieval report as a static folder: open ``index.html`` from the file system, no server, no network.

The top of the page holds precision@k, recall@k and mAP@k over every indexed clip as a query (the numbers of
``probes retrieval eval``) and per class; below, for a few query clips per class, the query's label, player and
spectrogram, then its k nearest neighbours with label, cosine score and a correct / incorrect mark. The audio
is copied in as 16-kHz mono 16-bit WAV and each clip gets a small spectrogram thumbnail, so the folder stays
small (`max_queries` caps it).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import soundfile as sf

from ssast.data.loader import ClipReader
from ssast.eval.retrieval import neighbours_excluding_self, relevance, relevant_counts, retrieval_metrics
from ssast.features import FeatureConfig, kaldi_fbank

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table.metrics { border-collapse: collapse; margin-bottom: 1.5em; }
table.metrics td, table.metrics th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
.query { border-top: 2px solid #888; padding: 0.6em 0; display: flex; gap: 1em; align-items: flex-start; }
.clip { width: 180px; font-size: 0.8em; }
.clip img { width: 176px; height: 64px; display: block; }
.clip audio { width: 176px; height: 28px; }
.clip .file { display: block; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; color: #666; }
.hit { border: 2px solid #ccc; padding: 2px; }
.hit.correct { border-color: #2a2; } .hit.wrong { border-color: #c22; }
"""


def thumbnail(wave: np.ndarray, path: Path, sample_rate: int = 16000) -> None:
    """A 176 x 64 spectrogram PNG of a 16-kHz waveform: low frequencies at the bottom."""
    import matplotlib.image
    import torch

    fbank = kaldi_fbank(torch.from_numpy(wave), sample_rate, 64, "hanning").numpy().T[::-1]  # [64 bins, frames]
    columns = np.linspace(0, fbank.shape[1] - 1, 176).round().astype(int)
    image = fbank[:, columns]
    matplotlib.image.imsave(path, (image - image.min()) / (np.ptp(image) + 1e-8), cmap="magma")


def choose_queries(labels: list[list[str]], per_class: int, cap: int) -> list[int]:
    """The first `per_class` clips of each class (by first label), in index order, at most `cap` in all."""
    taken: dict[str, int] = {}
    chosen = []
    for i, clip in enumerate(labels):
        name = clip[0] if clip else "-"
        if taken.get(name, 0) < per_class and len(chosen) < cap:
            taken[name] = taken.get(name, 0) + 1
            chosen.append(i)
    return chosen


def write_report(
    index, info: dict, x: np.ndarray, label_array: np.ndarray, k: int, out: Path, per_class: int, cap: int
) -> dict:
    """Write the report folder of an index (`info` as `probes retrieval build` writes it; `x` the indexed rows);
    returns its metrics: overall (those of `query_by_example`) and per class."""
    scores, ids, _ = neighbours_excluding_self(index, x, k)
    rel = relevance(label_array, np.arange(len(x)), ids)
    counts = relevant_counts(label_array)
    labels = info["labels"]
    classes = sorted({c for clip in labels for c in clip})
    metrics = {
        "k": k,
        "overall": retrieval_metrics(rel, counts),
        "per_class": {c: retrieval_metrics(rel[q], counts[q]) for c in classes if (q := _members(labels, c)).any()},
    }
    queries = choose_queries(labels, per_class, cap)
    shown = sorted({*queries, *ids[queries].ravel().tolist()} - {-1})
    (out / "audio").mkdir(parents=True, exist_ok=True)
    (out / "img").mkdir(exist_ok=True)
    reader = ClipReader(FeatureConfig())  # decoded, mono, 16 kHz
    for i in shown:
        wave = reader(info["paths"][i]).numpy()
        sf.write(out / "audio" / f"{i}.wav", np.clip(wave, -1, 1), 16000, subtype="PCM_16")
        thumbnail(wave, out / "img" / f"{i}.png")
    rows = [_query_html(q, ids[q], scores[q], rel[q], labels, info["paths"]) for q in queries]
    (out / "index.html").write_text(_page(info, metrics, rows))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def _members(labels: list[list[str]], name: str) -> np.ndarray:
    return np.array([name in clip for clip in labels])


def _clip_html(i: int, labels: list[list[str]], path: str, extra: str = "", css: str = "") -> str:
    name = html.escape(", ".join(labels[i]) or "-")
    file = f'<span class="file" title="{html.escape(path)}">{html.escape(Path(path).name)}</span>'
    return (
        f'<div class="clip {css}"><b>{name}</b>{extra}<br>{file}<img src="img/{i}.png" alt="spectrogram of clip {i}">'
        f'<audio controls preload="metadata" src="audio/{i}.wav"></audio></div>'
    )


def _query_html(
    q: int, hits: np.ndarray, scores: np.ndarray, rel: np.ndarray, labels: list[list[str]], paths: list[str]
) -> str:
    cells = [_clip_html(q, labels, paths[q], " (query)")]
    for rank, (i, s, ok) in enumerate(zip(hits.tolist(), scores.tolist(), rel.tolist(), strict=True), 1):
        if i >= 0:
            mark = "&#10003;" if ok else "&#10007;"
            css = f"hit {'correct' if ok else 'wrong'}"
            cells.append(_clip_html(i, labels, paths[i], f" {mark} #{rank} {s:.3f}", css))
    return f'<div class="query">{"".join(cells)}</div>'


def _page(info: dict, metrics: dict, rows: list[str]) -> str:
    o, k = metrics["overall"], metrics["k"]
    head = f"<tr><th>class</th><th>queries</th><th>precision@{k}</th><th>recall@{k}</th><th>mAP@{k}</th></tr>"
    lines = [
        f"<tr><td>{html.escape(name)}</td><td>{m['queries']}</td><td>{m['precision_at_k']:.3f}</td>"
        f"<td>{m['recall_at_k']:.3f}</td><td>{m['map_at_k']:.3f}</td></tr>"
        for name, m in [("all", o), *metrics["per_class"].items()]
    ]
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>retrieval report</title><style>{STYLE}</style>'
        f"</head><body><h1>Query by example, k = {k}</h1>"
        f"<p>encoder: {html.escape(info.get('checkpoint') or 'not recorded')}; clips: "
        f"{html.escape(info.get('data', 'not recorded'))}</p><p>{len(info['paths'])} indexed clips, feature "
        f"{html.escape(info['feature'])}, {html.escape(info['sizes']['kind'])} index; every clip queries the others "
        f"(itself excluded); a hit is correct when it shares a label with its query.</p>"
        f'<table class="metrics">{head}{"".join(lines)}</table><h2>{len(rows)} queries</h2>{"".join(rows)}'
        "</body></html>"
    )
