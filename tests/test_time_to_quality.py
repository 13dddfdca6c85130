"""The time-to-quality tool: a short pretraining run probed at fixed steps, its curve and its references."""

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image
from support.stages import write_metrics

from ssast.config import load_config
from ssast.eval.probe_suite import ProbeConfig, probe_tasks
from ssast.models import ModelConfig, SSASTModel
from ssast.train.pretraining import PretrainConfig
from ssast.train.run_folder import RunError

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_the_curve_starts_at_the_random_init_and_is_drawn(demo_root, tmp_path):
    probe = [
        f"data.root={demo_root}",
        "embed.layers=[1]",
        "embed.poolings=[avgtok]",
        "cs=[1.0]",
        "model.depth=1",
        "tasks=[{name: events, dataset: {kind: esc50, path: esc50}, protocol: folds, target_length: 128}]",
    ]
    out = tmp_path / "ttq"
    cmd = [sys.executable, "benchmarks/time_to_quality.py", "--config", "configs/pretrain/demo_fast.yaml"]
    cmd += ["--steps", "20", "--points", "2", "--out", str(out), "--label", "tiny"]
    cmd += [f"--probe={o}" for o in probe]
    cmd += [f"data.root={demo_root}", "data.valid_holdout=8", "data.batch_size=8", "data.views=2", "model.depth=1"]
    cmd += ["train.tensorboard=false", "train.threads=1"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(  # it says what it runs before the minutes go
        f"pretraining configs/pretrain/demo_fast.yaml for 20 steps in {out / 'run'} (its log: {out / 'run/log'})\n"
    )
    curve = json.loads((out / "curve.json").read_text())
    assert curve["retrieval_k"] == 10
    points = curve["points"]
    assert [p["step"] for p in points] == [0, 10, 20] and [p["clips"] for p in points] == [0, 40, 80]
    assert points[0]["train_seconds"] == 0 < points[1]["train_seconds"] < points[2]["train_seconds"]
    assert set(points[0]) == {"step", "train_seconds", "clips", "events", "events_held_out", "events_map"}
    assert curve["steps_per_s"] == pytest.approx(20 / points[2]["train_seconds"])
    cfg = load_config(ProbeConfig, "configs/probes/demo.yaml", probe)
    # step 0 is the seed's random initialisation, what `probes linear random_init_seeds=[0]` probes (another
    # process with another thread count: the probe's fits may then differ by a clip)
    torch.manual_seed(0)
    encoder = SSASTModel(ModelConfig(size="tiny", depth=1, input_tdim=128)).v
    trained = load_config(PretrainConfig, "configs/pretrain/demo_fast.yaml").features  # the run's normalisation
    expected = probe_tasks(cfg, encoder, str(tmp_path / "init"), trained)
    assert {k: points[0][k] for k in expected} == pytest.approx(expected, abs=0.01)
    assert curve["fbank"] == pytest.approx(probe_tasks(cfg, None, str(tmp_path / "fbank")), abs=0.01)
    assert Image.open(out / "curve.png").size == (1280, 256)  # one task row, four panels, at 80 dpi
    both = tmp_path / "both.png"
    subprocess.run(
        [sys.executable, "benchmarks/time_to_quality.py", "plot", str(out / "curve.json"), f"run={out / 'run'}"]
        + ["--out", str(both)],
        check=True,
    )
    assert Image.open(both).size == (1280, 256)
    usage = subprocess.run([sys.executable, "benchmarks/time_to_quality.py", "--help"], capture_output=True, text=True)
    assert "time_to_quality.py plot CURVE [LABEL=CURVE ...] --out PNG" in " ".join(usage.stdout.split())


def test_the_demo_report_draws_the_curve_beside_the_table(tmp_path, capsys):
    from ssast.demo import report
    from ssast.train.curves import learning_curve

    write_metrics(tmp_path / "seed0", [0, 40, 80], [10, 20, 30, 40, 50, 60, 70, 80])
    points = learning_curve(tmp_path / "seed0")
    expected = [(0, 0.0, 0.0), (40, 60.0, 0.4), (80, 120.0, 0.8)]
    assert [(p["step"], p["train_seconds"], p["kw"]) for p in points] == expected
    result = {"score": 0.5, "held_out": 0.5, "choice": ["fbank C=1", 1], "by_feature": {}, "retrieval": 0.2}
    result["retrieval_k"] = 10
    (tmp_path / "probes.json").write_text(json.dumps({"fbank mean+std": {"kw": [result]}}))
    text = report.main([f"probes={tmp_path / 'probes.json'}", f"curve={tmp_path / 'seed0'}"])
    assert text.splitlines()[0] == "| features | kw, linear probe | kw, retrieval mAP@10 | sound events, fine-tuned |"
    assert text.splitlines()[2] == "| fbank mean+std | 50.0 | 20.0 | |"
    assert text.splitlines()[-2:] == [
        f"learning curve of {tmp_path / 'seed0'}: {tmp_path / 'learning_curve.png'}",
        f"report page: {tmp_path / 'report.html'}",
    ]
    page = (tmp_path / "report.html").read_text()
    assert "<td>fbank mean+std</td><td>50.0</td><td>20.0</td>" in page and 'src="learning_curve.png"' in page
    assert "sweep" not in page  # no probes.sweep.png, no figure
    assert Image.open(tmp_path / "learning_curve.png").size == (1280, 256)
    write_metrics(tmp_path / "gap", [0, 45], [10, 20, 30, 40, 50])
    with pytest.raises(RunError, match="step 45 was probed but not logged"):
        learning_curve(tmp_path / "gap")
    write_metrics(tmp_path / "none", [], [10, 20])
    with pytest.raises(SystemExit):
        report.main([f"probes={tmp_path / 'probes.json'}", f"curve={tmp_path / 'none'}"])
    assert capsys.readouterr().err == (
        f"python -m ssast.demo.report: error: {tmp_path / 'none'} holds no periodic probes (pretrain with "
        "probe.every > 0): no learning curve to draw\n"
    )
