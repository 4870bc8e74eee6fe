"""MultimodalDataModule: parallel text with the image each sentence pair describes (Multi30k layout).

DATA_DIR holds ``{split}.{src_lang}``, ``{split}.{tgt_lang}`` (as ParallelTextDataModule reads them)
and ``{split}_images.txt``: one image file name a line, line i belonging to sentence pair i, relative
to ``image_dir``. Everything about the text (tokenizers, vocabularies, max_len, val_size, bucketing)
is ParallelTextDataModule's; pairs keep their file line, so the image of a pair is found after
empty lines were skipped and long pairs dropped.

Batches carry ``images`` (B, 3, H, W), or ``features`` (B, R, C) once the translation module asks for
the feature cache (`use_features`, data/core/features.py: a frozen CNN runs once per image and
transform), and ``image_path`` (list). ``shuffle_images: SEED`` permutes the dev and test images
among their pairs, for testing with incongruent images. The transform is Resize to ``image_size``
square, ToTensor and Normalize with the backbone's mean/std (`use_normalization`, called by the
module).

Bad input is named: an image list whose length differs from its text (both files, both counts), an
image file that is missing or unreadable (the file, the list and its line).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from data.core.batching import collate_pairs
from data.core.image_data import ImageData
from data.core.images import (
    ImageFileError,
    check_image,
    load_rgb,
)
from data.core.parallel import DataError, ParallelText, read_lines
from data.datamodules.translation import PairDataset, ParallelTextDataModule

__all__ = ["MultimodalDataModule", "ImagePairDataset", "image_list_path"]


def image_list_path(data_dir: str | Path, split: str) -> Path:
    return Path(data_dir) / f"{split}_images.txt"


class ImagePairDataset(Dataset):
    """PairDataset items with their image: "image" (3, H, W), or "features" from the cache; neither
    when `transform` is None (a text-only model: no image is read)."""

    def __init__(
        self, pairs: PairDataset, paths: list[str], transform: Callable | None, features: Tensor | None
    ):
        self.pairs, self.paths, self.transform, self.features = pairs, paths, transform, features
        self.src_ids, self.tgt_ids = pairs.src_ids, pairs.tgt_ids

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        item = self.pairs[i]
        item["image_path"] = self.paths[i]
        if self.features is not None:
            item["features"] = self.features[i]
        elif self.transform is not None:
            item["image"] = self.transform(load_rgb(self.paths[i]))
        return item


class MultimodalDataModule(ImageData, ParallelTextDataModule):
    """ParallelTextDataModule's options, plus where the images are; see the module docstring."""

    def __init__(
        self,
        image_dir: str,
        image_size: int = 224,
        cache_dir: str | None = None,  # default: DATA_DIR/feature_cache
        shuffle_images: int | None = None,  # dev/test images permuted with this seed (incongruent)
        **kwargs,
    ):
        super().__init__(**kwargs)
        if image_size < 16:
            raise ValueError(f"data.image_size must be >= 16 pixels, got {image_size}")
        self.image_dir = Path(image_dir)
        self.image_size, self.shuffle_images = image_size, shuffle_images
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.data_dir / "feature_cache"
        self.image_names: dict[str, list[str]] = {}  # split file name -> the names of its list
        self.features: dict[str, Tensor] = {}
        self.read_images = True  # False: batches without images, for a text-only model (`use_images`)
        self._checked: set[str] = set()

    # -- the image list of each split -----------------------------------------------------------
    def read_split(self, split: str) -> ParallelText | None:
        text = super().read_split(split)
        if text is None:
            return None
        path = image_list_path(self.data_dir, split)
        names = read_lines(path)  # DataError naming the file when it is missing
        n_text = len(text) + text.skipped_empty
        if len(names) != n_text:
            raise DataError(
                f"{path} has {len(names)} lines but {text.origin} has {n_text} sentence pairs: the image "
                "list needs one image file name a line, line i for pair i"
            )
        self.image_names[split] = names
        return text

    def _build_prepared(self) -> None:
        super()._build_prepared()  # the text comes prepared; the image lists are read as they are
        for name in self.datasets:
            split = self._split_file(name)
            path = image_list_path(self.data_dir, split)
            names = read_lines(path)
            text = self.datasets[name].text
            n_text = int(text.lines.max()) + 1 if len(text) else 0  # at least this many file lines
            if len(names) < n_text:
                raise DataError(
                    f"{path} has {len(names)} lines but {text.origin} has at least {n_text} sentence pairs: "
                    "the image list needs one image file name a line, line i for pair i"
                )
            self.image_names[split] = names

    def _split_file(self, name: str) -> str:
        hp = self.hparams
        return {"train": hp.train_split, "dev": hp.dev_split, "test": hp.test_split}[name]

    def image_paths(self, name: str) -> list[str] | None:
        """The image of each pair of dataset `name` (train, dev, test), in dataset order (None
        before setup made it); with `shuffle_images` the dev and test images are permuted among
        their pairs (Elliott 2018's incongruent images: a model that reads the image must get worse)."""
        if name not in self.datasets:
            return None
        self.build()
        names = self.image_names[self._split_file(name)]
        paths = [str(self.image_dir / names[line]) for line in self.datasets[name].text.lines]
        if self.shuffle_images is not None and name != "train":
            random.Random(self.shuffle_images).shuffle(paths)
        return paths

    def check_images(self, name: str) -> None:
        """Every image of dataset `name` exists and can be read (PIL verify); else ImageFileError
        naming the image, the list file and its line."""
        if name in self._checked:
            return
        self.build()
        split = self._split_file(name)
        names = self.image_names[split]
        for line in sorted(set(self.datasets[name].text.lines)):
            problem = check_image(self.image_dir / names[line])
            if problem is not None:
                raise ImageFileError(
                    f"{problem} ({image_list_path(self.data_dir, split)}, line {line + 1}); fix the "
                    "image list or data.image_dir"
                )
        self._checked.add(name)

    def vocab_state(self) -> dict:
        return {**super().vocab_state(), "image_size": self.image_size}

    # -- images, normalised for the backbone, or its cached features (ImageData) ---------------
    def feature_cache_dir(self) -> Path:
        return self.cache_dir

    def use_images(self, read: bool) -> None:
        """read=False: batches without images or features, so that a text-only model (fusion none)
        on this data trains and tests as fast as on the text alone. The image lists are still checked."""
        self.read_images = read

    # -- Lightning hooks ----------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        needed = {"fit": ("train", "dev"), "validate": ("dev",), "test": ("test",)}.get(stage or "", ())
        for name in needed:
            self.check_images(name)

    def dataset(self, name: str) -> Dataset:
        features = self.features.get(name)
        transform = self.transform() if self.read_images else None
        return ImagePairDataset(self.datasets[name], self.image_paths(name), transform, features)

    def collate(self, items: list[dict]) -> dict:
        batch = collate_pairs(items)
        batch["image_path"] = [it["image_path"] for it in items]
        if "features" in items[0]:
            batch["features"] = torch.stack([it["features"] for it in items]).float()
        elif "image" in items[0]:
            batch["images"] = torch.stack([it["image"] for it in items])
        return batch
