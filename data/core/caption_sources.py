"""Caption sources: Karpathy JSON, COCO caption annotations or a TSV -> images with their captions.

Readers (all return ``list[CaptionImage]``, each image with its path, split, and captions as token
lists plus the raw strings):

* :func:`read_karpathy` -- Karpathy's ``dataset_{coco,flickr8k,flickr30k}.json`` (and
  ``data.builders.shapes``' ``dataset_shapes.json``): ``images[].filename``, optional ``filepath``,
  ``split`` in train/val/test/restval (``restval`` counts as ``train``), ``sentences[].tokens``
  (``raw`` when ``tokens`` is absent is tokenized with :func:`tokenize_caption`). Tokens are lowercased.
* :func:`read_coco` -- a COCO captions annotation file (``captions_train2014.json``):
  ``images[].id/file_name``, ``annotations[].image_id/caption``; every image gets the one split the
  caller names. Images without any caption are left out.
* :func:`read_tsv` -- ``image_path<TAB>caption`` a line, several lines per image allowed; blank lines
  are skipped; relative paths are resolved against ``image_root``.

:func:`read_source` reads any of them, the format found by :func:`detect_format`.

Raw captions are tokenized by :func:`tokenize_caption`, which needs no downloaded data: lowercase,
then words are runs of letters and digits (an inner apostrophe stays: ``man's``); punctuation is
dropped, as in Karpathy's tokenized splits. Checkpoints name it by :data:`TOKENIZER_NAME`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data.core.parallel import DataError, read_lines

__all__ = [
    "SPLITS",
    "TOKENIZER_NAME",
    "CaptionImage",
    "tokenize_caption",
    "read_karpathy",
    "read_coco",
    "read_tsv",
    "detect_format",
    "read_source",
]

SPLITS = ("train", "val", "test")
TOKENIZER_NAME = "caption-regex-lower"  # goes into vocab_state(); see tokenize_caption

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


@dataclass
class CaptionImage:
    """One image and its captions. ``captions[k]`` are the tokens of ``raw[k]``."""

    path: str
    split: str
    captions: list[list[str]]
    raw: list[str]
    image_id: int | str = ""


def tokenize_caption(text: str) -> list[str]:
    """Lowercase; words are runs of letters/digits (inner apostrophes kept); punctuation dropped.

    >>> tokenize_caption("A man's dog, jumping!  Over 2 logs.")
    ['a', "man's", 'dog', 'jumping', 'over', '2', 'logs']
    """
    return _WORD.findall(text.lower())


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


def _load_object(path: Path, expected: str) -> dict:
    """A JSON file that holds an object; DataError naming the file and what is ``expected`` if not."""
    data = _load_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with {expected}")
    return data


def _image_root(path: Path, image_root: str | Path | None) -> Path:
    """Where the image paths of ``path`` are relative to: ``image_root``, by default the file's folder."""
    return Path(image_root) if image_root is not None else path.parent


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
    root = _image_root(path, image_root)
    data = _load_object(path, "an 'images' list (Karpathy format)")
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
    root = _image_root(path, image_dir)
    data = _load_object(path, "'images' and 'annotations' (COCO format)")
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
    root = _image_root(path, image_root)
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
