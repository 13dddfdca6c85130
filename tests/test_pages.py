"""The pages people look at: the retrieval report, its numbers equal to `probes retrieval eval`'s, and the demo's
report page, opened in headless Chromium from the file system (Debian's chromium, installed by the test; skipped
with the reason only where it cannot be installed)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from support.browser import install, load
from support.stages import write_metrics

from probes.__main__ import main as probes
from ssast.demo import report as demo_report

pytestmark = pytest.mark.integration

K = 5


@pytest.fixture(scope="module")
def report(demo_root, tmp_path_factory):
    """A flat index of the built-in sound events (fbank statistics: no encoder needed), evaluated and reported."""
    base = tmp_path_factory.mktemp("retrieval")
    common = ["--config", "configs/probes/extract_demo.yaml", f"data.root={demo_root}", "checkpoint=fbank"]
    common += [f"store_dir={base}/stores", f"index_dir={base}/index", f"k={K}"]
    probes(["retrieval", "build", *common])
    evaluated = probes(["retrieval", "eval", *common])
    metrics = probes(["retrieval", "report", *common, f"out={base}/page", "queries_per_class=1", "max_queries=8"])
    return base / "page", evaluated, metrics


def test_the_report_holds_the_eval_numbers_and_k_neighbours_per_query(report, demo_root):
    page, evaluated, metrics = report
    for key in ("precision_at_k", "recall_at_k", "map_at_k", "queries"):
        assert metrics["overall"][key] == evaluated[key]
    assert len(metrics["per_class"]) == 25 and all(m["queries"] == 5 for m in metrics["per_class"].values())
    text = (page / "index.html").read_text()
    queries = re.findall(r'<div class="query">(.*?)</div></div>(?=<div class="query">|</body>)', text)
    assert len(queries) == 8 and all(q.count('class="clip') == K + 1 for q in queries)
    assert text.count("&#10003;") + text.count("&#10007;") == 8 * K
    assert f"{metrics['overall']['map_at_k']:.3f}" in text
    assert f"<p>encoder: fbank; clips: esc50 {demo_root / 'esc50'}</p>" in text  # what was searched, and with what
    files = re.findall(r'<span class="file" title="([^"]+)">([^<]+)</span>', text)
    assert len(files) == 8 * (K + 1) and all(Path(path).name == name and Path(path).is_file() for path, name in files)
    audio = sorted((page / "audio").glob("*.wav"))
    assert len(audio) == len(list((page / "img").glob("*.png"))) == len(set(re.findall(r"audio/(\d+)\.wav", text)))
    assert all((sf.info(a).samplerate, sf.info(a).channels) == (16000, 1) for a in audio)
    assert sum(f.stat().st_size for f in page.rglob("*") if f.is_file()) < 10 * 2**20


@pytest.mark.slow
def test_the_report_page_loads_in_a_real_browser(report):
    reason = install()
    if reason:
        pytest.skip(reason)
    media, errors, shot = load(report[0] / "index.html")
    assert errors == []
    assert len(media["audio"]) == 8 * (K + 1) and len(media["images"]) == 8 * (K + 1)
    assert all(a["ready"] >= 1 and a["duration"] > 0 for a in media["audio"]), media["audio"][:3]
    assert all(i["width"] == 176 for i in media["images"])
    assert shot.shape[2] == 3 and np.std(shot) > 0.05  # not a blank page


@pytest.mark.slow
def test_the_demo_report_page_loads_in_a_real_browser(report, tmp_path):
    reason = install()
    if reason:
        pytest.skip(reason)
    write_metrics(tmp_path / "seed0", [0, 40, 80], [10, 20, 30, 40, 50, 60, 70, 80])
    (tmp_path / "seed0/images").mkdir()
    (tmp_path / "seed0/images/valid_reconstruction.png").write_bytes((report[0] / "img/0.png").read_bytes())
    result = {"score": 0.5, "held_out": 0.5, "choice": ["fbank C=1", 1], "by_feature": {}, "retrieval": 0.2}
    (tmp_path / "probes.json").write_text(json.dumps({"fbank mean+std": {"kw": [result]}}))
    demo_report.main([f"probes={tmp_path / 'probes.json'}", f"curve={tmp_path / 'seed0'}"])
    media, errors, shot = load(tmp_path / "report.html")
    assert errors == [] and media["audio"] == []
    assert [i["src"].rsplit("/", 1)[1] for i in media["images"]] == ["learning_curve.png", "valid_reconstruction.png"]
    assert all(i["width"] > 100 for i in media["images"]) and np.std(shot) > 0.05
