"""A straightforward implementation of the reference's pretraining step, the baseline of `pretrain_step.py`.

It follows the published SSAST code: per-clip Python masking loops, mask tokens written clip by clip, explicit
(unfused) attention, an InfoNCE loop over the clips of the batch, two encoder passes (MPC, then MPG), fp32. It
shares the weights of an `SSASTModel`, so its losses can be compared with the project's on the same masks.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from ssast.models import SSASTModel


def reference_mask(sequence_len: int, mask_size: int, t_dim: int, cluster: bool) -> torch.Tensor:
    """The reference's masks, as published: cluster anchors until more than mask_size distinct indices (patch
    model), or a uniform draw (frame model)."""
    if not cluster:
        return torch.tensor(random.sample(range(sequence_len), mask_size))
    mask_id: list[int] = []
    size = random.randrange(3) + 3
    while len(set(mask_id)) <= mask_size:
        start = random.randrange(sequence_len)
        mask_id += [
            start + t_dim * i + j for i in range(size) for j in range(size) if 0 < start + t_dim * i + j < sequence_len
        ]
    return torch.tensor(list(set(mask_id))[:mask_size])


class ReferenceStep:
    """The reference's forward pass of the joint objective on `model`'s weights (explicit attention)."""

    def __init__(self, model: SSASTModel):
        self.model = model
        model.v.set_fused_attn(False)

    def encode(self, fbank: torch.Tensor, mask_index: torch.Tensor) -> torch.Tensor:
        """The reference's encoder pass: mask tokens at `mask_index`, explicit attention, every token."""
        v = self.model.v
        x = v.patch_embed(fbank)
        mask_dense = self.model.mask_embed.expand(x.shape[0], x.shape[1], -1)
        for i in range(x.shape[0]):  # clip by clip, as the reference writes its mask tokens
            x[i, mask_index[i], :] = mask_dense[i, mask_index[i], :]
        x = torch.cat([v.prefix(x.shape[0]), x], 1) + v.pos_embed
        for blk in v.blocks:
            x = blk(x)
        return v.norm(x)[:, v.num_prefix :]

    def mpc(self, fbank: torch.Tensor, mask_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference's MPC loss and accuracy, clip by clip."""
        patches = self.model.patches(fbank)
        h = self.encode(fbank, mask_index)
        b, m = mask_index.shape
        encode_samples = torch.stack([patches[i, mask_index[i]] for i in range(b)])
        pred = torch.stack([self.model.cpredlayer(h[i, mask_index[i]]) for i in range(b)])
        nce, correct = torch.tensor(0.0), torch.tensor(0.0)
        for i in range(b):
            total = torch.mm(encode_samples[i], pred[i].t())
            correct += torch.sum(torch.eq(torch.argmax(F.softmax(total, dim=-1), dim=0), torch.arange(m)))
            nce += torch.sum(torch.diag(F.log_softmax(total, dim=-1)))
        return correct / (b * m), nce / (-1.0 * b * m)

    def mpg(self, fbank: torch.Tensor, mask_index: torch.Tensor) -> torch.Tensor:
        """The reference's MPG loss, clip by clip."""
        patches = self.model.patches(fbank)
        h = self.encode(fbank, mask_index)
        b = mask_index.shape[0]
        pred = torch.stack([self.model.gpredlayer(h[i, mask_index[i]]) for i in range(b)])
        target = torch.stack([patches[i, mask_index[i]] for i in range(b)])
        return torch.mean((pred - target) ** 2)

    def __call__(
        self,
        fbank: torch.Tensor,
        mask_size: int,
        cluster: bool = True,
        mpg_weight: float = 10.0,
        masks: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The reference's joint objective with its own masks (or the given ones): MPC + 10 * MPG."""
        if masks is None:
            n, t_dim = self.model.v.num_patches, self.model.v.grid[1]
            masks = tuple(
                torch.stack([reference_mask(n, mask_size, t_dim, cluster) for _ in range(len(fbank))]) for _ in range(2)
            )
        acc, mpc = self.mpc(fbank, masks[0])
        mpg = self.mpg(fbank, masks[1])
        return {"mpc_acc": acc, "mpc_loss": mpc, "mpg_loss": mpg, "loss": mpc + mpg_weight * mpg}
