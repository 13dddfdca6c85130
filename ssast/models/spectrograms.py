"""The picture of masked patch modelling: input, masked input, reconstruction and per-patch error of one clip.

Each panel puts low frequencies at the bottom, time in seconds (10-ms frames) on the x axis and mel bins on the
y axis; masked patches are grey in the masked input, and the reconstruction keeps the visible patches from the
input and shows the model's prediction at the masked ones (the MPG head, in faithful and fast mode alike).
"""

from __future__ import annotations

import numpy as np
import torch

from ssast.models import SSASTModel

FRAME_SECONDS = 0.01  # the Kaldi fbank's frame shift
MASKED_GREY = 0.6  # the grey of masked patches (matplotlib's grey level)


def reconstruction_panels(model: SSASTModel, fbank: torch.Tensor, mask: torch.Tensor) -> dict[str, np.ndarray]:
    """For one clip `fbank` [T, F] and masked patch indices `mask` [M]: "input", "masked input" (NaN where
    masked), "reconstruction" [F, T] and "error" (squared error per patch on the patch grid, NaN where visible)."""
    patches = model.patches(fbank[None])
    index = mask[None, :, None].expand(-1, -1, patches.shape[-1])
    pred = model.gpredlayer(model.masked_outputs(fbank[None], mask[None])[0]).float()
    nan = torch.full_like(patches, float("nan"))
    maps = [model.unpatch(p)[0] for p in (patches, patches.scatter(1, index, nan), patches.scatter(1, index, pred))]
    error = torch.full(patches.shape[1:2], float("nan")).scatter(0, mask, ((pred[0] - patches[0, mask]) ** 2).mean(1))
    grid = model.v.grid  # (frequency, time) patches
    panels = dict(zip(("input", "masked input", "reconstruction"), maps, strict=True))
    panels["error"] = error.view(grid)  # token order is frequency-major
    return {k: v.detach().cpu().numpy() for k, v in panels.items()}


def reconstruction_plot(panels: dict[str, np.ndarray], dpi: int = 80):
    """The panels side by side: a matplotlib figure (Agg), titled, with axes and colour bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    freq, frames = panels["input"].shape
    extent = (0.0, frames * FRAME_SECONDS, 0.0, float(freq))
    low, high = np.nanmin(panels["input"]), np.nanmax(panels["input"])
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.2), dpi=dpi, constrained_layout=True)
    for ax, (title, image) in zip(axes, panels.items(), strict=True):
        bad = str(MASKED_GREY) if title == "masked input" else "white"
        cmap = plt.get_cmap("magma" if title != "error" else "viridis").with_extremes(bad=bad)
        scale = {} if title == "error" else {"vmin": low, "vmax": high}  # the spectrograms share one scale
        shown = ax.imshow(image, origin="lower", aspect="auto", extent=extent, cmap=cmap, interpolation="none", **scale)
        ax.set_title(title if title != "error" else "squared error per masked patch")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("mel bin")
        fig.colorbar(shown, ax=ax, fraction=0.05)
    fig.canvas.draw()
    return fig


def figure_rgb(fig) -> np.ndarray:
    """A drawn figure as an RGB image [3, H, W] in [0, 1] (TensorBoard's layout); the figure is closed."""
    import matplotlib.pyplot as plt

    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(np.float32) / 255
    plt.close(fig)
    return rgb.transpose(2, 0, 1).copy()
