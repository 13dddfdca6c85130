"""Golden vectors of the reference SSAST code (`tests/data/golden.pt`, 60 KB) and the seeded recipe that rebuilds
the weights they were computed with, so that no weights are stored.

Recipe: for a dict {key: shape}, key number i in sorted order gets ``randn(shape, Generator(seed * 1000 + i)) *
0.05``, plus 1 for 1-D ``.weight`` tensors (LayerNorm gains). A released-format checkpoint is that dict with the
``module.`` prefix, plus the int64 ``p_input_fdim`` / ``p_input_tdim`` for pretraining models. Inputs are
``randn(shape, Generator(x_seed)) * x_scale``.
"""

from pathlib import Path

import torch

GOLDEN = torch.load(Path(__file__).parents[1] / "data" / "golden.pt", weights_only=True)
VARIANTS = sorted(GOLDEN["variants"])  # "128x2" (frame model), "16x16" (patch model)


def recipe(shapes: dict, seed: int) -> dict[str, torch.Tensor]:
    weights = {}
    for i, key in enumerate(sorted(shapes)):
        t = torch.randn(tuple(shapes[key]), generator=torch.Generator().manual_seed(seed * 1000 + i)) * 0.05
        weights[key] = t + 1 if key.endswith(".weight") and len(shapes[key]) == 1 else t
    return weights


def released_pretraining(variant: str) -> dict[str, torch.Tensor]:
    """The pretraining checkpoint exactly as the reference saves it (``module.`` keys, input-size buffers)."""
    g = GOLDEN["variants"][variant]["pretrain"]
    sd = recipe(g["shapes"], g["seed"]) | {k: torch.tensor(v) for k, v in g["int_buffers"].items()}
    return {"module." + k: v for k, v in sd.items()}


def released_finetuned(variant: str) -> dict[str, torch.Tensor]:
    g = GOLDEN["variants"][variant]["finetuned"]
    return {"module." + k: v for k, v in recipe(g["shapes"], g["seed"]).items()}


def mlp_head(variant: str, dim: int = 192) -> dict[str, torch.Tensor]:
    """The ``mlp_head`` the reference's fine-tuning model got in the `adapt` check (head_seed, mlp_head keys only)."""
    g = GOLDEN["variants"][variant]["adapt"]
    shapes = {
        "mlp_head.0.weight": (dim,),
        "mlp_head.0.bias": (dim,),
        "mlp_head.1.weight": (g["n_classes"], dim),
        "mlp_head.1.bias": (g["n_classes"],),
    }
    return recipe(shapes, g["head_seed"])


def pretraining_input(variant: str) -> torch.Tensor:
    g = GOLDEN["variants"][variant]["pretrain"]
    return torch.randn(2, 1024, 128, generator=torch.Generator().manual_seed(g["x_seed"])) * g["x_scale"]


def finetuning_input(variant: str) -> torch.Tensor:
    g = GOLDEN["variants"][variant]["adapt"]
    return torch.randn(2, g["input_tdim"], 128, generator=torch.Generator().manual_seed(g["x_seed"])) * 0.5


def strip(sd: dict) -> dict:
    return {k.removeprefix("module."): v for k, v in sd.items()}
