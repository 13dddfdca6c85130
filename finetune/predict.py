"""Tag audio files with a fine-tuned classifier.

    python -m finetune.predict checkpoint=runs/ft/checkpoints/best.pt a.wav b.flac [top_k=5] [windows=true]

The checkpoint is one of this project's fine-tuning checkpoints (it stores the class names and the front end)
or a Hugging Face AST directory. A file longer than the model's input is cut into consecutive windows of the
input length (the last one zero-padded) and the window scores averaged; windows=true also prints each window's.
Scores are sigmoids (multi-label recipes) or a softmax (single-label, CE recipes). A file that cannot be read is
reported in one line and the others are tagged; the exit code is 1 when any could not be read.

Python: ``from finetune.predict import Predictor``; ``Predictor(path).scores(waveform, sample_rate)`` -> [windows,
classes] and ``.top_k(scores, k)``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ssast.cli import run_cli
from ssast.config import Positive, cli_args
from ssast.data.loader import ClipReader
from ssast.data.sampling import DataError
from ssast.features import check_waveform, kaldi_fbank, pad_or_crop, prepare_waveform
from ssast.models import CheckpointError, load_model

PROG = "python -m finetune.predict"


class Predictor:
    """A classifier with its front end and class names, scoring waveforms window by window.

    from finetune.predict import Predictor
    predictor = Predictor("runs/sc/checkpoints/best.pt")      # or a Hugging Face AST directory
    scores = predictor.scores(waveform, 16000)                 # numpy or torch, [samples(, channels)]
    predictor.top_k(scores, 5)                                  # [(name, score), ...] over the whole clip
    """

    def __init__(self, path: str | Path, device: str = "cpu"):
        loaded = load_model(path)
        if loaded.kind != "classifier" or not (loaded.run or Path(path).is_dir()):
            raise CheckpointError(
                f"{path} is neither a fine-tuning checkpoint of this project nor a Hugging Face AST "
                f"directory (tagging needs the class names and front end these store)"
            )
        self.model, self.features = loaded.model, loaded.features()
        self.sigmoid = loaded.run.get("finetune", {}).get("loss", "bce") == "bce"  # Hugging Face: multi-label
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.classes = self.model.classes or [str(i) for i in range(self.model.mlp_head[1].out_features)]
        self._reader = ClipReader(self.features)

    @property
    def window_seconds(self) -> float:
        """The model's input length in seconds (10-ms frame shift)."""
        return self.features.target_length / 100

    def scores(self, waveform, sample_rate: int) -> torch.Tensor:
        """Waveform [samples] or [samples, channels] (numpy or torch) -> scores [windows, classes]. A waveform
        that cannot be scored (NaN samples, shorter than one frame) raises ValueError with the reason."""
        f = self.features
        wave = check_waveform(prepare_waveform(torch.as_tensor(np.asarray(waveform)), sample_rate, f), f.sample_rate)
        return self._scores(wave)

    @torch.no_grad()
    def _scores(self, wave: torch.Tensor) -> torch.Tensor:
        f = self.features
        fbank = kaldi_fbank(wave, f.sample_rate, f.num_mel_bins, f.window)
        windows = torch.stack(
            [pad_or_crop(fbank[start:], f.target_length) for start in range(0, max(len(fbank), 1), f.target_length)]
        )
        logits = self.model(((windows - f.mean) / (2 * f.std)).to(self.device)).float().cpu()
        return logits.sigmoid() if self.sigmoid else logits.softmax(-1)

    def file_scores(self, path: str) -> tuple[torch.Tensor, float]:
        """(`scores`, seconds) of an audio file, decoded as the training pipeline decodes; DataError names what is
        wrong."""
        try:
            wave = self._reader(path)
        except ValueError as e:
            raise DataError(f"cannot read audio {path}: {e}") from None
        return self._scores(wave), len(wave) / self.features.sample_rate

    def top_k(self, scores: torch.Tensor, k: int = 5) -> list[tuple[str, float]]:
        """The `k` best (class name, score) of scores [classes], or of [windows, classes] averaged over windows."""
        scores = scores.mean(0) if scores.dim() == 2 else scores
        values, index = scores.topk(min(k, len(scores)))
        return [(self.classes[i], float(v)) for v, i in zip(values, index, strict=True)]


@dataclass
class PredictConfig:
    """What to tag with what."""

    checkpoint: str  # a fine-tuning checkpoint of this project or a Hugging Face AST directory
    files: list[str]  # audio files (wav, flac, ogg, mp3)
    top_k: Positive = 5  # labels printed per file
    windows: bool = False  # also print the scores of each window
    device: str = "cpu"


def predict(cfg: PredictConfig) -> dict:
    """Print (and return) the top-k labels of each file, and with ``windows`` each window's; a file that cannot be
    read is one line on stderr, and DataError once every other file is tagged."""
    predictor = Predictor(cfg.checkpoint, cfg.device)
    out, bad = {}, []
    for path in cfg.files:
        try:
            scores, seconds = predictor.file_scores(path)
        except DataError as e:
            print(f"{PROG}: {e}", file=sys.stderr)
            bad.append(path)
            continue
        out[path] = best = predictor.top_k(scores, cfg.top_k)
        print(f"{path}: " + ", ".join(f"{name} {score:.3f}" for name, score in best))
        if cfg.windows:
            for i, window in enumerate(scores):
                start = i * predictor.window_seconds
                print(
                    f"  {start:7.2f}-{min(start + predictor.window_seconds, seconds):.2f} s: "
                    + ", ".join(f"{n} {s:.3f}" for n, s in predictor.top_k(window, cfg.top_k))
                )
    if bad:
        raise DataError(f"{len(bad)} of {len(cfg.files)} files could not be read")
    return out


def main(argv: list[str] | None = None) -> dict:
    """The command line: ``checkpoint=PATH files... [top_k=K] [windows=true] [device=D]``."""
    cfg = cli_args(PredictConfig, argv, prog=PROG, doc=__doc__, positional="files")
    return run_cli(PROG, lambda: predict(cfg))


if __name__ == "__main__":
    main()
