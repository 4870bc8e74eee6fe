"""A disk cache of frozen-CNN image features: the CNN runs once per image and transform, later epochs
(and later runs) read the features.

One file per split and key, ``<cache_dir>/<split>-<digest>.pt``, holding ``{"key": ..., "paths": [...],
"features": (N, ...) float16}``. The key is a JSON-able dict that covers everything the features
depend on:

* ``encoder``: the caller's fingerprint of the network (backbone, output kind and a digest of its
  weights, see ``seq2seq.modules.vision.ImageEncoder.fingerprint``);
* ``transform``: ``repr`` of the image transform (torchvision prints sizes, interpolation, mean/std);
* ``images``: every image's path, size in bytes and modification time, in dataset order.

Change any of them and the digest changes, so the features are rebuilt (the old file stays, for a
run that goes back to it; delete ``cache_dir`` to reclaim the space). A file whose stored key
differs from the one asked for, or that cannot be read, is rebuilt with a warning. Writes go to a
temporary file renamed into place, so an interrupted run never leaves a half-written cache.

Features are stored as float16 (half the disk and memory; frozen CNN activations lose nothing that
matters to a caption decoder) and loaded memory-mapped.

Only deterministic transforms can be cached: :func:`is_deterministic` applies a transform twice to
the same image and compares; random augmentation means the CNN must run on every batch.

This module is data-only: it never imports ``captioning`` (the caller passes the extractor).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader

from data.core.images import ImageDataset, load_rgb

__all__ = ["cache_key", "digest", "is_deterministic", "FeatureCache", "cached_features"]


def cache_key(paths: list[str], encoder: str, transform: Callable) -> dict[str, Any]:
    """The key of the features of ``paths`` under ``encoder`` (a fingerprint string) and ``transform``."""
    images = []
    for p in paths:
        st = os.stat(p)
        images.append([str(p), st.st_size, st.st_mtime_ns])
    return {"encoder": encoder, "transform": repr(transform), "images": images}


def digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def is_deterministic(transform: Callable[[Image.Image], Tensor], image: Image.Image) -> bool:
    """True when ``transform`` gives the same tensor twice for ``image`` (no random augmentation)."""
    with torch.random.fork_rng():  # do not disturb the caller's random stream
        a, b = transform(image), transform(image)
    return isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape and torch.equal(a, b)


class FeatureCache:
    """Features per (split, key) under ``root``; see the module docstring."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, split: str, key: dict[str, Any]) -> Path:
        return self.root / f"{split}-{digest(key)}.pt"

    def load(self, split: str, key: dict[str, Any]) -> Tensor | None:
        """The cached features, or None on a miss (no file, another key, an unreadable file)."""
        path = self.path(split, key)
        if not path.is_file():
            return None
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as err:  # truncated or corrupt file: rebuild it
            rank_zero_warn(f"[features] cannot read {path} ({err}); rebuilding it")
            return None
        if not isinstance(stored, dict) or stored.get("key") != key:
            rank_zero_warn(f"[features] {path} holds features for another key; rebuilding it")
            return None
        features = stored["features"]
        if features.shape[0] != len(key["images"]):
            rank_zero_warn(f"[features] {path} has {features.shape[0]} rows for {len(key['images'])} images")
            return None
        return features

    def save(self, split: str, key: dict[str, Any], features: Tensor) -> Path:
        path = self.path(split, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        paths = [image[0] for image in key["images"]]
        torch.save({"key": key, "paths": paths, "features": features.to(torch.float16)}, tmp)
        os.replace(tmp, path)
        return path

    def get(self, split: str, key: dict[str, Any], compute: Callable[[], Tensor]) -> tuple[Tensor, bool]:
        """(features, hit): the cached features, or ``compute()`` stored first (then hit is False)."""
        features = self.load(split, key)
        if features is not None:
            rank_zero_info(f"[features] {split}: {features.shape[0]} images from {self.path(split, key)}")
            return features, True
        with torch.random.fork_rng():  # a miss draws nothing: a run trains the same with or without a cache
            features = compute()
        if features.shape[0] != len(key["images"]):
            n = len(key["images"])
            raise RuntimeError(f"feature extractor gave {features.shape[0]} rows for {n} images")
        path = self.save(split, key, features)
        rank_zero_info(f"[features] {split}: {features.shape[0]} images computed and cached in {path}")
        return self.load(split, key), False


Extractor = Callable[[DataLoader, str], Tensor]  # (loader of image batches, split) -> (N, ...) features


def cached_features(
    cache_dir: str | Path,
    split: str,
    paths: list[str],
    transform: Callable,
    encoder: str,
    extract: Extractor,
    batch_size: int = 64,
    num_workers: int = 0,
) -> tuple[Tensor, bool] | None:
    """The features of the images ``paths`` (in order) under ``transform`` and the network
    ``encoder`` (its fingerprint): from the cache when the key matches, else ``extract(loader,
    split)`` over a loader of the transformed images, stored first. Returns (features, hit), or None
    with a warning when the transform is random (augmentation cannot be cached)."""
    if not is_deterministic(transform, load_rgb(paths[0])):
        rank_zero_warn(
            f"[features] the {split} transform is random (augmentation): its features cannot be "
            f"cached, so the CNN runs on every {split} batch"
        )
        return None

    def compute() -> Tensor:
        dataset = ImageDataset(paths, transform)
        return extract(DataLoader(dataset, batch_size=batch_size, num_workers=num_workers), split)

    return FeatureCache(cache_dir).get(split, cache_key(paths, encoder, transform), compute)
