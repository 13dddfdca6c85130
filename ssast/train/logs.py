"""A run's log: ``metrics.jsonl`` (one JSON line per logged step and section), TensorBoard scalars and images, and
the progress line; `read_metrics` reads a section back."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional

import torch

log = logging.getLogger("ssast")
SECTIONS = ("valid", "probe")  # their keys carry the section as a prefix in metrics.jsonl; training keys none
TIMINGS = ("clips_per_s", "train_seconds")  # the training keys that measure time: they differ between equal runs


class RunLog:
    """Written by the main process only (elsewhere every method does nothing). Lines of steps after `step` (those
    of a run resumed from an older checkpoint) are dropped on opening."""

    def __init__(self, run_dir: Path, step: int, max_steps: int, main: bool, tensorboard: bool):
        self.max_steps, self.start_step, self.start = max_steps, step, time.perf_counter()
        self.file, self.writer, self.image_dir = None, None, run_dir / "images"
        if not main:
            return
        metrics = run_dir / "metrics.jsonl"
        if metrics.exists():
            keep = [line for line in metrics.read_text().splitlines() if line and json.loads(line)["step"] <= step]
            metrics.write_text("".join(line + "\n" for line in keep))
        self.file = open(metrics, "a")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=step + 1)

    def write(self, step: int, values: dict[str, float], section: str = "train") -> None:
        """One metrics.jsonl line (keys prefixed ``<section>_`` but for train) and TensorBoard scalars."""
        if self.file is None:
            return
        prefix = "" if section == "train" else f"{section}_"
        self.file.write(json.dumps({"step": step, **{prefix + k: v for k, v in values.items()}}) + "\n")
        self.file.flush()
        if self.writer:
            for k, v in values.items():
                self.writer.add_scalar(f"{section}/{k}", v, step)
        if section == "train":
            self._progress(step, values)
        else:
            if sys.stderr.isatty():
                print(file=sys.stderr)  # below the progress line
            log.info("%s step %d: %s", section, step, " ".join(f"{k} {v:.4f}" for k, v in values.items()))

    def images(self, step: int, images: dict[str, torch.Tensor]) -> None:
        """Images [3, H, W] in [0, 1]: to TensorBoard, and the latest of each as ``images/<name>.png``."""
        if self.file is None or not images:  # no folder for a run that draws nothing (fine-tuning)
            return
        import matplotlib.image

        self.image_dir.mkdir(exist_ok=True)
        for k, img in images.items():
            if self.writer:
                self.writer.add_image(k, img, step)
            matplotlib.image.imsave(self.image_dir / f"{k.replace('/', '_')}.png", img.permute(1, 2, 0).numpy())

    @property
    def wants_images(self) -> bool:
        """Whether images are written (the main process)."""
        return self.file is not None

    def _progress(self, step: int, record: dict) -> None:
        eta = (time.perf_counter() - self.start) / max(step - self.start_step, 1) * (self.max_steps - step)
        line = (
            f"step {step}/{self.max_steps} loss {record['loss']:.4f} lr {record['lr']:.2e} "
            f"{record['clips_per_s']:.1f} clips/s eta {int(eta) // 60}m{int(eta) % 60:02d}s"
        )
        if sys.stderr.isatty():
            print("\r" + line, end="", file=sys.stderr, flush=True)
        else:
            log.info(line)

    def close(self) -> None:
        """Close the files."""
        if self.file:
            self.file.close()
        if self.writer:
            self.writer.close()


def read_metrics(run_dir: str | Path, section: Optional[str] = "train") -> list[dict]:
    """The lines of one section of a run's metrics.jsonl, in order: ``{"step": s, name: value, ...}`` with the
    section's prefix removed; every line as written with `section` None."""
    out = []
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        if not line:
            continue
        values: dict = json.loads(line)
        if section is None:
            out.append(values)
            continue
        step = values.pop("step")
        if section == "train":
            values = {k: v for k, v in values.items() if not k.startswith(tuple(f"{s}_" for s in SECTIONS))}
        else:
            values = {k.removeprefix(f"{section}_"): v for k, v in values.items() if k.startswith(f"{section}_")}
        if values:
            out.append({"step": step, **values})
    return out
