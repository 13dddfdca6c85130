"""Logs written to a file: one line per stage part with its rate, never progress-bar redraws."""

import subprocess

import pytest
from support.stages import command

from ssast.cli import progress

pytestmark = pytest.mark.integration


def test_progress_off_a_terminal_is_one_line_with_the_rate(caplog, capsys):
    with caplog.at_level("INFO", logger="ssast"), progress(5, "keywords, train") as advance:
        advance(2)
        advance(3)
    assert capsys.readouterr().err == ""  # no bar drawn
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("keywords, train: 5 clips in ") and line.endswith(" clips/s)")


def test_a_stage_logged_to_a_file_has_no_progress_bar_lines(demo_root, tmp_path):
    log = tmp_path / "stats.log"
    with open(log, "w") as f:
        args = command("ssast.data.stats", "--config", "configs/pretrain/demo.yaml", f"data.root={demo_root}")
        subprocess.run(args, stdout=f, stderr=subprocess.STDOUT, check=True)
    text = log.read_text()
    assert "\r" not in text and "█" not in text and "clip/s]" not in text
    assert "reading: 40 clips in " in text and "features.mean=" in text
