"""The image side of a data module, written once for captions, VQA and multimodal translation.

`ImageData` is a mixin: the normalisation the model's CNN expects (`use_normalization`, called by
the model's setup before any image is read), the default transform (Resize to `image_size`
square, ToTensor, Normalize), and serving a frozen CNN's cached features instead of images for
some splits (`use_features`: data/core/features.py computes them once per image and transform).
A data module that mixes it in sets `image_size`, `features` ({} to start with) and the
hyperparameters `eval_batch_size` and `num_workers`, and implements:

    image_paths(split) -> list[str] | None   the image of each item of `split`, in dataset order
                                             (None: no such split)
    check_images(split)                      every image of `split` readable (once), else an
                                             ImageFileError naming it (or drop it, if the module
                                             is told to skip bad images)
    feature_cache_dir() -> Path              where the features are kept

The LightningModules reach it through the protocols of data/core/protocols.py.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from torch import Tensor

from data.core.features import Extractor, cached_features
from data.core.images import IMAGENET_MEAN, IMAGENET_STD, default_transform


class ImageData(ABC):
    image_size: int
    features: dict[str, Tensor]
    normalization: tuple[Sequence[float], Sequence[float]] = (IMAGENET_MEAN, IMAGENET_STD)

    @abstractmethod
    def image_paths(self, split: str) -> list[str] | None: ...

    @abstractmethod
    def check_images(self, split: str) -> None: ...

    @abstractmethod
    def feature_cache_dir(self) -> Path: ...

    def use_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """The mean/std of the default transform: the CNN's (its weights expect them)."""
        self.normalization = (tuple(mean), tuple(std))

    def transform(self, split: str = "") -> Callable:
        """PIL image -> (3, image_size, image_size) for `split` (the default transform for every
        split; a module with transforms of its own overrides this)."""
        return default_transform(self.image_size, *self.normalization)

    def use_features(self, extract: Extractor, encoder: str, splits: Iterable[str]) -> dict[str, bool]:
        """Serve cached CNN features instead of images for `splits`: from the cache when its key
        (`encoder` fingerprint, transform, image files) matches, else `extract(loader, split)`,
        computed once and stored. Returns {split: True for a cache hit, False for features just
        computed}; a split with a random transform keeps its images (features.py warns)."""
        hits = {}
        for split in splits:
            if self.image_paths(split) is None:
                continue
            self.check_images(split)  # may leave bad images out: the paths after it
            found = cached_features(
                self.feature_cache_dir(), split, self.image_paths(split), self.transform(split), encoder,
                extract, self.hparams.eval_batch_size, self.hparams.num_workers,
            )  # fmt: skip
            if found is not None:
                self.features[split], hits[split] = found
        return hits
