"""Image-captioning data: Karpathy JSON, COCO caption annotations or a TSV -> batches for training and BLEU.

Readers (all return ``list[CaptionImage]``, each image with its path, split, and captions as token
lists plus the raw strings):

* :func:`read_karpathy` -- Karpathy's ``dataset_{coco,flickr8k,flickr30k}.json`` (and
  ``data.shapes``' ``dataset_shapes.json``): ``images[].filename``, optional ``filepath``,
  ``split`` in train/val/test/restval (``restval`` counts as ``train``), ``sentences[].tokens``
  (``raw`` when ``tokens`` is absent is tokenized with :func:`tokenize_caption`). Tokens are lowercased.
* :func:`read_coco` -- a COCO captions annotation file (``captions_train2014.json``):
  ``images[].id/file_name``, ``annotations[].image_id/caption``; every image gets the one split the
  caller names. Images without any caption are left out.
* :func:`read_tsv` -- ``image_path<TAB>caption`` a line, several lines per image allowed; blank lines
  are skipped; relative paths are resolved against ``image_root``.

Raw captions are tokenized by :func:`tokenize_caption`, which needs no downloaded data: lowercase,
then words are runs of letters and digits (an inner apostrophe stays: ``man's``); punctuation is
dropped, as in Karpathy's tokenized splits.

:class:`CaptionDataModule` (a LightningDataModule) reads one source (format detected from the file),
builds the vocabulary from the training captions only (``min_freq``), truncates captions longer than
``max_caption_len`` tokens (counted and reported with ``rank_zero_info``), and serves

* training: one example per (image, caption) pair, shuffled with ``seed``;
* validation / test: one example per image, with ALL its references (for corpus BLEU).

Image transforms are constructor-time callables (``transform`` / ``eval_transform``: PIL image ->
(3, H, W) tensor), e.g. ``ImageEncoder.transform(train=...)`` handed in by the captioning code.
When none is given, a default (Resize to ``image_size`` x ``image_size``, ToTensor, ImageNet
normalisation) is built lazily with a local torchvision import. This module never imports
``captioning`` or ``seq2seq`` (dependencies flow ``data`` <- ``seq2seq`` <- ``captioning``).

Bad images: ``setup()`` checks, once per split it uses, that every image file exists and passes
``PIL.Image.verify()`` (cheap: headers and structure, no full decode). A bad image raises
:class:`ImageFileError` naming the file, or with ``skip_bad_images=True`` the image is dropped, with
a warning giving the count and the first few files (``skipped_images`` keeps the counts per split).
A file that passes the check but fails to decode later still raises :class:`ImageFileError` naming
it, from the dataset's ``__getitem__``.

Feature cache: :meth:`CaptionDataModule.use_features` (called by a captioning module whose CNN is
frozen) swaps the images of the given splits for CNN features computed once and kept on disk
(data/features.py); batches then carry ``features`` instead of ``images``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from PIL import Image, UnidentifiedImageError
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .features import FeatureCache, cache_key, is_deterministic
from .parallel import DataError, read_lines
from .vocab import BOS, EOS, PAD, Vocabulary

__all__ = [
    "CaptionImage",
    "ImageFileError",
    "tokenize_caption",
    "read_karpathy",
    "read_coco",
    "read_tsv",
    "read_source",
    "detect_format",
    "load_rgb",
    "check_image",
    "CaptionTrainDataset",
    "CaptionEvalDataset",
    "collate_captions",
    "CaptionDataModule",
]

SPLITS = ("train", "val", "test")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TOKENIZER_NAME = "caption-regex-lower"  # goes into vocab_state(); see tokenize_caption

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


class ImageFileError(DataError):
    """An image file that is missing, unreadable or corrupt; the message names the file."""


@dataclass
class CaptionImage:
    """One image and its captions. ``captions[k]`` are the tokens of ``raw[k]``."""

    path: str
    split: str
    captions: list[list[str]]
    raw: list[str]
    image_id: int | str = ""
    notes: list[str] = field(default_factory=list)


def tokenize_caption(text: str) -> list[str]:
    """Lowercase; words are runs of letters/digits (inner apostrophes kept); punctuation dropped.

    >>> tokenize_caption("A man's dog, jumping!  Over 2 logs.")
    ['a', "man's", 'dog', 'jumping', 'over', '2', 'logs']
    """
    return _WORD.findall(text.lower())


# ---------------------------------------------------------------------------------------------
# readers


def _load_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None


def _require(obj: Any, key: str, kind: type | tuple[type, ...], where: str, path: Path) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise DataError(f"{path}: {where} has no key {key!r}")
    value = obj[key]
    if not isinstance(value, kind):
        names = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise DataError(f"{path}: {where}[{key!r}] must be a {names}, got {type(value).__name__}")
    return value


def read_karpathy(json_path: str | Path, image_root: str | Path | None = None) -> list[CaptionImage]:
    """Karpathy-format JSON -> images of all splits (``restval`` becomes ``train``).

    Image path: ``image_root / filepath / filename`` (``filepath`` optional, as in Flickr8k);
    ``image_root`` defaults to the JSON file's folder.
    """
    path = Path(json_path)
    root = Path(image_root) if image_root is not None else path.parent
    data = _load_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with an 'images' list (Karpathy format)")
    entries = _require(data, "images", list, "the top level", path)
    images = []
    for i, entry in enumerate(entries):
        where = f"images[{i}]"
        filename = _require(entry, "filename", str, where, path)
        split = _require(entry, "split", str, where, path)
        if split not in ("train", "val", "test", "restval"):
            raise DataError(f"{path}: {where} has split {split!r}; expected train, val, test or restval")
        sentences = _require(entry, "sentences", list, where, path)
        captions, raws = [], []
        for k, sentence in enumerate(sentences):
            swhere = f"{where}['sentences'][{k}]"
            if isinstance(sentence, dict) and "tokens" in sentence:
                tokens = _require(sentence, "tokens", list, swhere, path)
                if not all(isinstance(t, str) for t in tokens):
                    raise DataError(f"{path}: {swhere}['tokens'] must be a list of strings")
                tokens = [t.lower() for t in tokens]
                raw = sentence.get("raw", " ".join(tokens))
            else:
                if not isinstance(sentence, dict) or "raw" not in sentence:
                    raise DataError(f"{path}: {swhere} has neither 'tokens' nor 'raw'")
                raw = _require(sentence, "raw", str, swhere, path)
                tokens = tokenize_caption(raw)
            captions.append(tokens)
            raws.append(str(raw))
        filepath = entry.get("filepath", "")
        images.append(
            CaptionImage(
                path=str(root / str(filepath) / filename),
                split="train" if split == "restval" else split,
                captions=captions,
                raw=raws,
                image_id=entry.get("imgid", entry.get("cocoid", i)),
            )
        )
    return images


def read_coco(annotation_json: str | Path, image_dir: str | Path | None, split: str) -> list[CaptionImage]:
    """COCO captions annotation file -> images (all in ``split``) with their tokenized captions.

    ``image_dir`` defaults to the annotation file's folder. Images without a caption are left out;
    an annotation for an image id that is not in ``images`` is an error.
    """
    _check_split(split)
    path = Path(annotation_json)
    root = Path(image_dir) if image_dir is not None else path.parent
    data = _load_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with 'images' and 'annotations' (COCO format)")
    entries = _require(data, "images", list, "the top level", path)
    annotations = _require(data, "annotations", list, "the top level", path)
    by_id: dict[Any, CaptionImage] = {}
    for i, entry in enumerate(entries):
        image_id = _require(entry, "id", (int, str), f"images[{i}]", path)
        file_name = _require(entry, "file_name", str, f"images[{i}]", path)
        by_id[image_id] = CaptionImage(str(root / file_name), split, [], [], image_id)
    for k, ann in enumerate(annotations):
        image_id = _require(ann, "image_id", (int, str), f"annotations[{k}]", path)
        caption = _require(ann, "caption", str, f"annotations[{k}]", path)
        if image_id not in by_id:
            raise DataError(f"{path}: annotations[{k}] names image_id {image_id!r}, which is not in 'images'")
        by_id[image_id].captions.append(tokenize_caption(caption))
        by_id[image_id].raw.append(caption.strip())
    return [image for image in by_id.values() if image.captions]


def read_tsv(path: str | Path, image_root: str | Path | None, split: str) -> list[CaptionImage]:
    """``image_path<TAB>caption`` lines -> images (in first-seen order), all in ``split``.

    Relative image paths are resolved against ``image_root`` (default: the TSV's folder). A line
    without exactly one tab, or with an empty path or caption, is an error naming the line.
    """
    _check_split(split)
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    images: dict[str, CaptionImage] = {}
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise DataError(
                f"{path}, line {number}: expected 'image_path<TAB>caption' (one tab, both non-empty), "
                f"found {len(parts) - 1} tabs: {line[:80]!r}"
            )
        image_path = str(root / parts[0].strip())
        image = images.setdefault(image_path, CaptionImage(image_path, split, [], [], parts[0].strip()))
        image.captions.append(tokenize_caption(parts[1]))
        image.raw.append(parts[1].strip())
    return list(images.values())


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def detect_format(source: str | Path) -> str:
    """'tsv' for ``.tsv``/``.txt``; for JSON, 'coco' when it has ``annotations``, else 'karpathy'."""
    path = Path(source)
    if path.suffix.lower() in (".tsv", ".txt"):
        return "tsv"
    if path.suffix.lower() != ".json":
        raise DataError(
            f"{path}: unknown caption file type {path.suffix!r}; expected a Karpathy JSON, a COCO "
            "annotation JSON (.json) or image_path<TAB>caption lines (.tsv)"
        )
    data = _load_json(path)
    if isinstance(data, dict) and "annotations" in data:
        return "coco"
    return "karpathy"


def read_source(
    source: str | Path, image_root: str | Path | None, split: str = "train"
) -> list[CaptionImage]:
    """Any supported file. A Karpathy JSON gives all its splits; COCO and TSV files give ``split``."""
    kind = detect_format(source)
    if kind == "karpathy":
        return read_karpathy(source, image_root)
    if kind == "coco":
        return read_coco(source, image_root, split)
    return read_tsv(source, image_root, split)


# ---------------------------------------------------------------------------------------------
# images


def load_rgb(path: str | Path) -> Image.Image:
    """Open and fully decode an image as RGB; ImageFileError naming the file if that fails."""
    path = Path(path)
    if not path.exists():
        raise ImageFileError(f"image not found: {path}")
    try:  # a directory or a non-image fails here, with the file named
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise ImageFileError(f"cannot read image {path}: {err}") from None


def check_image(path: str | Path) -> str | None:
    """Cheap check (existence + ``PIL.Image.verify``): None when fine, else what is wrong."""
    path = Path(path)
    if not path.is_file():
        return f"image not found: {path}"
    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as err:  # PIL raises many kinds here (SyntaxError for some corrupt PNGs)
        return f"cannot read image {path}: {err}"
    return None


# ---------------------------------------------------------------------------------------------
# datasets and batches


def _image_or_features(dataset, i: int) -> dict:
    """``{"features": row i}`` when the dataset has cached features, else ``{"image": tensor}``."""
    if dataset.features is not None:
        return {"features": dataset.features[i]}
    return {"image": dataset.transform(load_rgb(dataset.images[i].path))}


class CaptionTrainDataset(Dataset):
    """One item per (image, caption): ``{"image" (or "features", from the cache), "caption" (ids, no
    specials), "image_id", "path"}``."""

    def __init__(
        self,
        images: list[CaptionImage],
        ids: list[list[list[int]]],
        transform: Callable,
        features: Tensor | None = None,
    ):
        self.images, self.ids, self.transform, self.features = images, ids, transform, features
        self.pairs = [(i, k) for i, caps in enumerate(ids) for k in range(len(caps))]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, n: int) -> dict:
        i, k = self.pairs[n]
        image = self.images[i]
        return {
            **_image_or_features(self, i),
            "caption": self.ids[i][k],
            "image_id": image.image_id,
            "path": image.path,
        }


class CaptionEvalDataset(Dataset):
    """One item per image, with all its references (token lists, untruncated) for corpus BLEU;
    ``caption`` holds the ids of the first (truncated) caption, for a validation loss."""

    def __init__(
        self,
        images: list[CaptionImage],
        ids: list[list[list[int]]],
        transform: Callable,
        features: Tensor | None = None,
    ):
        self.images, self.ids, self.transform, self.features = images, ids, transform, features

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        image = self.images[i]
        return {
            **_image_or_features(self, i),
            "caption": self.ids[i][0],
            "references": [list(c) for c in image.captions],
            "image_id": image.image_id,
            "path": image.path,
        }


class _ImageDataset(Dataset):
    """Transformed images only, in order (what the feature extractor reads)."""

    def __init__(self, paths: list[str], transform: Callable):
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Tensor:
        return self.transform(load_rgb(self.paths[i]))


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


# ---------------------------------------------------------------------------------------------
# the datamodule


def default_transform(
    image_size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> Callable[[Image.Image], Tensor]:
    """Resize to (image_size, image_size), ToTensor, Normalize(mean, std) (torchvision, imported here);
    the captioning module passes its backbone's mean/std (`CaptionDataModule.use_normalization`)."""
    from torchvision import transforms as T

    return T.Compose([T.Resize((image_size, image_size)), T.ToTensor(), T.Normalize(tuple(mean), tuple(std))])


class CaptionDataModule(pl.LightningDataModule):
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
            the source file); see data/features.py.
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
        self.transform = transform
        self.eval_transform = eval_transform
        self._built = False
        self.images: dict[str, list[CaptionImage]] = {}
        self.ids: dict[str, list[list[list[int]]]] = {}
        self.truncated: dict[str, int] = {}
        self.skipped_images: dict[str, int] = {}
        self.empty_captions = 0
        self._checked: set[str] = set()
        self.features: dict[str, Tensor] = {}  # split -> (N, ...) cached CNN features
        self.normalization = (IMAGENET_MEAN, IMAGENET_STD)  # the default transform's; see use_normalization

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

    def use_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """The mean/std of the default transform: the backbone's (called by the captioning module
        before any image is read). A transform given to the constructor is used as it is."""
        self.normalization = (tuple(mean), tuple(std))

    def _transforms(self) -> tuple[Callable, Callable]:
        if self.transform is not None:
            train = self.transform
        else:
            train = default_transform(self.hparams.image_size, *self.normalization)
        evaluation = self.eval_transform if self.eval_transform is not None else train
        return train, evaluation

    def dataset(self, split: str) -> Dataset:
        """The (checked) dataset of ``split``: pairs for train, images with references otherwise."""
        self.build()
        if split not in self.images:
            raise DataError(f"{self.hparams.source}: no {split} split")
        self.check_images(split)
        train_tf, eval_tf = self._transforms()
        features = self.features.get(split)
        if split == "train":
            return CaptionTrainDataset(self.images[split], self.ids[split], train_tf, features)
        return CaptionEvalDataset(self.images[split], self.ids[split], eval_tf, features)

    # -- the feature cache -----------------------------------------------------------------------
    def use_features(
        self, extract: Callable[[DataLoader, str], Tensor], encoder: str, splits: Iterable[str]
    ) -> dict[str, bool]:
        """Serve cached CNN features instead of images for ``splits``: from the cache when its key
        (``encoder`` fingerprint, transform, image files) matches, else ``extract(loader, split)``
        -- (N, ...) features of the loader's images, in order -- computed once and stored.

        A split whose transform is random (augmentation) keeps images, with a warning. Returns
        {split: True for a cache hit, False for features just computed}.
        """
        self.build()
        cache = FeatureCache(self._cache_dir())
        train_tf, eval_tf = self._transforms()
        hits = {}
        for split in splits:
            if split not in self.images:
                continue
            self.check_images(split)
            images = self.images[split]
            transform = train_tf if split == "train" else eval_tf
            if not is_deterministic(transform, load_rgb(images[0].path)):
                rank_zero_warn(
                    f"[features] the {split} transform is random (augmentation): its features cannot be "
                    f"cached, so the CNN runs on every {split} batch"
                )
                continue
            key = cache_key([im.path for im in images], encoder, transform)

            def compute(split=split, transform=transform, images=images) -> Tensor:
                dataset = _ImageDataset([im.path for im in images], transform)
                loader = DataLoader(
                    dataset, batch_size=self.hparams.eval_batch_size, num_workers=self.hparams.num_workers
                )
                return extract(loader, split)

            self.features[split], hits[split] = cache.get(split, key, compute)
        return hits

    def _cache_dir(self) -> Path:
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
        generator = torch.Generator().manual_seed(hp.seed) if train else None
        return DataLoader(
            self.dataset(split), batch_size=hp.batch_size if train else hp.eval_batch_size,
            shuffle=train, generator=generator, collate_fn=collate_captions,
            num_workers=hp.num_workers, persistent_workers=hp.num_workers > 0,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
