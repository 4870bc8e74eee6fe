"""Captioning datasets and their batches.

* :class:`CaptionTrainDataset`: one item per (image, caption) pair.
* :class:`CaptionEvalDataset`: one item per image, with ALL its references (for corpus BLEU).

An item carries the transformed ``image`` (3, H, W), or ``features`` when the split's CNN features
are cached (data/core/features.py). :func:`collate_captions` pads items into a teacher-forcing batch.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

import torch
from torch import Tensor
from torch.utils.data import Dataset

from data.core.caption_sources import CaptionImage
from data.core.images import load_rgb
from data.core.vocab import BOS, EOS, PAD

__all__ = ["CaptionTrainDataset", "CaptionEvalDataset", "collate_captions"]


class _CaptionDataset(Dataset):
    """The images of a split with their caption ids (``ids[i][k]``: caption k of image i, no
    specials), the transform (PIL image -> (3, H, W) tensor) and cached features (N, ...) or None."""

    def __init__(
        self,
        images: list[CaptionImage],
        ids: list[list[list[int]]],
        transform: Callable,
        features: Tensor | None = None,
    ):
        self.images, self.ids, self.transform, self.features = images, ids, transform, features

    def _image_item(self, i: int) -> dict:
        """``image`` (or ``features``, row i of the cache), ``image_id`` and ``path`` of image i;
        ImageFileError naming the file if it cannot be decoded."""
        image = self.images[i]
        if self.features is not None:
            pixels = {"features": self.features[i]}
        else:
            pixels = {"image": self.transform(load_rgb(image.path))}
        return {**pixels, "image_id": image.image_id, "path": image.path}


class CaptionTrainDataset(_CaptionDataset):
    """One item per (image, caption): ``{"image" (or "features"), "caption" (ids, no specials),
    "image_id", "path"}``."""

    @cached_property
    def pairs(self) -> list[tuple[int, int]]:
        """(image, caption) indices of every item, image by image."""
        return [(i, k) for i, caps in enumerate(self.ids) for k in range(len(caps))]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, n: int) -> dict:
        i, k = self.pairs[n]
        return {**self._image_item(i), "caption": self.ids[i][k]}


class CaptionEvalDataset(_CaptionDataset):
    """One item per image, with all its references (token lists, untruncated) for corpus BLEU;
    ``caption`` holds the ids of the first (truncated) caption, for a validation loss."""

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        references = [list(c) for c in self.images[i].captions]
        return {**self._image_item(i), "caption": self.ids[i][0], "references": references}


def collate_captions(items: list[dict]) -> dict:
    """Items -> ``images (B, 3, H, W)`` (or ``features`` (B, ...) float32 from the feature cache),
    ``captions_in (B, T) = <bos> w``, ``captions_out (B, T) = w <eos>``
    (PAD after), ``lengths (B,)`` = tokens + 1 (the non-pad positions of each row), ``image_ids`` and
    ``paths`` (lists), and ``references`` (list of lists of token lists) when the items carry them."""
    B = len(items)
    T = max(len(it["caption"]) for it in items) + 1
    captions_in = torch.full((B, T), PAD, dtype=torch.long)
    captions_out = torch.full((B, T), PAD, dtype=torch.long)
    for b, it in enumerate(items):
        c = list(it["caption"])
        captions_in[b, : len(c) + 1] = torch.tensor([BOS] + c, dtype=torch.long)
        captions_out[b, : len(c) + 1] = torch.tensor(c + [EOS], dtype=torch.long)
    if "features" in items[0]:
        pixels = {"features": torch.stack([it["features"] for it in items]).float()}
    else:
        pixels = {"images": torch.stack([it["image"] for it in items])}
    batch = {
        **pixels,
        "captions_in": captions_in,
        "captions_out": captions_out,
        "lengths": torch.tensor([len(it["caption"]) + 1 for it in items], dtype=torch.long),
        "image_ids": [it["image_id"] for it in items],
        "paths": [it["path"] for it in items],
    }
    if "references" in items[0]:
        batch["references"] = [it["references"] for it in items]
    return batch
