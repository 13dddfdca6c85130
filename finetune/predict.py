"""Tag audio files with a fine-tuned classifier.

    python -m finetune.predict --checkpoint runs/ft/checkpoints/best.pt a.wav b.flac [--top-k 5] [--windows]

The checkpoint is one of this project's fine-tuning checkpoints (it stores the class names and the front end)
or a Hugging Face AST directory. A file longer than the model's input is cut into consecutive windows of the
input length (the last one zero-padded) and the window scores averaged; --windows also prints each window's.
Scores are sigmoids (multi-label recipes) or a softmax (single-label, CE recipes).

Python: ``Predictor(path).scores(waveform, sample_rate)`` -> [windows, classes] and ``.top_k(...)``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import soundfile as sf
import torch

from ssast.cli import run_cli
from ssast.data.pipeline import DataError
from ssast.features import FeatureConfig, kaldi_fbank, pad_or_crop, prepare_waveform
from ssast.models import CheckpointError
from ssast.models.checkpoint import checkpoint_kind, load_classifier, read
from ssast.models.hf import load_hf

PROG = "python -m finetune.predict"


class Predictor:
    """A classifier with its front end and class names, scoring waveforms window by window."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        path = Path(path)
        if path.is_dir():  # Hugging Face: the feature extractor's settings hold the front end
            self.model = load_hf(path)
            pre = json.loads((path / "preprocessor_config.json").read_text()) \
                if (path / "preprocessor_config.json").is_file() else {}
            self.features = FeatureConfig(target_length=self.model.cfg.input_tdim,
                                          **{k: pre[k] for k in ("mean", "std") if k in pre})
            self.sigmoid = True
        else:
            ckpt = read(path)
            if checkpoint_kind(ckpt) != "classifier" or "config" not in ckpt:
                raise CheckpointError(f"{path} is not a fine-tuning checkpoint of this project (it needs the class "
                                      f"names and front end a fine-tuning run stores)")
            self.model = load_classifier(ckpt)
            run = ckpt["config"]
            front = {k: v for k, v in run["features"].items() if k not in ("freqm", "timem", "noise", "crop")}
            self.features = FeatureConfig(**front)
            self.sigmoid = run.get("finetune", {}).get("loss", "bce") == "bce"
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.classes = self.model.classes or [str(i) for i in range(self.model.mlp_head[1].out_features)]

    @property
    def window_seconds(self) -> float:
        return self.features.target_length / 100  # 10-ms frame shift

    @torch.no_grad()
    def scores(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Waveform [samples] or [samples, channels] -> scores [windows, classes]."""
        f = self.features
        fbank = kaldi_fbank(prepare_waveform(waveform, sample_rate, f), f.sample_rate, f.num_mel_bins, f.window)
        windows = torch.stack([pad_or_crop(fbank[start:], f.target_length)
                               for start in range(0, max(len(fbank), 1), f.target_length)])
        logits = self.model(((windows - f.mean) / (2 * f.std)).to(self.device)).float().cpu()
        return logits.sigmoid() if self.sigmoid else logits.softmax(-1)

    def top_k(self, scores: torch.Tensor, k: int = 5) -> list[tuple[str, float]]:
        """The `k` best (class name, score) of a score vector [classes]."""
        values, index = scores.topk(min(k, len(scores)))
        return [(self.classes[i], float(v)) for v, i in zip(values, index)]


def read_audio(path: str) -> tuple[torch.Tensor, int]:
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise DataError(f"cannot read audio {path}: {e}") from None
    if data.size == 0:
        raise DataError(f"cannot read audio {path}: no samples")
    return torch.from_numpy(data), rate


def predict(args: argparse.Namespace) -> dict:
    predictor = Predictor(args.checkpoint, args.device)
    out = {}
    for path in args.files:
        scores = predictor.scores(*read_audio(path))
        best = predictor.top_k(scores.mean(0), args.top_k)
        out[path] = best
        print(f"{path}: " + ", ".join(f"{name} {score:.3f}" for name, score in best))
        if args.windows:
            for i, window in enumerate(scores):
                start = i * predictor.window_seconds
                print(f"  {start:7.2f}-{start + predictor.window_seconds:.2f} s: "
                      + ", ".join(f"{n} {s:.3f}" for n, s in predictor.top_k(window, args.top_k)))
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="fine-tuning checkpoint or Hugging Face AST directory")
    parser.add_argument("files", nargs="+", help="audio files (wav, flac, ogg, ...)")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--windows", action="store_true", help="also print the scores of each window")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return run_cli(PROG, lambda: predict(args))


if __name__ == "__main__":
    main()
