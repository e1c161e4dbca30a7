"""Figures shared by runs and reports (matplotlib, headless)."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt  # headless machines fall back to Agg by themselves; notebooks stay inline
import numpy as np
import torch

#: the most images one panel of :func:`show_images` draws (``ppgen sample -n``): the figure
#: grows with the grid's rows so that every image keeps its size; 1024 images in 8 columns make
#: a figure about 3,700 pixels tall, more is a figure no one can look at (and, far beyond it,
#: more than matplotlib can render: a blank image)
MAX_IMAGES = 1024


def image_grid(images: torch.Tensor, image_shape, ncol: int = 8) -> np.ndarray:
    """Tile flat images ``[N, C*H*W]`` into one ``[rows*H, ncol*W]`` (or RGB) array, each image
    scaled to [0, 1] by its data range."""
    c, h, w = image_shape
    x = images.detach().float().cpu().reshape(-1, c, h, w)
    lo, hi = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
    x = (x - lo) / (hi - lo).clamp_min(1e-8)
    n = x.shape[0]
    rows = -(-n // ncol)
    grid = torch.zeros(c, rows * (h + 1), ncol * (w + 1))
    for i in range(n):
        r, k = divmod(i, ncol)
        grid[:, r * (h + 1):r * (h + 1) + h, k * (w + 1):k * (w + 1) + w] = x[i]
    grid = grid.permute(1, 2, 0).numpy()
    return grid[..., 0] if c == 1 else grid


def show_images(panels: dict, image_shape, ncol: int = 8, path=None):
    """One subplot per named set of flat images (e.g. data / reconstructions / samples); a grid
    of more than ``ncol`` rows makes the figure taller, so that the images stay legible."""
    rows = max(math.ceil(len(imgs) / ncol) for imgs in panels.values())
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4 * max(1.0, rows / ncol)), squeeze=False)
    for ax, (title, imgs) in zip(axes[0], panels.items()):
        ax.imshow(image_grid(imgs, image_shape, ncol), cmap="gray_r", interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig
