"""Plots people would rather see than read, as PNG files: attention over the source (a heatmap) and
attention over an image, per output word (drawn over the image).

Attention grid: ShowAttendTell and the multimodal translator attend over the CNN's last feature
map, flattened row-major (seq2seq/modules/vision.py, output="grid"), so HW = h * w; the images are
resized to a square before the CNN (data.core.images.default_transform), hence h = w = sqrt(HW) (7 x 7
for 224-pixel input). The grid covers the whole image, so each word's map is upsampled (bilinear)
to the image's own size (whatever its aspect ratio) and drawn over it.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402
from torch import Tensor  # noqa: E402


def attention_heatmap(
    weights: Tensor, src_tokens: list[str], tgt_tokens: list[str], path: str | Path, title: str = ""
) -> Path:
    """weights: (T, S) attention of each target token over the source tokens -> a PNG at path."""
    weights = weights.detach().float().cpu()[: len(tgt_tokens), : len(src_tokens)]
    T, S = weights.shape
    fig, ax = plt.subplots(figsize=(max(3.0, 0.4 * S + 1.5), max(2.5, 0.35 * T + 1.2)))
    image = ax.imshow(weights.numpy(), cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(S), src_tokens, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(T), tgt_tokens, fontsize=8)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


PANEL_INCHES = 2.2  # side of one image panel
MAX_SIDE = 256  # images are shown downsized to at most this many pixels a side (small PNGs)


def attention_grid_shape(hw: int) -> tuple[int, int]:
    """HW -> (h, w) of the square feature grid the attention is over; ValueError if HW is not a square."""
    side = math.isqrt(int(hw))
    if hw < 1 or side * side != hw:
        raise ValueError(
            f"attention over {hw} positions is not a square h x w feature grid; pass grid=(h, w)"
        )
    return side, side


def as_image(image: Image.Image | str | Path) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    from data.core.images import load_rgb  # ImageFileError naming the file

    return load_rgb(image)


def thumbnail(image: Image.Image) -> Image.Image:
    """A copy at most MAX_SIDE pixels a side (aspect kept)."""
    image = image.copy()
    image.thumbnail((MAX_SIDE, MAX_SIDE))
    return image


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path


def attention_overlay(
    image: Image.Image | str | Path,
    words: list[str],
    attention: Tensor,
    path: str | Path,
    grid: tuple[int, int] | None = None,
    columns: int = 5,
    title: str | None = None,
) -> Path:
    """Per generated word, its attention over the feature grid, upsampled and drawn over the image.

    image: a PIL image (or a path) -- the original, any size; words: the T generated words;
    attention: (T', HW) with T' >= T, row t the weights of word t (rows past T are ignored, as an
    <eos> step may have one); grid: (h, w) with h * w = HW, default the square sqrt(HW) grid.
    Writes a PNG at path: a grid of small panels, the image alone first (titled with `title`, else
    "image"), then one panel per word (the word as its title). Each word's map is scaled to its own
    maximum, so the panel shows where that word looks. Returns the path.
    """
    attention = torch.as_tensor(attention).detach().float().cpu()
    if attention.dim() != 2:
        raise ValueError(f"attention must be (T, HW), got shape {tuple(attention.shape)}")
    if attention.shape[0] < len(words):
        raise ValueError(f"attention has {attention.shape[0]} rows for {len(words)} words")
    h, w = grid if grid is not None else attention_grid_shape(attention.shape[1])
    if h * w != attention.shape[1]:
        raise ValueError(f"grid {h} x {w} does not match attention over {attention.shape[1]} positions")
    shown = thumbnail(as_image(image))
    W, H = shown.size
    maps = attention[: len(words)].reshape(len(words), 1, h, w)
    if len(words):
        maps = torch.nn.functional.interpolate(maps, size=(H, W), mode="bilinear", align_corners=False)
        peak = maps.flatten(1).amax(1).clamp_min(1e-12)
        maps = (maps.squeeze(1) / peak[:, None, None]).clamp(0.0, 1.0).numpy()

    panels = 1 + len(words)
    cols = max(1, min(columns, panels))
    rows = math.ceil(panels / cols)
    scale = PANEL_INCHES / max(W, H)
    fig = Figure(figsize=(cols * W * scale, rows * (H * scale + 0.35)))
    pixels = np.asarray(shown)
    for k in range(rows * cols):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.set_axis_off()
        if k >= panels:
            continue
        ax.imshow(pixels)
        if k == 0:
            ax.set_title(textwrap.shorten(title or "image", 40), fontsize=9)
            continue
        ax.imshow(
            maps[k - 1], cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0, extent=(-0.5, W - 0.5, H - 0.5, -0.5)
        )
        ax.set_title(words[k - 1], fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.35 / (rows * (H * scale + 0.35)) * 1.2,
                        wspace=0.04, hspace=0.25)  # fmt: skip
    return save_figure(fig, path)
