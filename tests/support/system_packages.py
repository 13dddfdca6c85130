"""System packages that integration tests need (SLURM, Chromium), installed with apt as root when missing."""

from __future__ import annotations

import os
import shutil
import subprocess


def apt_install(packages: list[str], binaries: list[str]) -> str:
    """'' when `binaries` are on the PATH (installing `packages` with apt if needed), else why not."""
    if all(shutil.which(b) for b in binaries):
        return ""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"{', '.join(packages)} not installed and apt-get as root is not available"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env)
    out = subprocess.run(["apt-get", "install", "-y", "-qq", *packages], capture_output=True, text=True, env=env)
    return "" if out.returncode == 0 else f"apt-get install {' '.join(packages)} failed: {out.stderr.strip()[-300:]}"
