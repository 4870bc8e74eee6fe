"""Plots people would rather see than read: attention heatmaps as PNG files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
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
