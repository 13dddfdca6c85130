"""The data layer's benchmarks run at a small size and print their tables, so that an API change cannot leave one
broken: each prints numbers that follow from its inputs."""

import re
import subprocess
import sys

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
