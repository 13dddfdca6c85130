"""The benchmarks run at a small size and print their tables, so that an API change cannot leave one broken: each
prints numbers that follow from its inputs."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def bench(name: str, *args: str) -> str:
    out = subprocess.run([sys.executable, f"benchmarks/{name}.py", *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_mixture_draws_the_weights_exactly():
    rows = [line for line in bench("mixture", "--sizes", "2000", "300", "--draws", "10000").splitlines() if "|" in line]
    assert rows[2].startswith("| 0 | 2000 | 3 | 75.00% | 75.00% |") and rows[3].startswith(
        "| 1 | 300 | 1 | 25.00% | 25.00% |"
    )


def test_prepare_reports_a_rate_per_worker_and_the_audioset_hours(tmp_path):
    text = bench("prepare", "--clips", "4", "--workers", "1", "--repeats", "1", "--work", str(tmp_path))
    rows = re.findall(r"\| (check[^|]*) \| 1 \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", text)
    assert [r[0].strip() for r in rows] == ["check", "check + 16-kHz FLAC"]
    for _, rate, per_worker, hours in rows:
        assert float(rate) == float(per_worker) > 0
        assert float(hours) == pytest.approx(2e6 / (float(per_worker) * 32) / 3600, rel=0.05, abs=0.05)


def test_manifests_shards_and_pipeline_print_their_ratios(tmp_path):
    manifests = bench("manifests", "--clips", "3000", "--procs", "1", "--repeats", "1", "--work", str(tmp_path / "m"))
    assert re.search(r"\| compiled, warm \| 1 \| [\d.]+ \|", manifests) and "starts" in manifests
    shards = bench("shards", "--clips", "40", "--seconds", "1", "--repeats", "1", "--work", str(tmp_path / "s"))
    assert re.search(r"shards read [\d.]+x the clips/s of files", shards)
    pipeline = bench("data_pipeline", "--clips", "64", "--repeats", "1")
    assert re.search(r"ratio [\d.]+x; a clip per parallel call [\d.]+ clips/s", pipeline)
    core = re.search(r"decode \+ fbank ([\d.]+) clips/s; decode \+ crop only \(features.device=model\) ([\d.]+) "
                     r"clips/s, ([\d.]+)x; cores to feed 1,000 clips/s: ([\d.]+) with the fbank", pipeline)  # fmt: skip
    with_fbank, without, ratio, cores = map(float, core.groups())
    assert without > with_fbank and ratio == pytest.approx(without / with_fbank, abs=0.01)
    assert cores == pytest.approx(1000 / with_fbank, abs=0.1)


def test_the_gpu_script_runs_every_part_on_a_cpu_with_a_gpu_nodes_packages(tmp_path):
    """benchmarks/gpu.sh at its toy size, with only what a GPU node holds importable: every part prints its table,
    and the parts that need fairseq2 or faiss say they were skipped."""
    env = {**os.environ, "SSAST_GPU_SMOKE": "1", "PYTHON": sys.executable, "OUT": str(tmp_path),
           "PYTHONPATH": str(Path("tests/support/gpu_node").resolve())}  # fmt: skip
    out = subprocess.run(["bash", "benchmarks/gpu.sh"], capture_output=True, text=True, env=env, timeout=300)
    text = out.stdout
    assert out.returncode == 0 and "(failed" not in text and "(cut" not in text, text + out.stderr
    assert (tmp_path / "gpu.txt").read_text() == text
    rows = re.findall(r"\| (\([a-d]\)[^|]*) \| 4 \| ([\d.]+) \| ([\d.]+)x \| ([\d.]+) \| ([\d.]+) \|", text)
    names = [r[0].strip() for r in rows]
    variants = ["(a) reference", "(b) faithful", "(c) faithful, shared mask", "(d) fast"]
    assert names[:7] == variants + [f"{name}, compiled" for name in variants[1:]]
    assert len(rows) == 14 and names[7:] == names[:7]  # the batch-24 and the largest-batch tables, at toy size 4
    for _, rate, _, gflop, tflops in rows:  # TFLOP/s = FLOP per clip x clips/s
        assert float(tflops) == pytest.approx(float(gflop) * float(rate) / 1e3, rel=0.05, abs=2e-3)
    assert re.search(r"engine [\d.]+ steps/s, bare step [\d.]+ steps/s", text)
    assert re.search(r"largest difference [\d.e+-]+ \(within 1e-4\)", text)
    assert re.search(r"\| loss \| [\d.]+ \| [\d.]+ \|", text) and "gradient: |bf16 - fp32|" in text
    assert "data pipeline per core: skipped (fairseq2" in text and "retrieval: skipped (faiss" in text
