"""The reconstruction picture: low frequencies at the bottom, masked patches marked, the error only where masked."""

import numpy as np
import pytest
import torch

from ssast.models import ModelConfig, SSASTModel
from ssast.models.spectrograms import MASKED_GREY, figure_rgb, reconstruction_panels, reconstruction_plot

pytestmark = pytest.mark.unit

MASK = torch.tensor([3, 12, 35, 60])  # token = frequency row * 8 + time column on the 8 x 8 grid


@pytest.fixture(scope="module", params=[0, 2], ids=["faithful", "fast"])
def panels(request):
    torch.manual_seed(0)
    model = SSASTModel(ModelConfig("tiny", 1, input_tdim=128, decoder_depth=request.param, decoder_dim=96)).eval()
    fbank = torch.full((128, 128), -1.0)
    fbank[:, :16] = 1.0  # a low tone: the lowest 16 mel bins, all the time
    with torch.no_grad():
        return reconstruction_panels(model, fbank, MASK)


def test_panels_put_the_low_tone_in_row_zero_and_mark_exactly_the_masked_patches(panels):
    assert {k: v.shape for k, v in panels.items()} == {
        "input": (128, 128),
        "masked input": (128, 128),
        "reconstruction": (128, 128),
        "error": (8, 8),
    }
    assert (panels["input"][:16] == 1).all() and (panels["input"][16:] == -1).all()
    masked = np.isnan(panels["masked input"])
    for token in MASK.tolist():
        f, t = divmod(token, 8)
        assert masked[f * 16 : (f + 1) * 16, t * 16 : (t + 1) * 16].all()
    assert masked.sum() == len(MASK) * 256 and np.isfinite(panels["reconstruction"]).all()
    error = panels["error"].reshape(-1)
    assert np.isnan(np.delete(error, MASK.numpy())).all() and (error[MASK.numpy()] > 0).all()
    visible = ~masked
    assert np.array_equal(panels["reconstruction"][visible], panels["input"][visible])


def test_the_figure_shows_low_frequencies_at_the_bottom_and_masked_patches_grey(panels):
    fig = reconstruction_plot(panels)
    height = fig.canvas.get_width_height()[1]
    axes = fig.axes[:4]
    titles = [ax.get_title() for ax in axes]
    rgb = figure_rgb(fig).transpose(1, 2, 0)

    def pixel(ax, seconds, mel):  # display coordinates count from the bottom, image rows from the top
        x, y = ax.transData.transform((seconds, mel))
        return rgb[int(height - y), int(x)]

    assert titles == ["input", "masked input", "reconstruction", "squared error per masked patch"]
    assert axes[0].get_xlabel() == "time (s)" and axes[0].get_ylabel() == "mel bin"
    bottom, top = pixel(axes[0], 0.64, 8), pixel(axes[0], 0.64, 120)  # 1.28 s shown: 128 frames of 10 ms
    assert bottom.mean() > 0.8 and top.mean() < 0.1  # magma: the tone bright, the rest dark
    grey = np.full(3, MASKED_GREY)
    for token in MASK.tolist():
        f, t = divmod(token, 8)
        assert np.allclose(pixel(axes[1], (t * 16 + 8) * 0.01, f * 16 + 8), grey, atol=0.01)
    assert not np.allclose(pixel(axes[1], (1 * 16 + 8) * 0.01, 8), grey, atol=0.05)  # token 1: visible
