"""Flickr8k for image captioning: check a folder you downloaded, optionally convert the official text files.

Nothing is downloaded here (Flickr8k needs a request form and there is no network); you fetch the
files, unzip them into one folder ``DIR``, and this command checks that folder::

    python -m data.builders.flickr8k --check DIR

Where the files come from:

* Images and official captions (Hodosh, Young & Hockenmaier 2013): the University of Illinois request
  form, https://forms.illinois.edu/sec/1713398 (research use, under Flickr's terms), or the widely
  used mirrors https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_Dataset.zip
  (about 1 GB, unzips to ``Flicker8k_Dataset/``, spelled so) and
  https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_text.zip (unzips to
  ``Flickr8k.token.txt``, ``Flickr_8k.trainImages.txt``, ``Flickr_8k.devImages.txt``,
  ``Flickr_8k.testImages.txt`` and a few other files).
* Karpathy's tokenized splits (the usual choice in papers):
  https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip, which holds
  ``dataset_flickr8k.json`` (and the COCO and Flickr30k ones).

Expected layout of ``DIR`` (``data/corpora/flickr8k`` is where the config looks by default)::

    DIR/dataset_flickr8k.json          from caption_datasets.zip   (or name it with --json)
    DIR/Flicker8k_Dataset/*.jpg        from Flickr8k_Dataset.zip   (or name the folder with --images)
    DIR/Flickr8k.token.txt             from Flickr8k_text.zip: only needed without the Karpathy JSON;
    DIR/Flickr_8k.{train,dev,test}Images.txt    they may also lie in DIR/Flickr8k_text/

The check reads the Karpathy JSON (or, when there is none, the official token and split files),
prints images and captions per split (the full dataset: 6000/1000/1000 images, 5 captions each;
a difference is a warning, since a subset is fine), then opens every image (existence and
``PIL.Image.verify``) and lists the missing and unreadable ones. Exit status: 0 when every image is
present and readable, 1 when some are not, 2 when the folder or the caption files are missing or
bad (with a message naming the path and what to do).

``--write-json PATH`` writes a Karpathy-format JSON from the official text files (never over an
existing file), for when you have Flickr8k_text.zip but not caption_datasets.zip. Then train, from
the repository root::

    python -m captioning fit -c configs/captioning/flickr8k_showtell.yaml \\
        --data.init_args.source DIR/dataset_flickr8k.json \\
        --data.init_args.image_root DIR/Flicker8k_Dataset
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from data.core.caption_sources import SPLITS, CaptionImage, read_karpathy, tokenize_caption
from data.core.images import check_image
from data.core.parallel import DataError, read_lines

__all__ = [
    "KARPATHY_JSON",
    "IMAGES_DIR",
    "TOKEN_FILE",
    "SPLIT_FILES",
    "EXPECTED_IMAGES",
    "CAPTIONS_PER_IMAGE",
    "find_text_dir",
    "read_flickr8k_text",
    "karpathy_dict",
    "write_karpathy_json",
    "find_bad_images",
    "main",
]

KARPATHY_JSON = "dataset_flickr8k.json"
IMAGES_DIR = "Flicker8k_Dataset"  # (sic): the folder name inside the official Flickr8k_Dataset.zip
TEXT_DIR = "Flickr8k_text"  # where the text files land when the zip is unpacked into its own folder
TOKEN_FILE = "Flickr8k.token.txt"
SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "val": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
EXPECTED_IMAGES = {"train": 6000, "val": 1000, "test": 1000}
CAPTIONS_PER_IMAGE = 5
CONFIG = "configs/captioning/flickr8k_showtell.yaml"
SHOW_AT_MOST = 20  # problem files listed before "... and N more"

WHERE_TO_GET = (
    "Flickr8k_Dataset.zip and Flickr8k_text.zip from https://forms.illinois.edu/sec/1713398 or "
    "https://github.com/jbrownlee/Datasets/releases/tag/Flickr8k; caption_datasets.zip (with "
    f"{KARPATHY_JSON}) from https://cs.stanford.edu/people/karpathy/deepimagesent/"
)

HELP_EPILOG = f"""\
where the files come from (nothing is downloaded here):
  Flickr8k_Dataset.zip, Flickr8k_text.zip: the University of Illinois form
      https://forms.illinois.edu/sec/1713398, or the widely used mirrors at
      https://github.com/jbrownlee/Datasets/releases/tag/Flickr8k
  caption_datasets.zip (holds {KARPATHY_JSON}, Karpathy's splits):
      https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip

expected layout of DIR (unzip all three into it):
  DIR/{KARPATHY_JSON}         from caption_datasets.zip (or --json PATH)
  DIR/{IMAGES_DIR}/*.jpg       from Flickr8k_Dataset.zip (sic; or --images SUBDIR)
  DIR/{TOKEN_FILE}            from Flickr8k_text.zip; with the three split files
  DIR/{SPLIT_FILES["train"]}     only needed without the Karpathy JSON
  DIR/{SPLIT_FILES["val"]}       (--write-json converts them), also found
  DIR/{SPLIT_FILES["test"]}      in DIR/{TEXT_DIR}/

then train, from the repository root:
  python -m captioning fit -c {CONFIG} \\
      --data.init_args.source DIR/{KARPATHY_JSON} \\
      --data.init_args.image_root DIR/{IMAGES_DIR}
"""

# ---------------------------------------------------------------------------------------------
# the official text files


def find_text_dir(root: Path) -> Path | None:
    """``root`` or ``root/Flickr8k_text`` when it holds the token file and the three split files."""
    for folder in (root, root / TEXT_DIR):
        if all((folder / name).is_file() for name in (TOKEN_FILE, *SPLIT_FILES.values())):
            return folder
    return None


def _read_tokens(path: Path) -> dict[str, list[str]]:
    """``IMAGE.jpg#N<TAB>caption`` lines -> image name -> captions (file order)."""
    captions: dict[str, list[str]] = {}
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        key, tab, caption = line.partition("\t")
        name, hash_, _ = key.strip().rpartition("#")
        if not tab or not hash_ or not name or not caption.strip():
            raise DataError(
                f"{path}, line {number}: expected 'IMAGE.jpg#N<TAB>caption', found {line[:80]!r}; "
                f"take {TOKEN_FILE} unchanged from Flickr8k_text.zip"
            )
        captions.setdefault(name, []).append(caption.strip())
    return captions


def read_flickr8k_text(text_dir: str | Path, image_root: str | Path) -> list[CaptionImage]:
    """The official ``Flickr8k.token.txt`` + ``Flickr_8k.{train,dev,test}Images.txt`` -> images.

    Only images named in a split file are kept (the token file lists a few more), in split-file
    order; ``dev`` becomes ``val``. An image without captions in the token file is kept with none
    (the check warns). An image named in two split files is an error naming both.
    """
    text_dir, image_root = Path(text_dir), Path(image_root)
    captions = _read_tokens(text_dir / TOKEN_FILE)
    seen: dict[str, Path] = {}
    images = []
    for split, file_name in SPLIT_FILES.items():
        path = text_dir / file_name
        for name in (line.strip() for line in read_lines(path)):
            if not name:
                continue
            if name in seen:
                if seen[name] == path:
                    continue  # listed twice in one split file: once is enough
                raise DataError(f"{path}: {name} is also listed in {seen[name]}; an image has one split")
            seen[name] = path
            raws = captions.get(name, [])
            images.append(
                CaptionImage(
                    path=str(image_root / name),
                    split=split,
                    captions=[tokenize_caption(raw) for raw in raws],
                    raw=list(raws),
                    image_id=name,
                )
            )
    return images


def karpathy_dict(images: Sequence[CaptionImage]) -> dict:
    """Images -> a Karpathy-format ``dataset_flickr8k.json`` object (``filename``, ``imgid``,
    ``split``, ``sentids``, ``sentences[].tokens/raw/imgid/sentid``)."""
    entries, sentid = [], 0
    for imgid, image in enumerate(images):
        sentences = []
        for tokens, raw in zip(image.captions, image.raw):
            sentences.append({"tokens": tokens, "raw": raw, "imgid": imgid, "sentid": sentid})
            sentid += 1
        entries.append(
            {
                "filename": Path(image.path).name,
                "imgid": imgid,
                "split": image.split,
                "sentids": [s["sentid"] for s in sentences],
                "sentences": sentences,
            }
        )
    return {"images": entries, "dataset": "flickr8k"}


def write_karpathy_json(images: Sequence[CaptionImage], path: str | Path) -> Path:
    """Write :func:`karpathy_dict` to ``path``; never over an existing file."""
    path = Path(path)
    text = json.dumps(karpathy_dict(images), ensure_ascii=False)
    try:
        with open(path, "x", encoding="utf-8") as f:  # "x": fails rather than overwrite
            f.write(text)
    except FileExistsError:
        raise DataError(f"{path}: already exists; remove it or give --write-json another path") from None
    except FileNotFoundError:
        raise DataError(
            f"{path.parent}: no such folder; create it or give --write-json another path"
        ) from None
    return path


# ---------------------------------------------------------------------------------------------
# the check


def find_bad_images(images: Sequence[CaptionImage], progress: bool = True) -> tuple[list[str], list[str]]:
    """Check every image once (``check_image``): (missing paths, reasons for unreadable ones)."""
    missing, unreadable = [], []
    for image in tqdm(images, desc="images", unit="img", disable=None if progress else True):
        reason = check_image(image.path)
        if reason is None:
            continue
        if Path(image.path).is_file():
            unreadable.append(reason)
        else:
            missing.append(image.path)
    return missing, unreadable


def _listing(title: str, items: list[str]) -> list[str]:
    lines = [f"{title} ({len(items)}):"] + [f"  {item}" for item in items[:SHOW_AT_MOST]]
    if len(items) > SHOW_AT_MOST:
        lines.append(f"  ... and {len(items) - SHOW_AT_MOST} more")
    return lines


def count_report(images: Sequence[CaptionImage]) -> tuple[list[str], list[str]]:
    """(lines with images/captions per split, warnings where they differ from the full Flickr8k)."""
    lines, warnings = [], []
    for split in SPLITS:
        ims = [im for im in images if im.split == split]
        n_captions = sum(len(im.captions) for im in ims)
        lines.append(f"  {split:<5} {len(ims):>6} images {n_captions:>7} captions")
        if len(ims) != EXPECTED_IMAGES[split]:
            warnings.append(
                f"warning: {split} has {len(ims)} images; the full Flickr8k has {EXPECTED_IMAGES[split]} "
                "(fine if you meant a subset)"
            )
    odd = [im for im in images if len(im.captions) != CAPTIONS_PER_IMAGE]
    if odd:
        shown = ", ".join(f"{Path(im.path).name} ({len(im.captions)})" for im in odd[:5])
        more = f", ... and {len(odd) - 5} more" if len(odd) > 5 else ""
        empty = any(not im.captions for im in odd)
        left_out = "; images without captions are left out in training" if empty else ""
        warnings.append(
            f"warning: {len(odd)} images do not have {CAPTIONS_PER_IMAGE} captions: {shown}{more}{left_out}"
        )
    return lines, warnings


def _image_root(root: Path, images_dir: str) -> Path:
    image_root = root / images_dir
    if image_root.is_dir():
        return image_root
    hint = f"unzip Flickr8k_Dataset.zip into {root} (it makes {IMAGES_DIR}/)"
    if images_dir == IMAGES_DIR and (root / "Flickr8k_Dataset").is_dir():
        hint = f"found {root / 'Flickr8k_Dataset'}: pass --images Flickr8k_Dataset"
    elif any(root.glob("*.jpg")):
        hint = f"the .jpg files lie in {root} itself: pass --images ."
    raise DataError(f"{image_root}: no such image folder; {hint}, or name the folder with --images")


def _command(*words: str | Path) -> str:
    return " ".join(shlex.quote(str(w)) for w in words)


def check(
    root: str | Path,
    json_path: str | Path | None = None,
    images_dir: str = IMAGES_DIR,
    write_json: str | Path | None = None,
    progress: bool = True,
) -> int:
    """Check a Flickr8k folder and print the report; 0 when all images are fine, 1 when not.

    Problems with the folder or the caption files raise :class:`DataError` (``main`` exits 2).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; unzip the Flickr8k files into it ({WHERE_TO_GET})")
    if write_json is not None and Path(write_json).exists():
        raise DataError(f"{write_json}: already exists; remove it or give --write-json another path")
    image_root = _image_root(root, images_dir)
    text_dir = find_text_dir(root)
    karpathy = Path(json_path) if json_path is not None else root / KARPATHY_JSON
    text_names = ", ".join((TOKEN_FILE, *SPLIT_FILES.values()))

    if write_json is not None or (json_path is None and not karpathy.is_file()):
        if text_dir is None:
            need = "--write-json needs" if write_json is not None else f"no {karpathy}, and no"
            raise DataError(
                f"{root}: {need} the official text files ({text_names}) in it or in {root / TEXT_DIR}; "
                f"get {WHERE_TO_GET}"
            )
        images = read_flickr8k_text(text_dir, image_root)
        source_path = text_dir / TOKEN_FILE
        source = f"{source_path} + split files (official text files)"
    else:
        if not karpathy.is_file():
            raise DataError(
                f"{karpathy}: no such file; unzip caption_datasets.zip into {root} or name the JSON with "
                f"--json (get {WHERE_TO_GET})"
            )
        try:
            images = read_karpathy(karpathy, image_root)
        except DataError as err:
            raise DataError(
                f"{err} (expected Karpathy's {KARPATHY_JSON} from caption_datasets.zip)"
            ) from None
        source_path = karpathy
        source = f"{karpathy} (Karpathy JSON)"
    if not images:
        raise DataError(f"{source_path}: lists no images; is it the right file?")

    print(f"Flickr8k check of {root}")
    print(f"  captions: {source}")
    print(f"  images:   {image_root}")
    lines, warnings = count_report(images)
    print("\n".join(lines + warnings))
    if write_json is not None:
        written = write_karpathy_json(images, write_json)
        print(f"wrote {written} (Karpathy format, {len(images)} images)")
        karpathy = written

    missing, unreadable = find_bad_images(images, progress=progress)
    if missing:
        print("\n".join(_listing("missing images", missing)))
    if unreadable:
        print("\n".join(_listing("unreadable images", unreadable)))

    if write_json is None and not karpathy.is_file():  # only the text files: convert first
        convert = _command(
            "python", "-m", "data.builders.flickr8k", "--check", root, "--write-json", root / KARPATHY_JSON
        )
        print(f"to train, first convert the text files to a Karpathy JSON:\n  {convert}")
        karpathy = root / KARPATHY_JSON
    fit = _command(
        "python", "-m", "captioning", "fit", "-c", CONFIG,
        "--data.init_args.source", karpathy, "--data.init_args.image_root", image_root,
    )  # fmt: skip
    if missing or unreadable:
        print(
            f"FAILED: {len(missing)} missing and {len(unreadable)} unreadable of {len(images)} images; "
            f"restore them from Flickr8k_Dataset.zip, or train without them by adding "
            f"--data.init_args.skip_bad_images true to:\n  {fit}"
        )
        return 1
    print(f"OK: all {len(images)} images present and readable. Train (from the repository root):\n  {fit}")
    return 0


# ---------------------------------------------------------------------------------------------
# command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(
        prog="python -m data.builders.flickr8k",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Check a Flickr8k folder you downloaded (no download happens here): captions per split,\n"
            "missing and unreadable images. Exit status 0 when all images are fine, 1 when some are\n"
            "not, 2 when the folder or the caption files are missing or bad."
        ),
        epilog=HELP_EPILOG,
    )
    parser.add_argument("--check", required=True, type=Path, metavar="DIR", help="the Flickr8k folder")
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help=f"Karpathy's JSON, if not DIR/{KARPATHY_JSON}"
    )
    parser.add_argument(
        "--images",
        default=IMAGES_DIR,
        metavar="SUBDIR",
        help=f"image folder inside DIR (default {IMAGES_DIR})",
    )
    parser.add_argument(
        "--write-json",
        type=Path,
        metavar="PATH",
        help=f"write a Karpathy-format JSON from the official text files ({TOKEN_FILE} and the split "
        "files) to PATH; never overwrites",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: the exit status (0 all images fine, 1 some bad, 2 bad folder or captions)."""
    args = parse_args(argv)
    try:
        return check(args.check, args.json, args.images, args.write_json, progress=not args.no_progress)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
