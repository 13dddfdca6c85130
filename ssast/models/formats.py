"""Model checkpoints: this project's format and the released SSAST/AST format.

This project's checkpoint is a dict with ``kind`` ("pretraining" or "classifier"), ``model_config``, ``model``
(the state dict), for classifiers ``n_classes``, ``pooling`` and ``classes`` (names), plus whatever training
state the engine adds.
A released checkpoint is a bare state dict saved from ``nn.DataParallel`` (keys start with ``module.``; loading
accepts them with or without). Model size, depth, patch shape and pretraining input size are read from its
tensors; the unused 1000-class timm heads ``v.head``/``v.head_dist`` are dropped on load.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
import re
from pathlib import Path
from typing import Optional

import torch

from ssast.config import UserError
from ssast.models.ast import SIZES, ASTClassifier, ModelConfig, SSASTModel, grid_size

_TIMM_HEADS = ("v.head.weight", "v.head.bias", "v.head_dist.weight", "v.head_dist.bias")


class CheckpointError(UserError, ValueError):
    """A checkpoint that does not fit the model asked for; the message names the keys."""


def read(source) -> dict:
    """A checkpoint dict from a path or a dict already in memory."""
    if isinstance(source, dict):
        return source
    path = Path(source)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    with open(path, "rb") as f:
        if f.read(4)[:2] not in (b"PK", b"\x80\x02"):  # torch.save's zip archive, or its legacy pickle
            raise CheckpointError(f"cannot read checkpoint {path}: not a PyTorch checkpoint file")
    try:  # weights_only: a checkpoint is data; a pickle that would build arbitrary objects (run code) is refused
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e):  # torch's weights-only unpickler names the class it blocked
            raise CheckpointError(
                f"refusing to load {path}: it holds Python objects other than tensors and plain "
                f"containers, and unpickling them could run code"
            ) from None
        raise CheckpointError(f"cannot read checkpoint {path}: its pickled data is corrupt") from None
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from None


def model_state(model: SSASTModel | ASTClassifier) -> dict:
    """The model part of this project's checkpoint."""
    state = {"model_config": dataclasses.asdict(model.cfg), "model": model.state_dict()}
    if isinstance(model, ASTClassifier):
        return {
            "kind": "classifier",
            "n_classes": model.mlp_head[1].out_features,
            "pooling": model.pooling,
            "classes": model.classes,
            **state,
        }
    return {"kind": "pretraining", **state}


def weights_hash(module: Optional[torch.nn.Module]) -> str:
    """sha256 of a module's tensors (names, shapes, dtypes and bytes): equal exactly when the weights are; "fbank"
    for no module (the fbank-statistics features)."""
    if module is None:
        return "fbank"
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _official(ckpt: dict) -> Optional[dict]:
    """The state dict without ``module.`` if `ckpt` is in the released format, else None."""
    sd = {k.removeprefix("module."): v for k, v in ckpt.items()}
    return sd if "v.cls_token" in sd else None


def checkpoint_kind(ckpt: dict) -> str:
    """ "pretraining" or "classifier", from this project's ``kind`` or a released file's tensors."""
    if "kind" in ckpt:
        return ckpt["kind"]
    sd = _official(ckpt)
    if sd is None:
        raise CheckpointError("not an SSAST checkpoint: no 'kind' entry and no 'v.cls_token' tensor")
    return "pretraining" if "mask_embed" in sd else "classifier"


def infer_config(
    sd: dict,
    fstride: Optional[int] = None,
    tstride: Optional[int] = None,
    input_tdim: Optional[int] = None,
    input_fdim: Optional[int] = None,
) -> ModelConfig:
    """Architecture of a released state dict. Pretraining ones store their input size (``p_input_*``) and
    use stride == shape; fine-tuned ones need the stride and input length from the caller."""
    dim, prefix = sd["v.cls_token"].shape[-1], 2 if "v.dist_token" in sd else 1
    sizes = [name for name, (d, _, p) in SIZES.items() if (d, p) == (dim, prefix)]
    if not sizes:
        raise CheckpointError(f"v.cls_token has dim {dim} with {prefix} prefix token(s): no model size fits")
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"v\.blocks\.(\d+)\.", k)))
    fshape, tshape = sd["v.patch_embed.proj.weight"].shape[2:]
    if "p_input_tdim" in sd:
        fdim, tdim = int(sd["p_input_fdim"]), int(sd["p_input_tdim"])
        cfg = ModelConfig(sizes[0], depth, fshape, tshape, fshape, tshape, fdim, tdim)
    else:
        missing = [n for n, v in (("fstride", fstride), ("tstride", tstride), ("input_tdim", input_tdim)) if v is None]
        if missing:
            raise CheckpointError(f"a released fine-tuned checkpoint does not store {', '.join(missing)}: pass them")
        cfg = ModelConfig(sizes[0], depth, fshape, tshape, fstride, tstride, input_fdim or 128, input_tdim)
    tokens = sd["v.pos_embed"].shape[1]
    f, t = grid_size(cfg)
    if tokens != prefix + f * t:
        raise CheckpointError(
            f"v.pos_embed has {tokens} tokens but stride ({cfg.fstride}, {cfg.tstride}) and input "
            f"({cfg.input_fdim}, {cfg.input_tdim}) give {prefix} + {f}x{t} = {prefix + f * t}"
        )
    return cfg


def load_state(model: torch.nn.Module, sd: dict, name: str) -> None:
    """Strict load with a one-line error naming the missing and unexpected keys."""
    sd = {k: v for k, v in sd.items() if k not in _TIMM_HEADS and k not in ("p_input_fdim", "p_input_tdim")}
    expected = model.state_dict()
    missing, unexpected = sorted(expected.keys() - sd.keys()), sorted(sd.keys() - expected.keys())
    bad_shape = sorted(k for k in expected.keys() & sd.keys() if expected[k].shape != sd[k].shape)
    if missing or unexpected or bad_shape:
        parts = [
            f"{label}: {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", bad_shape))
            if keys
        ]
        raise CheckpointError(f"{name} does not fit {type(model).__name__} ({'; '.join(parts)})")
    model.load_state_dict(sd)


def load_pretraining(source, fused_attn: Optional[bool] = None, name: str = "this") -> SSASTModel:
    """An `SSASTModel` from this project's or a released pretraining checkpoint (`name`: its path, for errors)."""
    ckpt = read(source)
    if checkpoint_kind(ckpt) != "pretraining":
        raise CheckpointError(f"{name} is a fine-tuned (classifier) checkpoint, not a pretraining one")
    sd = _official(ckpt)
    cfg = infer_config(sd) if sd is not None else ModelConfig(**ckpt["model_config"])
    if fused_attn is not None:
        cfg = dataclasses.replace(cfg, fused_attn=fused_attn)
    model = SSASTModel(cfg)
    load_state(model, sd if sd is not None else ckpt["model"], "pretraining checkpoint")
    return model


def load_classifier(
    source,
    n_classes: Optional[int] = None,
    fstride: Optional[int] = None,
    tstride: Optional[int] = None,
    input_tdim: Optional[int] = None,
    input_fdim: Optional[int] = None,
    pooling: Optional[str] = None,
    fused_attn: Optional[bool] = None,
    reference_quirks: bool = False,
) -> ASTClassifier:
    """An `ASTClassifier` from a fine-tuned checkpoint, or built from a pretraining one with `n_classes`."""
    ckpt = read(source)
    if checkpoint_kind(ckpt) == "pretraining":
        if n_classes is None:
            raise CheckpointError("building a classifier from a pretraining checkpoint needs n_classes")
        return ASTClassifier.from_pretrained(
            load_pretraining(ckpt, fused_attn),
            n_classes,
            fstride,
            tstride,
            input_tdim,
            pooling or "avgtok",
            reference_quirks,
        )
    sd = _official(ckpt)
    if sd is not None:
        cfg = infer_config(sd, fstride, tstride, input_tdim, input_fdim)
        n = sd["mlp_head.1.weight"].shape[0] if "mlp_head.1.weight" in sd else None
    else:
        cfg, n, sd = ModelConfig(**ckpt["model_config"]), ckpt["n_classes"], ckpt["model"]
        pooling = pooling or ckpt["pooling"]
    if n is None:
        raise CheckpointError("classifier checkpoint has no mlp_head.1.weight")
    if n_classes is not None and n_classes != n:
        raise CheckpointError(f"checkpoint has {n} classes (mlp_head.1.weight), asked for {n_classes}")
    if fused_attn is not None:
        cfg = dataclasses.replace(cfg, fused_attn=fused_attn)
    model = ASTClassifier(cfg, n, pooling or "avgtok")
    load_state(model, sd, "classifier checkpoint")
    model.classes = list(ckpt.get("classes", []))
    return model


def export_official(model: SSASTModel | ASTClassifier) -> dict:
    """The model's state dict in the released format: ``module.`` keys, ``p_input_*`` for pretraining models,
    and zero-filled 1000-class ``v.head``/``v.head_dist`` so that the reference code loads it strictly (its
    forward never uses them)."""
    if getattr(model, "decoder", None) is not None:
        raise CheckpointError(
            "a fast-mode model has no released format (the reference has no decoder): export "
            "its encoder as a classifier, ASTClassifier.from_pretrained(model, n_classes)"
        )
    sd = dict(model.state_dict())
    dim = model.v.embed_dim
    for head in ("v.head", "v.head_dist") if model.v.num_prefix == 2 else ("v.head",):
        sd[f"{head}.weight"], sd[f"{head}.bias"] = torch.zeros(1000, dim), torch.zeros(1000)
    if isinstance(model, SSASTModel):
        sd["p_input_fdim"] = torch.tensor(model.cfg.input_fdim)
        sd["p_input_tdim"] = torch.tensor(model.cfg.input_tdim)
    return {"module." + k: v for k, v in sd.items()}
