"""Captioning plots as PNG files: attention over the image per generated word, and a grid of images
with their generated captions.

    attention_overlay(image, words, attention (T, HW), path) -> Path
    caption_grid([(image, hypothesis, references), ...], path, title=None) -> Path

Only matplotlib's object-oriented API is used (`matplotlib.figure.Figure`, rendered by Agg): no
pyplot, no global backend switch, no GUI, safe in a training process and its callbacks. Nothing
here imports torch modules of the project (captioning.module, ...), so the module's validation
logging can import this file cheaply.

Attention grid: ShowAttendTell attends over the CNN's last feature map, flattened row-major
(seq2seq/modules/vision.py, output="grid"), so HW = h * w; the images are resized to a square before
the CNN (data.images.default_transform), hence h = w = sqrt(HW) (7 x 7 for 224-pixel input).
The grid covers the whole image, so each word's map is upsampled (bilinear) to the image's own size
(whatever its aspect ratio) and drawn over it.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

__all__ = ["attention_grid_shape", "attention_overlay", "caption_grid"]

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


def _as_image(image: Image.Image | str | Path) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    from data.images import load_rgb  # ImageFileError naming the file

    return load_rgb(image)


def _shown(image: Image.Image) -> Image.Image:
    """A copy at most MAX_SIDE pixels a side (aspect kept)."""
    image = image.copy()
    image.thumbnail((MAX_SIDE, MAX_SIDE))
    return image


def _save(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
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
    shown = _shown(_as_image(image))
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
    return _save(fig, path)


def _first_reference(refs) -> str:
    """refs: 'ref one | ref two' (as the module's sample rows join them), a list of strings, or a
    list of token lists -> the first reference as a string ('' when there is none)."""
    if refs is None:
        return ""
    if isinstance(refs, str):
        return refs.split(" | ")[0].strip()
    refs = list(refs)
    if not refs:
        return ""
    first = refs[0]
    return first if isinstance(first, str) else " ".join(first)


def caption_grid(
    samples: Sequence[tuple[Image.Image | str | Path, str, str | Sequence]],
    path: str | Path,
    title: str | None = None,
    columns: int = 4,
) -> Path:
    """A PNG at path: each sample's image with its generated caption under it and the first
    reference, smaller and grey, under that.

    samples: (image path or PIL image, hypothesis string, references) tuples; references are a
    string (several joined with " | ", as CaptioningModule's sample rows are), a list of strings
    or a list of token lists. An image that cannot be read becomes a grey panel saying so (a
    logging call never fails on one bad file). title: a line above the grid. Returns the path.
    """
    samples = list(samples)
    if not samples:
        raise ValueError("caption_grid needs at least one (image, hypothesis, references) sample")
    cols = max(1, min(columns, len(samples)))
    rows = math.ceil(len(samples) / cols)
    wrap = 30
    texts = []
    for _, hyp, refs in samples:
        hyp_lines = textwrap.wrap(str(hyp), wrap) or ["(empty caption)"]
        ref = _first_reference(refs)
        ref_lines = textwrap.wrap(f"ref: {ref}", wrap + 8) if ref else []
        texts.append((hyp_lines, ref_lines))
    text_lines = max(len(h) + 0.8 * len(r) for h, r in texts)
    text_inches = 0.2 + 0.19 * text_lines
    head = 0.4 if title else 0.05
    fig = Figure(figsize=(cols * PANEL_INCHES, head + rows * (PANEL_INCHES + text_inches)))
    grid = fig.add_gridspec(
        2 * rows, cols, height_ratios=[PANEL_INCHES, text_inches] * rows,
        left=0.02, right=0.98, bottom=0.01, top=1 - head / fig.get_figheight(), wspace=0.08, hspace=0.05,
    )  # fmt: skip
    for k, ((image, _, _), (hyp_lines, ref_lines)) in enumerate(zip(samples, texts)):
        r, c = divmod(k, cols)
        ax = fig.add_subplot(grid[2 * r, c])
        ax.set_axis_off()
        try:
            ax.imshow(np.asarray(_shown(_as_image(image))))
        except Exception as err:  # noqa: BLE001 - a bad file: say so in its panel, keep the rest
            ax.imshow(np.full((8, 8, 3), 200, dtype=np.uint8))
            ax.text(0.5, 0.5, textwrap.fill(f"cannot read image: {err}", 30), ha="center", va="center",
                    fontsize=6, transform=ax.transAxes)  # fmt: skip
        tx = fig.add_subplot(grid[2 * r + 1, c])
        tx.set_axis_off()
        tx.text(0.5, 1.0, "\n".join(hyp_lines), ha="center", va="top", fontsize=9, transform=tx.transAxes)
        if ref_lines:
            y = 1.0 - (len(hyp_lines) * 0.19 + 0.05) / text_inches
            tx.text(0.5, y, "\n".join(ref_lines), ha="center", va="top", fontsize=7, color="0.35",
                    transform=tx.transAxes)  # fmt: skip
    if title:
        fig.suptitle(textwrap.shorten(title, 120), fontsize=10, y=1 - 0.08 / fig.get_figheight())
    return _save(fig, path)
