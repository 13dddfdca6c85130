"""One way in for every model source the project reads: this project's pretraining and fine-tuning checkpoints,
released SSAST/AST checkpoints, and Hugging Face AST directories. Every stage, the predictor, the HEAR module and
the probes load through `load_model`.

    loaded = load_model("runs/demo/seed0/checkpoints/last.pt")     # Loaded(model, run, stats)
    encoder = loaded.model.v                                         # the AST encoder of any source
    loaded.features()                                                # the front end it was trained with
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from ssast.features import FeatureConfig
from ssast.models.ast import ASTClassifier, ASTEncoder, SSASTModel, resized
from ssast.models.formats import CheckpointError, checkpoint_kind, load_classifier, load_pretraining, read
from ssast.models.hf import load_hf

Kind = Literal["any", "pretraining", "classifier"]
_AUGMENTATION = ("freqm", "timem", "noise", "crop")  # training-only front-end settings


@dataclass
class Loaded:
    """A model and what its source says about how it was trained."""

    model: SSASTModel | ASTClassifier
    run: dict = field(default_factory=dict)  # the training run's configuration ({} for released / HF sources)
    stats: dict = field(default_factory=dict)  # a Hugging Face directory's fbank normalisation ("mean", "std")

    @property
    def kind(self) -> str:
        """ "pretraining" or "classifier"."""
        return "classifier" if isinstance(self.model, ASTClassifier) else "pretraining"

    def features(self) -> FeatureConfig:
        """The front end to embed or classify with: the training run's without its augmentation, else the
        source's normalisation (AudioSet's when it stores none), at the model's input size."""
        cfg = self.model.cfg
        run = {k: v for k, v in self.run.get("features", {}).items() if k not in _AUGMENTATION}
        return FeatureConfig(**{**run, **self.stats, "target_length": cfg.input_tdim, "num_mel_bins": cfg.input_fdim})


def _hf_directory(path: Path) -> Loaded:
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path} is a folder but not a Hugging Face AST directory (no config.json)")
    pre = path / "preprocessor_config.json"
    stats = json.loads(pre.read_text()) if pre.is_file() else {}
    return Loaded(load_hf(path), stats={k: stats[k] for k in ("mean", "std") if k in stats})


def load_model(
    source,
    kind: Kind = "any",
    *,
    n_classes: Optional[int] = None,
    fstride: Optional[int] = None,
    tstride: Optional[int] = None,
    input_tdim: Optional[int] = None,
    pooling: Optional[str] = None,
    fused_attn: Optional[bool] = None,
    reference_quirks: bool = False,
) -> Loaded:
    """The model of `source`: a checkpoint path (this project's or released), a state dict in memory, or a Hugging
    Face AST directory. `kind` "pretraining" or "classifier" refuses the other kind with one line, except that a
    classifier is built from a pretraining checkpoint given `n_classes` (encoder at `fstride` / `tstride` /
    `input_tdim` with the positional embedding adapted, a fresh head). Released fine-tuned checkpoints do not
    store their stride and input length: pass `fstride`, `tstride` and `input_tdim`."""
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        loaded = _hf_directory(Path(source))
        if kind == "pretraining":
            raise CheckpointError(f"{source} is a fine-tuned Hugging Face AST, not a pretraining checkpoint")
        if fused_attn is not None:
            loaded.model.v.set_fused_attn(fused_attn)
    else:
        ckpt = read(source)
        found = checkpoint_kind(ckpt)
        if kind == "any":
            kind = found
        if kind == "pretraining":
            model = load_pretraining(ckpt, fused_attn, str(source) if isinstance(source, (str, Path)) else "this")
        else:
            model = load_classifier(
                ckpt,
                n_classes,
                fstride,
                tstride,
                input_tdim,
                pooling=pooling,
                fused_attn=fused_attn,
                reference_quirks=reference_quirks,
            )
        run = ckpt.get("config", {}) if "kind" in ckpt else {}
        loaded = Loaded(model, run)  # its front end is the run's
    return loaded


def load_encoder(source, fused_attn: Optional[bool] = None, **geometry) -> ASTEncoder:
    """The encoder of any source `load_model` reads (released fine-tuned checkpoints need their ``fstride``,
    ``tstride`` and ``input_tdim``); a pretraining encoder given another ``input_tdim`` is `resized` to it."""
    return encoder_and_front_end(source, fused_attn, **geometry)[0]


def encoder_and_front_end(source, fused_attn: Optional[bool] = None, **geometry) -> tuple[ASTEncoder, FeatureConfig]:
    """`load_encoder`'s encoder and the front end it was trained with (`Loaded.features`)."""
    loaded = load_model(source, fused_attn=fused_attn, **geometry)
    encoder = loaded.model.v
    return (resized(encoder, geometry["input_tdim"]) if geometry.get("input_tdim") else encoder), loaded.features()
