"""Mask generators for masked spectrogram patch modeling, as the SSAST reference draws them.

Both return LongTensor [B, mask_size] of patch indices in [0, num_patches) (prefix tokens excluded), drawn
from an explicit `torch.Generator`, vectorised over the batch.
"""

from __future__ import annotations

from typing import Optional

import torch


def random_frame_mask(
    batch: int, num_patches: int, mask_size: int, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """`mask_size` distinct indices drawn uniformly per clip (the reference's frame-model masking)."""
    if not 0 < mask_size <= num_patches:
        raise ValueError(f"mask_size must be in [1, {num_patches}], got {mask_size}")
    return torch.rand(batch, num_patches, generator=generator).argsort(1)[:, :mask_size]


def cluster_patch_mask(
    batch: int,
    num_patches: int,
    mask_size: int,
    t_dim: int,
    generator: Optional[torch.Generator] = None,
    factors: tuple[int, ...] = (3, 4, 5),
    anchors: int = 256,
) -> torch.Tensor:
    """The reference's cluster masking for the patch model, for a whole batch at once.

    Per clip: one cluster factor c from `factors`; anchors a drawn uniformly from [0, num_patches) add the
    block a + i * t_dim + j (i, j < c), keeping indices in (0, num_patches) (index 0 is never masked and blocks
    may wrap into the next frequency row), until MORE than `mask_size` distinct indices are collected; the
    `mask_size` smallest are kept (sorted). Instead of looping, each patch records the first anchor that covers
    it; the stopping anchor is the first at which the running count of covered patches exceeds `mask_size`.
    """
    if not 0 < mask_size < num_patches - 1:
        raise ValueError(f"mask_size must be in [1, {num_patches - 2}], got {mask_size}")
    c = torch.tensor(factors)[torch.randint(len(factors), (batch,), generator=generator)]
    size = max(factors)
    while True:  # draws more anchors in the rare case `anchors` do not reach mask_size for some clip
        start = torch.randint(num_patches, (batch, anchors), generator=generator)
        i, j = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        offset = (i * t_dim + j).flatten()  # [size * size]
        in_block = ((i < c[:, None, None]) & (j < c[:, None, None])).flatten(1)  # [B, size * size]
        cand = start[:, :, None] + offset  # [B, anchors, size * size]
        valid = in_block[:, None, :] & (cand > 0) & (cand < num_patches)
        order = torch.arange(anchors).expand_as(start)[:, :, None].expand_as(cand)
        first = torch.full((batch, num_patches + 1), anchors)  # column num_patches collects invalid entries
        first.scatter_reduce_(
            1, torch.where(valid, cand, num_patches).flatten(1), torch.where(valid, order, anchors).flatten(1), "amin"
        )
        first = first[:, :num_patches]
        covered = torch.zeros(batch, anchors + 1, dtype=torch.long).scatter_add_(1, first, torch.ones_like(first))
        enough = covered[:, :anchors].cumsum(1) > mask_size  # [B, anchors]
        if enough.any(1).all():
            break
        anchors *= 2
    stop = enough.int().argmax(1)  # first anchor after which the count exceeds mask_size
    collected = first <= stop[:, None]
    index = torch.where(collected, torch.arange(num_patches), num_patches)
    return index.sort(1).values[:, :mask_size]


def inverse_block_mask(
    batch: int,
    grid: tuple[int, int],
    mask_size: int,
    generator: Optional[torch.Generator] = None,
    factors: tuple[int, ...] = (3, 4, 5),
) -> torch.Tensor:
    """EAT's inverse block masking: the visible patches come in square blocks, everything else is masked.

    Per clip: one block side c from `factors` (at most the grid's sides); c x c blocks at uniform positions
    inside the (frequency, time) `grid` are laid down in turn until they cover at least the num_patches -
    `mask_size` visible patches; those covered by earlier blocks stay visible first (the last block's patches
    in random order), and the `mask_size` others are the mask, sorted.
    """
    f, t = grid
    n, keep = f * t, f * t - mask_size
    if not 0 < mask_size < n:
        raise ValueError(f"mask_size must be in [1, {n - 1}], got {mask_size}")
    c = torch.tensor(factors)[torch.randint(len(factors), (batch,), generator=generator)].clamp(max=min(f, t))
    size = int(c.max())
    i, j = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    in_block = ((i < c[:, None, None]) & (j < c[:, None, None])).flatten(1)  # [B, size * size]
    blocks = n
    while True:  # n blocks nearly always cover enough; more are drawn when they do not
        row = (torch.rand(batch, blocks, generator=generator) * (f - c[:, None] + 1)).long()
        col = (torch.rand(batch, blocks, generator=generator) * (t - c[:, None] + 1)).long()
        cand = ((row[..., None] + i.flatten()) * t + col[..., None] + j.flatten()).clamp(max=n - 1)
        order = torch.arange(blocks).expand(batch, blocks)[..., None].expand_as(cand)
        first = torch.full((batch, n + 1), blocks)  # column n collects the unused corners of smaller blocks
        first.scatter_reduce_(
            1,
            torch.where(in_block[:, None], cand, n).flatten(1),
            torch.where(in_block[:, None], order, blocks).flatten(1),
            "amin",
        )
        first = first[:, :n]
        if ((first < blocks).sum(1) >= keep).all():
            break
        blocks *= 2
    rank = first + torch.rand(batch, n, generator=generator)  # within a block, random order
    return rank.argsort(1)[:, keep:].sort(1).values
