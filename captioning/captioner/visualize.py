"""Captioning plots as PNG files: a grid of images with their generated captions (the attention
overlay per generated word is seq2seq.training.plots.attention_overlay, shared with multimodal translation).

    caption_grid([(image, hypothesis, references), ...], path, title=None) -> Path
    metrics_plot([[epoch, {metric: value}], ...], path) -> Path   validation metrics by epoch
    reward_plot([[step, reward, baseline], ...], path) -> Path     SCST's mean reward and baseline

Only matplotlib's object-oriented API is used (`matplotlib.figure.Figure`, rendered by Agg): no
pyplot, no global backend switch, no GUI, safe in a training process and its callbacks. Nothing
here imports torch modules of the project (captioning.captioner.module, ...), so the module's validation
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

from seq2seq.training.plots import PANEL_INCHES, as_image, save_figure, thumbnail

__all__ = ["caption_grid", "metrics_plot", "reward_plot"]


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


def metrics_plot(history: Sequence, path: str | Path) -> Path:
    """history: [epoch, {"bleu4": .., "cider": .., ...}] per validation -> one panel per metric
    (BLEU-1..4 together), value by epoch."""
    from captioning.captioner.metrics import NAMES

    epochs = [int(e) for e, _ in history]
    panels = [("BLEU", [f"bleu{n}" for n in range(1, 5)]), ("METEOR", ["meteor"]), ("ROUGE-L", ["rouge_l"]),
              ("CIDEr-D", ["cider"])]  # fmt: skip
    panels = [(t, keys) for t, keys in panels if any(s.get(k) is not None for _, s in history for k in keys)]
    fig = Figure(figsize=(3.2 * max(1, len(panels)), 2.8))
    for i, (title, keys) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for key in keys:
            points = [(e, s[key]) for e, (_, s) in zip(epochs, history) if s.get(key) is not None]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=NAMES[key])
        ax.set_title(f"val {title}")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def reward_plot(rewards: Sequence, path: str | Path) -> Path:
    """rewards: [step, mean reward, mean baseline] per SCST step -> both curves (CIDEr-D, the
    scorer's scale) and their moving average."""
    steps = np.array([r[0] for r in rewards], dtype=float)
    values = np.array([[r[1], r[2]] for r in rewards], dtype=float)
    fig = Figure(figsize=(6.0, 3.0))
    ax = fig.add_subplot(1, 1, 1)
    window = max(1, len(steps) // 20)
    kernel = np.ones(window) / window
    for j, (name, color) in enumerate((("sample reward", "tab:blue"), ("baseline", "tab:orange"))):
        ax.plot(steps, values[:, j], color=color, alpha=0.3, linewidth=0.8)
        if len(steps) >= window:
            smooth = np.convolve(values[:, j], kernel, mode="valid")
            ax.plot(steps[window - 1 :], smooth, color=color, label=f"{name} (mean of {window})")
    ax.set_xlabel("training step")
    ax.set_ylabel("CIDEr-D")
    ax.set_title("self-critical training: reward and baseline")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
