"""Captioning plots as PNG files: a grid of images with their generated captions (the attention
overlay per generated word is seq2seq.plots.attention_overlay, shared with multimodal translation).

    caption_grid([(image, hypothesis, references), ...], path, title=None) -> Path

Only matplotlib's object-oriented API is used (`matplotlib.figure.Figure`, rendered by Agg): no
pyplot, no global backend switch, no GUI, safe in a training process and its callbacks. Nothing
here imports torch modules of the project (captioning.module, ...), so the module's validation
logging can import this file cheaply.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from seq2seq.plots import PANEL_INCHES, as_image, save_figure, thumbnail

__all__ = ["caption_grid"]

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
            ax.imshow(np.asarray(thumbnail(as_image(image))))
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
    return save_figure(fig, path)
