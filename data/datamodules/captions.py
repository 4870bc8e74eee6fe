"""CaptionDataModule: one caption source (data/core/caption_sources.py) -> batches for training and BLEU.

The data module reads one source (format detected from the file), builds the vocabulary from the
training captions only (``min_freq``), truncates captions longer than ``max_caption_len`` tokens
(counted and reported with ``rank_zero_info``), and serves (data/datamodules/caption_datasets.py)

* training: one example per (image, caption) pair, shuffled with ``seed``;
* validation / test: one example per image, with ALL its references (for corpus BLEU);
* training by image (``use_image_batches(True)``, for self-critical training): the training images
  shuffled, one example each with all its references.

Image transforms are constructor-time callables (``transform`` / ``eval_transform``: PIL image ->
(3, H, W) tensor), e.g. ``ImageEncoder.transform(train=...)`` handed in by the captioning code.
When none is given, :func:`data.core.images.default_transform` (Resize to ``image_size`` x
``image_size``, ToTensor, ImageNet normalisation) is built lazily. This module never imports
``captioning`` or ``seq2seq`` (dependencies flow ``data`` <- ``seq2seq`` <- ``captioning``).

Bad images: ``setup()`` checks, once per split it uses, that every image file exists and passes
``PIL.Image.verify()`` (:func:`data.core.images.check_image`). A bad image raises
:class:`data.core.images.ImageFileError` naming the file, or with ``skip_bad_images=True`` the image is
dropped, with a warning giving the count and the first few files (``skipped_images`` keeps the
counts per split). A file that passes the check but fails to decode later still raises
``ImageFileError`` naming it, from the dataset's ``__getitem__``.

Feature cache: :meth:`CaptionDataModule.use_features` (called by a captioning module whose CNN is
frozen) swaps the images of the given splits for CNN features computed once and kept on disk
(data/core/features.py); batches then carry ``features`` instead of ``images``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
from PIL import Image
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from data.core.caption_sources import SPLITS, TOKENIZER_NAME, CaptionImage, read_source
from data.core.epoch_shuffle import EpochShuffle, eval_sampler
from data.core.image_data import ImageData
from data.core.images import ImageFileError, check_image
from data.core.parallel import DataError
from data.core.resumable import make_loader
from data.core.vocab import Vocabulary
from data.datamodules.caption_datasets import CaptionEvalDataset, CaptionTrainDataset, collate_captions

__all__ = ["CaptionDataModule"]


class CaptionDataModule(ImageData, pl.LightningDataModule):
    """Captioning data from one source file; see the module docstring.

    Args:
        source: a Karpathy JSON (all splits), a COCO annotation JSON or a TSV (both: the train split).
        image_root: folder image paths are relative to (default: the source file's folder).
        val_source / test_source: COCO or TSV files for those splits (added to any from ``source``).
        min_freq: training-caption tokens seen fewer times become ``<unk>``.
        max_caption_len: captions longer than this many tokens are truncated (train and the
            teacher-forced eval caption; eval references stay whole); the count is reported.
        transform / eval_transform: PIL image -> (3, H, W) tensor, for training / evaluation;
            ``eval_transform`` defaults to ``transform``, both default to :func:`default_transform`.
        image_size: side of the default transform's output.
        skip_bad_images: drop (and count) missing/unreadable images instead of raising.
        seed: training shuffle order.
        cache_dir: where :meth:`use_features` keeps CNN features (default: ``feature_cache/`` beside
            the source file); see data/core/features.py.
    """

    def __init__(
        self,
        source: str,
        image_root: str | None = None,
        val_source: str | None = None,
        test_source: str | None = None,
        min_freq: int = 5,
        max_caption_len: int = 30,
        batch_size: int = 32,
        eval_batch_size: int = 32,
        num_workers: int = 0,
        image_size: int = 224,
        transform: Callable[[Image.Image], Tensor] | None = None,
        eval_transform: Callable[[Image.Image], Tensor] | None = None,
        skip_bad_images: bool = False,
        seed: int = 0,
        cache_dir: str | None = None,
    ):
        super().__init__()
        if isinstance(max_caption_len, bool) or not isinstance(max_caption_len, int) or max_caption_len < 1:
            raise ValueError(f"max_caption_len must be an int >= 1, got {max_caption_len!r}")
        self.save_hyperparameters(ignore=["transform", "eval_transform"])
        self.transform_fn = transform
        self.eval_transform = eval_transform
        self._built = False
        self.images: dict[str, list[CaptionImage]] = {}
        self.ids: dict[str, list[list[list[int]]]] = {}
        self.truncated: dict[str, int] = {}
        self.skipped_images: dict[str, int] = {}
        self.empty_captions = 0
        self._checked: set[str] = set()
        self.features: dict[str, Tensor] = {}  # split -> (N, ...) cached CNN features
        self.train_by_image = False  # see use_image_batches
        self.image_size = image_size

    # -- reading and the vocabulary (once, on first use; no image is opened) --------------------
    def build(self) -> None:
        if self._built:
            return
        hp = self.hparams
        images = read_source(hp.source, hp.image_root, "train")
        for extra, split in ((hp.val_source, "val"), (hp.test_source, "test")):
            if extra is not None:
                images += read_source(extra, hp.image_root, split)
        for image in images:  # captions with no token at all cannot be learned or scored
            keep = [k for k, c in enumerate(image.captions) if c]
            self.empty_captions += len(image.captions) - len(keep)
            image.captions = [image.captions[k] for k in keep]
            image.raw = [image.raw[k] for k in keep]
        split_images = {s: [im for im in images if im.split == s and im.captions] for s in SPLITS}
        if not split_images["train"]:
            raise DataError(f"{hp.source}: no training images with captions")
        limit = hp.max_caption_len
        train_tokens = [c[:limit] for im in split_images["train"] for c in im.captions]
        self.vocab = Vocabulary.build(train_tokens, hp.min_freq)
        for split, ims in split_images.items():
            if not ims:
                continue
            self.images[split] = ims
            self.ids[split] = [[self.vocab.encode(c[:limit]) for c in im.captions] for im in ims]
            self.truncated[split] = sum(len(c) > limit for im in ims for c in im.captions)
        counts = ", ".join(
            f"{s}: {len(self.images[s])} images / {sum(len(im.captions) for im in self.images[s])} captions"
            for s in SPLITS
            if s in self.images
        )
        rank_zero_info(
            f"[data] {hp.source}: {counts}; {self.truncated['train']} training captions longer than "
            f"max_caption_len={limit} truncated; {self.empty_captions} empty captions skipped; "
            f"vocabulary {len(self.vocab)} (min_freq={hp.min_freq})"
        )
        self._built = True

    @property
    def vocab_size(self) -> int:
        self.build()
        return len(self.vocab)

    def vocab_state(self) -> dict:
        """Everything inference needs besides the weights, as plain types."""
        self.build()
        return {
            "vocab": self.vocab.to_list(),
            "tokenizer": TOKENIZER_NAME,
            "max_caption_len": int(self.hparams.max_caption_len),
            "image_size": int(self.hparams.image_size),
        }

    # -- images ----------------------------------------------------------------------------------
    def check_images(self, split: str) -> None:
        """Check every image of ``split`` once (existence + PIL verify); raise or drop and count."""
        self.build()
        if split in self._checked or split not in self.images:
            return
        problems = [(i, check_image(im.path)) for i, im in enumerate(self.images[split])]
        bad = [(i, why) for i, why in problems if why is not None]
        if bad and not self.hparams.skip_bad_images:
            more = f" (and {len(bad) - 1} more bad images in {split})" if len(bad) > 1 else ""
            raise ImageFileError(f"{bad[0][1]}{more}; set skip_bad_images=True to leave such images out")
        if bad:
            drop = {i for i, _ in bad}
            self.images[split] = [im for i, im in enumerate(self.images[split]) if i not in drop]
            self.ids[split] = [ids for i, ids in enumerate(self.ids[split]) if i not in drop]
            shown = "; ".join(why for _, why in bad[:3]) + ("; ..." if len(bad) > 3 else "")
            rank_zero_warn(f"[data] {split}: skipped {len(bad)} bad images: {shown}")
            if not self.images[split]:
                raise DataError(f"{self.hparams.source}: every {split} image is missing or unreadable")
        self.skipped_images[split] = len(bad)
        self._checked.add(split)

    def image_paths(self, split: str) -> list[str] | None:
        self.build()
        return [im.path for im in self.images[split]] if split in self.images else None

    def transform(self, split: str = "") -> Callable:
        """The constructor's transform (training) and eval_transform (the other splits) where
        given, else the default transform."""
        train = self.transform_fn if self.transform_fn is not None else super().transform(split)
        if split == "train":
            return train
        return self.eval_transform if self.eval_transform is not None else train

    def use_image_batches(self, on: bool = True) -> None:
        """Training batches of images, each with all its references (shuffled as the pairs are),
        instead of (image, caption) pairs: what self-critical training samples from."""
        self.train_by_image = on

    def references(self, split: str) -> list[list[list[str]]]:
        """The tokenized captions of every image of ``split``, image by image (untruncated)."""
        self.build()
        if split not in self.images:
            raise DataError(f"{self.hparams.source}: no {split} split")
        return [[list(c) for c in im.captions] for im in self.images[split]]

    def dataset(self, split: str) -> Dataset:
        """The (checked) dataset of ``split``: pairs for train (images with their references after
        ``use_image_batches(True)``), images with references otherwise."""
        self.build()
        if split not in self.images:
            raise DataError(f"{self.hparams.source}: no {split} split")
        self.check_images(split)
        features = self.features.get(split)
        if split == "train" and not self.train_by_image:
            return CaptionTrainDataset(self.images[split], self.ids[split], self.transform("train"), features)
        return CaptionEvalDataset(self.images[split], self.ids[split], self.transform("val"), features)

    # -- the feature cache (use_features: ImageData) ------------------------------------------
    def feature_cache_dir(self) -> Path:
        """``cache_dir``, or ``feature_cache/`` beside the source file."""
        if self.hparams.cache_dir is not None:
            return Path(self.hparams.cache_dir)
        return Path(self.hparams.source).parent / "feature_cache"

    # -- Lightning hooks -------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        self.build()
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in needed.get(stage or "", ()):
            if split not in self.images:
                raise DataError(f"{self.hparams.source}: no {split} split (needed for {stage})")
            self.check_images(split)

    def _loader(self, split: str) -> DataLoader:
        hp = self.hparams
        train = split == "train"
        dataset = self.dataset(split)
        # the order of epoch e from (seed, e) alone; training's loader resumes mid-epoch
        sampler = EpochShuffle(len(dataset), hp.seed) if train else eval_sampler(dataset)
        return make_loader(
            dataset, train=train, seed=hp.seed, batch_size=hp.batch_size if train else hp.eval_batch_size,
            sampler=sampler, collate_fn=collate_captions,
            num_workers=hp.num_workers, persistent_workers=hp.num_workers > 0,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
