import pytest
import torch

from ssast.models.masking import cluster_patch_mask, inverse_block_mask, random_frame_mask

pytestmark = pytest.mark.unit

# Probability that a patch of frequency row r (0 = lowest) is masked, 8x64 grid, measured on the reference code.
ROW_RATES = {
    400: [0.417, 0.671, 0.814, 0.872, 0.888, 0.886, 0.883, 0.819],
    250: [0.199, 0.365, 0.498, 0.569, 0.597, 0.593, 0.590, 0.496],
}


@pytest.mark.parametrize("mask_size", [400, 250])
def test_cluster_mask_reproduces_the_reference_row_rates(mask_size):
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(512)
    for _ in range(20):
        m = cluster_patch_mask(1000, 512, mask_size, t_dim=64, generator=g)
        assert m.shape == (1000, mask_size) and m.dtype == torch.long
        assert (m > 0).all() and (m < 512).all()
        assert (m[:, 1:] > m[:, :-1]).all()  # sorted and distinct
        counts += torch.zeros(1000, 512).scatter_(1, m, 1.0).sum(0)
    rates = (counts / 20_000).view(8, 64).mean(1)
    assert torch.allclose(rates, torch.tensor(ROW_RATES[mask_size]), atol=0.01), rates


def test_cluster_mask_is_clustered_and_deterministic():
    a = cluster_patch_mask(4, 512, 100, 64, torch.Generator().manual_seed(5))
    b = cluster_patch_mask(4, 512, 100, 64, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    grid = torch.zeros(4, 512).scatter_(1, a, 1.0).view(4, 8, 64)
    right = (grid[:, :, 1:] * grid[:, :, :-1]).sum() / grid.sum()
    assert right > 0.5  # a masked patch usually has a masked neighbour: far above 100/512 for uniform masks


def test_random_frame_mask_is_uniform_and_distinct():
    g = torch.Generator().manual_seed(0)
    m = random_frame_mask(20_000, 512, 400, g)
    assert all(len(set(r.tolist())) == 400 for r in m[:100])
    rates = torch.zeros(512).index_add_(0, m.flatten(), torch.ones(m.numel())) / 20_000
    assert (rates - 400 / 512).abs().max() < 0.015
    assert rates[0] > 0.7  # index 0 can be masked in frame models


def test_inverse_block_mask_leaves_square_blocks_visible():
    a = inverse_block_mask(500, (8, 8), 48, torch.Generator().manual_seed(3))
    assert torch.equal(a, inverse_block_mask(500, (8, 8), 48, torch.Generator().manual_seed(3)))
    assert a.shape == (500, 48) and (a[:, 1:] > a[:, :-1]).all() and (a >= 0).all() and (a < 64).all()
    visible = 1 - torch.zeros(500, 64).scatter_(1, a, 1.0).view(500, 8, 8)
    assert (visible.sum((1, 2)) == 16).all()
    # a visible patch mostly has a visible neighbour to its right (uniform masks: 16/64 = 0.25)
    assert (visible[:, :, 1:] * visible[:, :, :-1]).sum() / visible[:, :, :-1].sum() > 0.6
    # one block of side 3 is exactly a 3x3 square inside the grid, anywhere
    one = inverse_block_mask(200, (8, 8), 64 - 9, torch.Generator().manual_seed(0), factors=(3,))
    for m in one:
        seen = torch.ones(64).index_fill_(0, m, 0.0).view(8, 8).nonzero()
        top, left = seen.min(0).values.tolist()
        assert seen.max(0).values.tolist() == [top + 2, left + 2] and len(seen) == 9
    corners = {tuple(torch.ones(64).index_fill_(0, m, 0.0).view(8, 8).nonzero().min(0).values.tolist()) for m in one}
    assert len(corners) > 25  # of the 36 places a 3x3 block fits


def test_mask_size_is_checked():
    with pytest.raises(ValueError, match="mask_size"):
        cluster_patch_mask(1, 64, 63, 8)
    with pytest.raises(ValueError, match="mask_size"):
        random_frame_mask(1, 64, 65)
    with pytest.raises(ValueError, match="mask_size"):
        inverse_block_mask(1, (8, 8), 64)
