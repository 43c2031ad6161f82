"""The discovery picture: the found patches over an example image, so a reviewer sees where and what."""

from __future__ import annotations

import io

import numpy as np
import torch

from medaudit.confounders.discovery import DiscoveryResult


def discovery_png(image: torch.Tensor, result: DiscoveryResult, title: str) -> bytes:
    """PNG bytes: the example image (C x H x W in [0, 1]) clean, then with every region's patch (for the
    class it flips most towards) pasted and outlined, flagged regions in red with their flip rates."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import Rectangle

    rows = result.rows()
    patched = image.clone()
    for row in rows:
        top, left, h, w = row["box"]
        patched[:, top : top + h, left : left + w] = result.patches[row["index"], row["class_index"]]

    def show(axis, picture: torch.Tensor) -> None:
        array = picture.permute(1, 2, 0).numpy()
        if array.shape[2] == 1:
            axis.imshow(array[:, :, 0], cmap="gray", vmin=0, vmax=1)
        else:
            axis.imshow(np.clip(array, 0, 1))
        axis.set_xticks([])
        axis.set_yticks([])

    figure, (left_axis, right_axis) = plt.subplots(1, 2, figsize=(8, 4.4), dpi=100)
    show(left_axis, image)
    left_axis.set_title("example image")
    show(right_axis, patched)
    right_axis.set_title("found patches (red: flagged)")
    for row in rows:
        top, left, h, w = row["box"]
        colour = "red" if row["flagged"] else "yellow"
        right_axis.add_patch(
            Rectangle((left - 0.5, top - 0.5), w, h, fill=False, edgecolor=colour, linewidth=1.5)
        )
        right_axis.text(
            left + w / 2 - 0.5, top + h - 0.5, f"{row['flip_rate']:.0%} {row['towards']}", color=colour,
            fontsize=7, ha="center", va="top", bbox={"facecolor": "black", "alpha": 0.6, "pad": 1, "linewidth": 0},
        )  # fmt: skip
    figure.suptitle(title, fontsize=10)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
