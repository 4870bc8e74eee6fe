"""VQADataModule: questions about images (VQA v2 files, data/core/vqa.py) -> batches for a VQA model.

One split is ``<root>/<questions>``, ``<root>/<annotations>`` and the image map ``<root>/<images>``
(``{split}`` in each name becomes the split's file name, ``split_names``), as ``data.builders.shapes_vqa``
writes them. Real VQA v2 with COCO images placed by hand::

    root: vqa_v2
    questions: v2_OpenEnded_mscoco_{split}_questions.json
    annotations: v2_mscoco_{split}_annotations.json
    images: null
    image_dir: vqa_v2/{split}             # COCO_{split}_<12-digit id>.jpg inside
    image_pattern: COCO_{split}_{image_id:012d}.jpg
    split_names: {train: train2014, val: val2014, test: val2014}

What it builds from the training split only: the question vocabulary (lower-cased words,
``min_freq``) and the answer vocabulary, the ``max_answers`` most frequent ``multiple_choice_answer``
strings (normalised as the accuracy compares them, :func:`data.core.vqa.normalize_answer`). A training
question whose answer is not among them is left out of training (counted); validation and test keep
every question and score it against its ten answers.

Batches: ``question`` (B, T) long padded with PAD, ``lengths`` (B,), ``answer`` (B,) the answer
index (-100 when the answer is not in the vocabulary), ``features`` (B, R, F) cached CNN grid
features (after :meth:`use_features`) or ``images`` (B, 3, H, W), and the lists ``question_ids``,
``questions``, ``types``, ``answers`` (the ten), ``paths``.

Images are read once per split: every question of an image shares its row of the feature cache
(data/core/features.py; ``cache_dir``, default ``feature_cache/`` in ``root``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from data.core.epoch_shuffle import EpochShuffle, eval_sampler
from data.core.image_data import ImageData
from data.core.images import (
    ImageFileError,
    check_image,
    load_rgb,
)
from data.core.parallel import DataError
from data.core.resumable import make_loader
from data.core.vocab import Vocabulary
from data.core.vqa import (
    TOKENIZER_NAME,
    VQAItem,
    normalize_answer,
    pad_questions,
    read_vqa,
    tokenize_question,
)

__all__ = ["IGNORE", "TOKENIZER_NAME", "VQADataModule", "pad_questions", "tokenize_question"]

SPLITS = ("train", "val", "test")
IGNORE = -100  # the answer index of a question whose answer is not in the answer vocabulary


class VQADataset(Dataset):
    """One item per question; its image is row ``image_index`` of the split's images (or features)."""

    def __init__(
        self,
        items: list[VQAItem],
        ids: list[list[int]],
        answers: list[int],
        image_index: list[int],
        paths: list[str],
        transform: Callable[[Image.Image], Tensor],
        features: Tensor | None = None,
    ):
        self.items, self.ids, self.answers, self.image_index = items, ids, answers, image_index
        self.paths, self.transform, self.features = paths, transform, features

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        item, k = self.items[i], self.image_index[i]
        out = {"item": item, "ids": self.ids[i], "answer": self.answers[i]}
        if self.features is not None:
            out["features"] = self.features[k]
        else:
            out["image"] = self.transform(load_rgb(self.paths[k]))
        return out


def collate_questions(batch: list[dict]) -> dict:
    question, lengths = pad_questions([b["ids"] for b in batch])
    out = {
        "question": question,
        "lengths": lengths,
        "answer": torch.tensor([b["answer"] for b in batch]),
        "question_ids": [b["item"].question_id for b in batch],
        "questions": [b["item"].question for b in batch],
        "types": [b["item"].question_type for b in batch],
        "answers": [b["item"].answers for b in batch],
        "paths": [b["item"].image_path for b in batch],
    }
    if "features" in batch[0]:
        out["features"] = torch.stack([b["features"] for b in batch]).float()
    else:
        out["images"] = torch.stack([b["image"] for b in batch])
    return out


class VQADataModule(ImageData, pl.LightningDataModule):
    """Visual questions in the VQA v2 file format; see the module docstring.

    Args:
        root: the folder of the question, annotation and image-map files.
        questions / annotations / images: file names in ``root``, ``{split}`` replaced by the
            split's name (``split_names``); ``images: null`` finds images by ``image_pattern``.
        image_dir / image_pattern: the folder of the images (``{split}`` allowed) and their file
            name, ``str.format`` with ``image_id`` and ``split`` (real VQA v2 with COCO).
        split_names: the file name of each split, e.g. {test: val2014}; default the split itself.
        min_freq: question words seen fewer times in training become ``<unk>``.
        max_answers: K, the size of the answer vocabulary (the most frequent training answers).
        image_size: the side of the default transform's output (Resize, ToTensor, Normalize).
        cache_dir: where :meth:`use_features` keeps CNN features (default ``root/feature_cache``).
    """

    def __init__(
        self,
        root: str,
        questions: str = "{split}_questions.json",
        annotations: str = "{split}_annotations.json",
        images: str | None = "{split}_images.json",
        image_dir: str | None = None,
        image_pattern: str | None = None,
        split_names: dict[str, str] | None = None,
        min_freq: int = 1,
        max_answers: int = 1000,
        batch_size: int = 128,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        image_size: int = 224,
        seed: int = 0,
        cache_dir: str | None = None,
    ):
        super().__init__()
        if isinstance(max_answers, bool) or not isinstance(max_answers, int) or max_answers < 1:
            raise ValueError(f"max_answers must be an int >= 1, got {max_answers!r}")
        if (images is None) == (image_pattern is None):
            raise DataError(
                f"VQADataModule: images={images!r}, image_pattern={image_pattern!r}: give one, either "
                "images (a JSON map image_id -> path per split) or images: null with image_pattern"
            )
        if images is not None and image_dir is not None:
            raise DataError(
                f"VQADataModule: image_dir={image_dir!r} is read with image_pattern only, not with images"
            )
        unknown = sorted(set(split_names or {}) - set(SPLITS))
        if unknown:
            raise DataError(
                f"VQADataModule: split_names has {', '.join(unknown)}; its keys are {', '.join(SPLITS)}"
            )
        self.save_hyperparameters()
        self._built = False
        self.items: dict[str, list[VQAItem]] = {}
        self.paths: dict[str, list[str]] = {}  # split -> its distinct image files
        self.image_index: dict[str, list[int]] = {}  # split -> each question's row in paths
        self.features: dict[str, Tensor] = {}
        self.dropped = 0  # training questions whose answer is not among the K
        self._checked: set[str] = set()
        self.image_size = image_size

    # -- reading and the vocabularies ----------------------------------------------------------
    def _file(self, pattern: str, split: str) -> Path:
        name = (self.hparams.split_names or {}).get(split, split)
        return Path(self.hparams.root) / pattern.format(split=name)

    def _read(self, split: str) -> list[VQAItem] | None:
        hp = self.hparams
        questions = self._file(hp.questions, split)
        if not questions.is_file():
            return None
        name = (hp.split_names or {}).get(split, split)
        kwargs = {}
        if hp.images is not None:
            kwargs["images"] = self._file(hp.images, split)
        else:
            try:
                kwargs["image_dir"] = (hp.image_dir or hp.root).format(split=name)
                hp.image_pattern.format(image_id=0, split=name)
            except (KeyError, IndexError, ValueError) as error:
                raise DataError(
                    f"VQADataModule: image_dir {hp.image_dir!r} / image_pattern {hp.image_pattern!r}: "
                    f"{type(error).__name__} {error}; the fields are {{split}} and {{image_id}}"
                ) from None
            kwargs["image_pattern"] = hp.image_pattern.replace("{split}", name)
        return read_vqa(questions, self._file(hp.annotations, split), **kwargs)

    def build(self) -> None:
        if self._built:
            return
        hp = self.hparams
        for split in SPLITS:
            items = self._read(split)
            if items:
                self.items[split] = items
        if "train" not in self.items:
            raise DataError(f"{self._file(hp.questions, 'train')}: no training questions (no such file?)")
        train = self.items["train"]
        self.vocab = Vocabulary.build([tokenize_question(it.question) for it in train], hp.min_freq)
        counts = Counter(normalize_answer(it.answer) for it in train)
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: hp.max_answers]
        self.answers = [a for a, _ in ranked]
        answer_index = {a: k for k, a in enumerate(self.answers)}
        self.ids, self.targets = {}, {}
        for split, items in self.items.items():
            if split == "train":
                kept = [it for it in items if normalize_answer(it.answer) in answer_index]
                self.dropped = len(items) - len(kept)
                self.items[split] = items = kept
            self.ids[split] = [self.vocab.encode(tokenize_question(it.question)) for it in items]
            self.targets[split] = [answer_index.get(normalize_answer(it.answer), IGNORE) for it in items]
            rows: dict[str, int] = {}
            self.image_index[split] = [rows.setdefault(it.image_path, len(rows)) for it in items]
            self.paths[split] = list(rows)
        summary = ", ".join(
            f"{s}: {len(self.items[s])} questions / {len(self.paths[s])} images" for s in self.items
        )
        rank_zero_info(
            f"[data] {hp.root}: {summary}; question vocabulary {len(self.vocab)} (min_freq="
            f"{hp.min_freq}), {len(self.answers)} answers; {self.dropped} training questions "
            f"with an answer outside the {hp.max_answers} most frequent left out"
        )
        self._built = True

    @property
    def vocab_size(self) -> int:
        self.build()
        return len(self.vocab)

    @property
    def num_answers(self) -> int:
        self.build()
        return len(self.answers)

    def vocab_state(self) -> dict:
        """Everything inference needs besides the weights, as plain types."""
        self.build()
        return {
            "vocab": self.vocab.to_list(),
            "answers": list(self.answers),
            "tokenizer": TOKENIZER_NAME,
            "image_size": int(self.hparams.image_size),
        }

    # -- images ----------------------------------------------------------------------------------
    def check_images(self, split: str) -> None:
        """Every image of ``split`` exists and passes PIL's verify (once); else an error naming it."""
        if split in self._checked or split not in self.paths:
            return
        for path in self.paths[split]:
            problem = check_image(path)
            if problem is not None:
                raise ImageFileError(f"{problem} (an image of the {split} questions)")
        self._checked.add(split)

    def image_paths(self, split: str) -> list[str] | None:
        self.build()
        return self.paths.get(split)

    def feature_cache_dir(self) -> Path:
        if self.hparams.cache_dir is not None:
            return Path(self.hparams.cache_dir)
        return Path(self.hparams.root) / "feature_cache"

    # -- Lightning hooks -------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        self.build()
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in needed.get(stage or "", ()):
            if split not in self.items:
                where = self._file(self.hparams.questions, split)
                raise DataError(f"{where}: no {split} questions (needed for {stage})")
            self.check_images(split)

    def dataset(self, split: str) -> VQADataset:
        self.build()
        if split not in self.items:
            raise DataError(f"{self._file(self.hparams.questions, split)}: no {split} questions")
        return VQADataset(
            self.items[split], self.ids[split], self.targets[split], self.image_index[split],
            self.paths[split], self.transform(), self.features.get(split),
        )  # fmt: skip

    def _loader(self, split: str) -> DataLoader:
        hp = self.hparams
        train = split == "train"
        dataset = self.dataset(split)
        return make_loader(
            dataset, train=train, seed=hp.seed, batch_size=hp.batch_size if train else hp.eval_batch_size,
            sampler=EpochShuffle(len(dataset), hp.seed) if train else eval_sampler(dataset),
            collate_fn=collate_questions, num_workers=hp.num_workers,
            persistent_workers=hp.num_workers > 0,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
