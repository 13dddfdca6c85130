"""Tag audio files with a fine-tuned classifier.

    python -m finetune.predict --checkpoint runs/ft/checkpoints/best.pt a.wav b.flac [--top-k 5] [--windows]

The checkpoint is one of this project's fine-tuning checkpoints (it stores the class names and the front end)
or a Hugging Face AST directory. A file longer than the model's input is cut into consecutive windows of the
input length (the last one zero-padded) and the window scores averaged; --windows also prints each window's.
Scores are sigmoids (multi-label recipes) or a softmax (single-label, CE recipes).

Python: ``from finetune.predict import Predictor``; ``Predictor(path).scores(waveform, sample_rate)`` -> [windows,
classes] and ``.top_k(scores, k)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from ssast.cli import run_cli
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

    def file_scores(self, path: str) -> torch.Tensor:
        """`scores` of an audio file, decoded as the training pipeline decodes; DataError names what is wrong."""
        try:
            return self._scores(self._reader(path))
        except ValueError as e:
            raise DataError(f"cannot read audio {path}: {e}") from None

    def top_k(self, scores: torch.Tensor, k: int = 5) -> list[tuple[str, float]]:
        """The `k` best (class name, score) of scores [classes], or of [windows, classes] averaged over windows."""
        scores = scores.mean(0) if scores.dim() == 2 else scores
        values, index = scores.topk(min(k, len(scores)))
        return [(self.classes[i], float(v)) for v, i in zip(values, index, strict=True)]


def predict(args: argparse.Namespace) -> dict:
    """Print (and return) the top-k labels of each file, and with ``--windows`` each window's."""
    predictor = Predictor(args.checkpoint, args.device)
    out = {}
    for path in args.files:
        scores = predictor.file_scores(path)
        best = predictor.top_k(scores, args.top_k)
        out[path] = best
        print(f"{path}: " + ", ".join(f"{name} {score:.3f}" for name, score in best))
        if args.windows:
            for i, window in enumerate(scores):
                start = i * predictor.window_seconds
                print(
                    f"  {start:7.2f}-{start + predictor.window_seconds:.2f} s: "
                    + ", ".join(f"{n} {s:.3f}" for n, s in predictor.top_k(window, args.top_k))
                )
    return out


def _positive(text: str) -> int:
    if not text.lstrip("-").isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> dict:
    """The command line: ``--checkpoint PATH files... [--top-k K] [--windows] [--device D]``."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, help="fine-tuning checkpoint or Hugging Face AST directory")
    parser.add_argument("files", nargs="+", help="audio files (wav, flac, ogg, ...)")
    parser.add_argument("--top-k", type=_positive, default=5, help="labels printed per file (>= 1)")
    parser.add_argument("--windows", action="store_true", help="also print the scores of each window")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return run_cli(PROG, lambda: predict(args))


if __name__ == "__main__":
    main()
