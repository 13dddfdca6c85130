"""bf16 autocast against fp32: the pretraining objective of the same weights, input and masks.

    python benchmarks/precision.py [--size base] [--depth 12] [--input-tdim 1024] [--mask-size 400] [--batch 8]

Faithful SSAST (two passes, cluster masks drawn once and given to both runs) on random input: the losses and the
MPC accuracy in true fp32 (TF32 off) and under bf16 autocast (the InfoNCE scores stay fp32 in both), with their
differences, and the largest relative difference of the gradients. On a GPU when there is one. Needs torch only.
"""

from __future__ import annotations

import argparse

import torch

from ssast.models import ModelConfig, SSASTModel
from ssast.models.ast import SSLConfig


def main() -> None:
    """Run the objective in both precisions and print the table of differences."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="base")
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--input-tdim", type=int, default=1024)
    parser.add_argument("--mask-size", type=int, default=400)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    model = SSASTModel(ModelConfig(size=args.size, depth=args.depth, input_tdim=args.input_tdim),
                       SSLConfig(mask_size=args.mask_size)).to(device)  # fmt: skip
    x = torch.randn(args.batch, args.input_tdim, 128, generator=torch.Generator().manual_seed(0)).to(device)
    g = torch.Generator().manual_seed(0)
    masks = [model.draw_mask(args.batch, args.mask_size, g).to(device) for _ in range(2)]
    out, grads = {}, {}
    for precision in ("fp32", "bf16"):
        model.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            result = model(x, mask_mpc=masks[0], mask_mpg=masks[1])
        result["loss"].backward()
        out[precision] = {k: v.item() for k, v in result.items()}
        grads[precision] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(
        f"device: {name}; SSAST-{args.size}, {args.depth} layers, batch {args.batch}, {args.mask_size} masked patches"
    )
    print("| value | fp32 | bf16 | difference | relative |\n|---|---|---|---|---|")
    for k in out["fp32"]:
        a, b = out["fp32"][k], out["bf16"][k]
        print(f"| {k} | {a:.5f} | {b:.5f} | {b - a:+.5f} | {abs(b - a) / abs(a):.2e} |")
    rel = (grads["bf16"] - grads["fp32"]).norm() / grads["fp32"].norm()
    print(f"gradient: |bf16 - fp32| / |fp32| = {rel:.2e}")


if __name__ == "__main__":
    main()
