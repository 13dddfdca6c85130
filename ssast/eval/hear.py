"""The HEAR 2021 common API, so that these encoders plug into hear-eval-kit and EVAR.

    from ssast.eval import hear
    model = hear.load_model("runs/demo/seed0/checkpoints/last.pt")       # any checkpoint this project reads
    scene = hear.get_scene_embeddings(audio, model)                       # [n_sounds, scene_embedding_size]
    frames, timestamps = hear.get_timestamp_embeddings(audio, model)      # [n, T, d], [n, T] in milliseconds

`audio` is a float tensor [n_sounds, n_samples] at `model.sample_rate` (16 kHz) on the model's device. Sounds
are cut into windows of the encoder's input length (the last zero-padded in the fbank domain, as in training).
Timestamp embeddings are the final-layer patch tokens averaged over frequency, one per column of the patch grid,
stamped at the centre of the column's frames (a 10-ms hop, 25-ms frames). A column spans `tstride` frames (160
ms for 16x16 patches), so the encoder also runs on the fbank shifted by fractions of a column (4 passes of 40 ms
for 16-frame columns; `timestamp_interval_ms`, default 50, is the most allowed between timestamps): every
timestamp is computed from the audio around it, at that many times the encoder's cost. Scene embeddings (the
unshifted pass only) are the mean over patch tokens (avgtok), averaged over windows weighted by the frames of the
sound they hold.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ssast import models
from ssast.features import FeatureConfig, kaldi_fbank
from ssast.models import ASTEncoder


class HearModel(nn.Module):
    """An encoder with its front end, carrying the attributes the HEAR API requires."""

    sample_rate = 16000

    def __init__(self, encoder: ASTEncoder, features: FeatureConfig, timestamp_interval_ms: float = 50.0):
        super().__init__()
        self.encoder, self.features = encoder.eval(), features
        self.scene_embedding_size = self.timestamp_embedding_size = encoder.embed_dim
        stride = encoder.cfg.tstride
        passes = math.ceil(stride * 10.0 / timestamp_interval_ms)
        self.offsets = sorted({round(i * stride / passes) for i in range(passes)})  # in frames

    def windows(self, audio: torch.Tensor, offset: int = 0) -> tuple[torch.Tensor, list[int], int]:
        """[n, samples] -> (normalised fbank windows [n, W, input_tdim, bins] from frame `offset` on, window
        starts, frames): each sound de-meaned, the last window padded with zero rows before normalisation, as in
        training."""
        f, window = self.features, self.encoder.cfg.input_tdim
        audio = audio.float()
        fbank = kaldi_fbank(audio - audio.mean(1, keepdim=True), f.sample_rate, f.num_mel_bins, f.window)
        frames = fbank.shape[1]
        starts = list(range(offset, max(frames, offset + 1), window))
        cuts = [fbank[:, s : s + window] for s in starts]
        windows = torch.stack([nn.functional.pad(c, (0, 0, 0, window - c.shape[1])) for c in cuts], 1)
        return (windows - f.mean) / (2 * f.std), starts, frames

    @torch.no_grad()
    def frames(self, audio: torch.Tensor, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """(column embeddings [n, W * t, d], column centres in ms [W * t], patch tokens [n, W, N, d], frames) of
        the windows from frame `offset` on."""
        if audio.dim() != 2:
            raise ValueError(f"audio must be [n_sounds, n_samples], got shape {tuple(audio.shape)}")
        e = self.encoder
        windows, starts, frames = self.windows(audio, offset)
        n, w = windows.shape[:2]
        tokens = e(windows.flatten(0, 1))[:, e.num_prefix :]
        f, t = e.grid
        tokens = tokens.reshape(n, w, f, t, -1)
        columns = tokens.mean(2).reshape(n, w * t, -1)
        centre = torch.arange(t) * e.cfg.tstride + (e.cfg.tshape - 1) / 2  # in frames, within a window
        ms = torch.cat([(s + centre) * 10.0 + 12.5 for s in starts])
        return columns, ms, tokens.reshape(n, w, f * t, -1), frames


def load_model(model_file_path: str = "", timestamp_interval_ms: float = 50.0, **geometry) -> HearModel:
    """A HEAR model from a pretraining or fine-tuning checkpoint of this project, a released SSAST/AST checkpoint
    (fine-tuned ones need fstride=, tstride=, input_tdim=) or a Hugging Face AST directory. The front end is the
    checkpoint's run's without its augmentation (a directory's: its feature extractor's normalisation), else the
    AudioSet normalisation (`ssast.models.Loaded.features`)."""
    loaded = models.load_model(model_file_path, **geometry)
    return HearModel(loaded.model.v, loaded.features(), timestamp_interval_ms)


def get_timestamp_embeddings(audio: torch.Tensor, model: HearModel) -> tuple[torch.Tensor, torch.Tensor]:
    """([n_sounds, n_timestamps, d] embeddings, [n_sounds, n_timestamps] centres in ms, ascending): the columns
    of every shifted pass; those whose centre falls after the end of the sound (padding) are dropped."""
    passes = [model.frames(audio, offset)[:2] for offset in model.offsets]
    columns, ms = torch.cat([c for c, _ in passes], 1), torch.cat([m for _, m in passes])
    ms, order = ms.sort()
    keep = ms < audio.shape[1] / model.sample_rate * 1000
    keep[0] = True  # at least one timestamp, even for a sound shorter than one patch column
    return columns[:, order[keep]], ms[keep].to(audio.device).expand(len(audio), -1).contiguous()


def get_scene_embeddings(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    """[n_sounds, d]: the windows' avgtok embeddings, weighted by the frames of the sound each window holds."""
    _, _, tokens, frames = model.frames(audio)
    window = model.encoder.cfg.input_tdim
    held = torch.tensor([min(window, frames - s) for s in range(0, max(frames, 1), window)], dtype=torch.float32)
    weights = (held.clamp(min=1) / held.clamp(min=1).sum()).to(tokens.device)
    return (tokens.mean(2) * weights[None, :, None]).sum(1)
