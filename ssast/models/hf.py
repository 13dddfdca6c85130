"""Hugging Face's AST format: a directory with ``config.json`` and ``model.safetensors`` of an
``ASTForAudioClassification`` (the format of the AudioSet-fine-tuned AST shared on the Hub).

Both directions work without ``transformers`` installed. The format has square patches (``patch_size``), two
prefix tokens, one LayerNorm eps for every norm, and classifies the mean of the normed cls and distillation
tokens, which is this project's ``cls`` pooling; so an ``avgtok`` model, a frame (128x2) model or a
``base_nokd`` model has no faithful export and is refused. A loaded model keeps the file's eps in every
LayerNorm, so its logits are the ``transformers`` ones, and exports back exactly. A model of this project
(encoder norms eps 1e-6, head norm 1e-5 as the reference) is exported with eps 1e-6: its head norm then adds
1e-6 instead of 1e-5 to the pooled vector's variance, a relative change of the logits of about 1e-5.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ssast.models.ast import SIZES, ASTClassifier, ModelConfig
from ssast.models.formats import CheckpointError

PREFIX = "audio_spectrogram_transformer."
# ours -> theirs, for every tensor but the fused qkv projection (split into query, key and value)
_NAMES = {
    "v.cls_token": "embeddings.cls_token",
    "v.dist_token": "embeddings.distillation_token",
    "v.pos_embed": "embeddings.position_embeddings",
    "v.patch_embed.proj": "embeddings.patch_embeddings.projection",
    "v.norm": "layernorm",
}
_BLOCK = {
    "attn.proj": "attention.output.dense",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
}
_HEAD = {"mlp_head.0": "classifier.layernorm", "mlp_head.1": "classifier.dense"}


def _their_name(key: str) -> str:
    module, _, param = key.rpartition(".")
    if key.startswith("mlp_head."):
        return f"{_HEAD[module]}.{param}"
    if key.startswith("v.blocks."):
        _, _, i, *rest = module.split(".")
        return f"{PREFIX}encoder.layer.{i}.{_BLOCK['.'.join(rest)]}.{param}"
    return PREFIX + (_NAMES[key] if key in _NAMES else f"{_NAMES[module]}.{param}")


def to_hf_state(model: ASTClassifier) -> dict[str, torch.Tensor]:
    """The model's tensors under ``transformers``' names (qkv split into query, key and value)."""
    out = {}
    for key, value in model.state_dict().items():
        if ".attn.qkv." in key:
            i, param = key.split(".")[2], key.rsplit(".", 1)[1]
            for name, part in zip(("query", "key", "value"), value.chunk(3), strict=True):
                out[f"{PREFIX}encoder.layer.{i}.attention.attention.{name}.{param}"] = part.contiguous()
        else:
            out[_their_name(key)] = value.contiguous()
    return out


def _hf_config(model: ASTClassifier) -> dict:
    """``config.json`` of an ``ASTForAudioClassification`` holding `model`."""
    cfg = model.cfg
    dim, heads, _ = SIZES[cfg.size]
    eps = {m.eps for m in model.modules() if isinstance(m, nn.LayerNorm)}
    labels = model.classes or [f"LABEL_{i}" for i in range(model.mlp_head[1].out_features)]
    return {
        "architectures": ["ASTForAudioClassification"],
        "model_type": "audio-spectrogram-transformer",
        "hidden_size": dim,
        "num_hidden_layers": cfg.depth,
        "num_attention_heads": heads,
        "intermediate_size": 4 * dim,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": eps.pop() if len(eps) == 1 else 1e-6,
        "qkv_bias": True,
        "patch_size": cfg.fshape,
        "frequency_stride": cfg.fstride,
        "time_stride": cfg.tstride,
        "max_length": cfg.input_tdim,
        "num_mel_bins": cfg.input_fdim,
        "id2label": {str(i): n for i, n in enumerate(labels)},
        "label2id": {n: i for i, n in enumerate(labels)},
    }


def export_hf(model: ASTClassifier, directory: str | Path, mean: float = -4.2677393, std: float = 4.5689974) -> Path:
    """Write `model` as an ``ASTForAudioClassification`` directory (config, weights, and the feature
    extractor's settings with the fbank normalisation `mean` / `std`)."""
    cfg = model.cfg
    why = (
        "pooling is avgtok (the format classifies the cls and distillation tokens)"
        if model.pooling != "cls"
        else f"patches are {cfg.fshape}x{cfg.tshape} (the format has square patches)"
        if cfg.fshape != cfg.tshape
        else "it has one prefix token (the format has two)"
        if model.v.num_prefix != 2
        else ""
    )
    if why:
        raise CheckpointError(f"cannot export to the Hugging Face AST format: {why}")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(_hf_config(model), indent=2))
    extractor = {
        "feature_extractor_type": "ASTFeatureExtractor",
        "feature_size": 1,
        "sampling_rate": 16000,
        "num_mel_bins": cfg.input_fdim,
        "max_length": cfg.input_tdim,
        "do_normalize": True,
        "mean": mean,
        "std": std,
        "padding_value": 0.0,
        "return_attention_mask": False,
    }
    (d / "preprocessor_config.json").write_text(json.dumps(extractor, indent=2))
    save_file(to_hf_state(model), str(d / "model.safetensors"), metadata={"format": "pt"})
    return d


def load_hf(directory: str | Path) -> ASTClassifier:
    """An ``ASTForAudioClassification`` directory as an `ASTClassifier` (cls pooling) with the same logits."""
    d = Path(directory)
    for name in ("config.json", "model.safetensors"):
        if not (d / name).is_file():
            raise CheckpointError(f"{d} is not a Hugging Face AST directory: {name} not found")
    try:
        c = json.loads((d / "config.json").read_text())
        weights = load_file(str(d / "model.safetensors"))
    except (ValueError, OSError, SafetensorError) as e:  # a torn or foreign file
        raise CheckpointError(f"cannot read the Hugging Face AST directory {d}: {str(e).splitlines()[0]}") from None
    if c.get("model_type") != "audio-spectrogram-transformer":
        raise CheckpointError(f"{d / 'config.json'}: model_type is {c.get('model_type')!r}, not an AST")
    sizes = [
        n
        for n, (dim, heads, prefix) in SIZES.items()
        if (dim, heads, prefix) == (c["hidden_size"], c["num_attention_heads"], 2)
    ]
    if not sizes or c["intermediate_size"] != 4 * c["hidden_size"] or c.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(
            f"{d}: hidden_size {c['hidden_size']}, {c['num_attention_heads']} heads, intermediate "
            f"{c['intermediate_size']}, {c.get('hidden_act')}: not a tiny, small or base AST"
        )
    p = c["patch_size"]
    cfg = ModelConfig(
        sizes[0],
        c["num_hidden_layers"],
        p,
        p,
        c["frequency_stride"],
        c["time_stride"],
        c["num_mel_bins"],
        c["max_length"],
    )
    n = weights["classifier.dense.weight"].shape[0]
    model = ASTClassifier(cfg, n, "cls")
    theirs = {}
    for key in model.state_dict():
        if ".attn.qkv." in key:
            i, param = key.split(".")[2], key.rsplit(".", 1)[1]
            parts = [
                f"{PREFIX}encoder.layer.{i}.attention.attention.{name}.{param}" for name in ("query", "key", "value")
            ]
            if all(p in weights for p in parts):
                theirs[key] = torch.cat([weights.pop(p) for p in parts])
        elif _their_name(key) in weights:
            theirs[key] = weights.pop(_their_name(key))
    missing = sorted(model.state_dict().keys() - theirs.keys())
    if missing or weights:
        raise CheckpointError(
            f"{d / 'model.safetensors'} does not fit ASTForAudioClassification: missing "
            f"{[_their_name(k) for k in missing][:4]}, unexpected {sorted(weights)[:4]}"
        )
    model.load_state_dict(theirs)
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            m.eps = c.get("layer_norm_eps", 1e-12)
    id2label = c.get("id2label", {})
    model.classes = [id2label.get(str(i), f"LABEL_{i}") for i in range(n)]
    return model
