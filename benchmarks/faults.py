"""The fault table: run the fault-injection suite (tests/test_faults.py) and print, for each fault it injects into
the real stages, what the user sees, the steps lost and the data lost, as the tests measured them.

    python benchmarks/faults.py            # about 4 minutes on 2 cores; the disk-full rows need root (a tmpfs)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Run the suite with its table written to a temporary file, then print the table."""
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "faults.json"
        env = {**os.environ, "SSAST_FAULT_TABLE": str(table)}
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/test_faults.py"], cwd=ROOT, env=env)
        rows = json.loads(table.read_text()) if table.exists() else []
    print("\n| fault | stage | what the user sees | steps lost | data lost |\n|---|---|---|---|---|")
    for r in rows:
        seen = re.sub(r"/tmp/pytest-of-\w+/pytest-\d+/[^/\s]+", "<tmp>", r["seen"]).replace("|", "\\|")
        print(f"| {r['fault']} | {r['stage']} | `{seen}` | {r['steps_lost']} | {r['data_lost']} |")
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
