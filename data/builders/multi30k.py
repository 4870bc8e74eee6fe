"""Multi30k (task 1, English-German) from the official repository or from files placed by hand.

Usage::

    python -m data.builders.multi30k --out data/multi30k                      # download (needs network)
    python -m data.builders.multi30k --out data/multi30k --from-dir ~/m30k    # files placed by hand
    python -m data.builders.multi30k --out data/multi30k --images ~/flickr30k-images   # also check images

Either way ``<out>`` receives ``train.en``/``train.de`` (29,000 pairs), ``dev.en``/``dev.de``
(the official ``val``, 1,014) and ``test.en``/``test.de`` (``test_2016_flickr``, 1,000), the
image of each pair in ``train_images.txt``, ``dev_images.txt`` and ``test_images.txt`` (one
Flickr30k file name a line, line i for pair i: the layout of data.datamodules.multimodal), plus
``stats.json``. Downloads go to ``<out>/raw/`` first (the image lists to ``raw/image_splits/``, as
in the official repository; kept, so a rerun with ``--from-dir <out>/raw`` needs no network).
``--from-dir`` takes the official file names, gzipped (``train.en.gz``) or already unpacked
(``train.en``), and the image lists (``train.txt``, ``val.txt``, ``test_2016_flickr.txt``) either
beside them or in an ``image_splits/`` subfolder; without them the corpus is text only (a warning
says so). The Flickr30k images themselves are not redistributable by the Multi30k authors: request
them from https://shannon.cs.illinois.edu/DenotationGraph/ and give the unpacked folder as
``--images DIR``, which checks that every listed image is there (naming the missing ones with
their list file and line) and records the folder in ``stats.json``.

Checks: a file whose SHA-256 is listed in :data:`SHA256` must match it. The official hashes were
not verified when this was written (no network here), so the table holds ``None`` and each file's
hash is printed, ready to be filled in after a download a user trusts. Line counts that differ
from the official ones (:data:`EXPECTED_LINES`) give a warning; a source and target file of
different lengths give an error naming both.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import os
import shutil
import sys
import zlib
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import urlopen

from data.core.corpus_io import (
    SPLITS,
    CorpusError,
    check_out_dir,
    decode_lines,
    read_lines,
    write_lines,
    write_parallel,
    write_stats,
)

BASE_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw"
IMAGE_SPLITS_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/image_splits"
IMAGE_SPLITS_DIR = "image_splits"  # the official repository's folder name, used under raw/ too
LANGS = ("en", "de")
# Our split name -> the official file stem.
OFFICIAL_STEMS = {"train": "train", "dev": "val", "test": "test_2016_flickr"}
EXPECTED_LINES = {"train": 29000, "dev": 1014, "test": 1000}
# SHA-256 of each official .gz file; None = not yet verified (filled on a first verified download).
SHA256: dict[str, str | None] = {
    f"{stem}.{lang}.gz": None for stem in OFFICIAL_STEMS.values() for lang in LANGS
}
TIMEOUT_S = 30


def official_files() -> list[str]:
    """The six official ``.gz`` file names, in split then language order."""
    return [f"{OFFICIAL_STEMS[split]}.{lang}.gz" for split in SPLITS for lang in LANGS]


def image_list_files() -> list[str]:
    """The three official image split lists, in split order (``train.txt``, ``val.txt``, ...)."""
    return [f"{OFFICIAL_STEMS[split]}.txt" for split in SPLITS]


def url_of(name: str) -> str:
    """Download address of one official file (a text file or an image split list)."""
    if name in image_list_files():
        return f"{IMAGE_SPLITS_URL}/{name}"
    return f"{BASE_URL}/{name}"


def raw_path(raw_dir: Path, name: str) -> Path:
    """Where a download of official file ``name`` goes: image lists in ``raw/image_splits/``."""
    return raw_dir / IMAGE_SPLITS_DIR / name if name in image_list_files() else raw_dir / name


def offline_message(raw_dir: Path, out: Path, reason: object) -> str:
    """What to do when the download fails: which files to fetch, from where, and where to put them."""
    names = official_files() + image_list_files()
    listing = "\n".join(f"  {name}  <-  {url_of(name)}" for name in names)
    return (
        f"cannot download Multi30k ({reason}): this machine seems to be offline, or the files moved.\n"
        f"Fetch these files on a machine with network access and place them in {raw_dir} "
        f"(or any folder; the three .txt image lists may also go in its {IMAGE_SPLITS_DIR}/ "
        f"subfolder):\n{listing}\n"
        f"then run: python -m data.builders.multi30k --out {out} --from-dir {raw_dir}"
    )


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(path: Path, name: str) -> str:
    """Compare ``path`` with the known SHA-256 of official file ``name`` (if known); return the hash."""
    actual = sha256_of(path)
    expected = SHA256.get(name)
    if expected is not None and actual != expected:
        raise CorpusError(
            f"{path} has SHA-256 {actual}, but the official {name} has {expected}; "
            f"the file is damaged or not the official one: fetch it again from {url_of(name)}"
        )
    return actual


def download_file(url: str, dest: Path) -> None:
    """Download ``url`` to ``dest`` through a temporary file, so a broken download leaves nothing."""
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urlopen(url, timeout=TIMEOUT_S) as response, open(tmp, "wb") as f:
            shutil.copyfileobj(response, f)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(dest)


def download_multi30k(raw_dir: Path, out: Path) -> None:
    """Download the six official text files and the three image lists into ``raw_dir``.

    Failure -> :class:`CorpusError` with the recipe. Files already in ``raw_dir`` are kept, so an
    interrupted download resumes file by file.
    """
    new_dirs = [d for d in (raw_dir.parent, raw_dir, raw_dir / IMAGE_SPLITS_DIR) if not d.exists()]
    for name in official_files() + image_list_files():
        dest = raw_path(raw_dir, name)
        if dest.exists():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        print(f"downloading {url_of(name)}", file=sys.stderr)
        try:
            download_file(url_of(name), dest)
        except (URLError, OSError, http.client.HTTPException) as err:
            for folder in reversed(new_dirs):  # leave no empty folders behind
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
            reason = getattr(err, "reason", err)
            if isinstance(err, HTTPError):
                reason = f"HTTP {err.code} for {err.url}"
            raise CorpusError(offline_message(raw_dir, out, reason)) from err


def find_official(from_dir: Path, stem: str, lang: str) -> Path:
    """The file for ``<stem>.<lang>`` in ``from_dir``: the ``.gz`` if present, else the plain file."""
    for name in (f"{stem}.{lang}.gz", f"{stem}.{lang}"):
        if (from_dir / name).is_file():
            return from_dir / name
    raise CorpusError(
        f"{from_dir} has no {stem}.{lang}.gz (or unpacked {stem}.{lang}); it needs all of "
        f"{', '.join(official_files())} (from {BASE_URL}/)"
    )


def read_official(path: Path) -> list[str]:
    """Lines of one official file, gunzipping ``.gz`` files; bad gzip or non-UTF-8 -> :class:`CorpusError`."""
    if path.suffix != ".gz":
        return read_lines(path)
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise CorpusError(f"{path} is not a readable gzip file ({err}); fetch it again") from err
    return decode_lines(data, path)


def load_split(from_dir: Path, split: str, hashes: dict[str, str]) -> tuple[list[str], list[str]]:
    """Read, check and return (English, German) lines of one split from ``from_dir``."""
    stem = OFFICIAL_STEMS[split]
    paths = [find_official(from_dir, stem, lang) for lang in LANGS]
    sides = []
    for path in paths:
        if path.suffix == ".gz":
            hashes[path.name] = verify_checksum(path, path.name)
        sides.append(read_official(path))
    if len(sides[0]) != len(sides[1]):
        raise CorpusError(
            f"{paths[0]} has {len(sides[0])} lines but {paths[1]} has {len(sides[1])}; "
            "they must be parallel line by line: replace them with matching official files"
        )
    if len(sides[0]) != EXPECTED_LINES[split]:
        print(
            f"warning: {paths[0].name} has {len(sides[0])} lines; the official {split} split has "
            f"{EXPECTED_LINES[split]}",
            file=sys.stderr,
        )
    return sides[0], sides[1]


def find_image_list(from_dir: Path, split: str) -> Path | None:
    """The official image list of ``split`` in ``from_dir`` or its ``image_splits/``; None if absent."""
    name = f"{OFFICIAL_STEMS[split]}.txt"
    for path in (from_dir / IMAGE_SPLITS_DIR / name, from_dir / name):
        if path.is_file():
            return path
    return None


def load_image_lists(from_dir: Path, pairs: dict[str, int], hashes: dict[str, str]) -> dict[str, list[str]]:
    """The image file names of every split (line i = pair i), checked against the pair counts.

    No list at all -> {} and a warning (a text-only corpus); some but not all -> :class:`CorpusError`.
    """
    paths = {split: find_image_list(from_dir, split) for split in SPLITS}
    if not any(paths.values()):
        print(
            f"warning: {from_dir} has no image split lists ({', '.join(image_list_files())}, beside "
            f"the text or in {IMAGE_SPLITS_DIR}/): the corpus is text only. For multimodal "
            f"translation fetch them from {IMAGE_SPLITS_URL}/ and run again",
            file=sys.stderr,
        )
        return {}
    missing = [f"{OFFICIAL_STEMS[split]}.txt" for split, path in paths.items() if path is None]
    if missing:
        raise CorpusError(
            f"{from_dir} has image lists for some splits but not {', '.join(missing)}; place all three "
            f"({', '.join(image_list_files())}, from {IMAGE_SPLITS_URL}/) or none"
        )
    lists = {}
    for split, path in paths.items():
        names = read_lines(path)
        text = find_official(from_dir, OFFICIAL_STEMS[split], LANGS[0])
        if len(names) != pairs[split]:
            raise CorpusError(
                f"{path} has {len(names)} lines but {text} has {pairs[split]}; the image list "
                "must name the image of each sentence pair, line by line: use the matching official files"
            )
        for number, name in enumerate(names, 1):
            if not name.strip():
                raise CorpusError(f"{path}, line {number}: empty image name; use the official list")
        hashes[f"{IMAGE_SPLITS_DIR}/{path.name}"] = sha256_of(path)
        lists[split] = [name.strip() for name in names]
    return lists


def check_images(image_dir: Path, lists: dict[str, list[str]], show: int = 10) -> None:
    """Every listed image must be a file in ``image_dir``; else name the first ``show`` missing."""
    if not image_dir.is_dir():
        raise CorpusError(f"--images {image_dir} is not a folder; give the unpacked Flickr30k image folder")
    present = {entry.name for entry in os.scandir(image_dir) if entry.is_file()}
    missing = [
        f"{OFFICIAL_STEMS[split]}.txt line {number}: {name}"
        for split, names in lists.items()
        for number, name in enumerate(names, 1)
        if name not in present
    ]
    if missing:
        shown = "\n  ".join(missing[:show])
        more = f"\n  ... and {len(missing) - show} more" if len(missing) > show else ""
        raise CorpusError(
            f"{len(missing)} listed images are not in {image_dir}:\n  {shown}{more}\n"
            "give the folder that holds the Flickr30k images (flickr30k-images/, about 31,800 .jpg files)"
        )


def build_multi30k(
    out: str | Path,
    from_dir: str | Path | None = None,
    force: bool = False,
    images: str | Path | None = None,
) -> dict:
    """Write ``<out>/{train,dev,test}.{en,de}``, ``{split}_images.txt`` and ``stats.json``.

    From ``from_dir``, or from a download into ``<out>/raw``. ``images``: a Flickr30k image folder
    that must hold every listed image (checked before anything is written).
    """
    out = Path(out)
    check_out_dir(out, force, ignore=("raw",))
    if from_dir is None:
        from_dir = out / "raw"
        download_multi30k(from_dir, out)
    from_dir = Path(from_dir)
    if not from_dir.is_dir():
        raise CorpusError(f"--from-dir {from_dir} is not a folder; point it at the Multi30k files")
    hashes: dict[str, str] = {}
    splits = {split: load_split(from_dir, split, hashes) for split in SPLITS}
    pairs = {split: len(en) for split, (en, _) in splits.items()}
    lists = load_image_lists(from_dir, pairs, hashes)
    if images is not None:
        if not lists:
            raise CorpusError(
                f"--images needs the image split lists, and {from_dir} has none: fetch "
                f"{', '.join(image_list_files())} from {IMAGE_SPLITS_URL}/"
            )
        check_images(Path(images), lists)
    for split, (en, de) in splits.items():
        write_parallel(out, split, en, de, *LANGS)
    for split in SPLITS:  # a text-only rebuild (--force) must not leave an older run's lists behind
        (out / f"{split}_images.txt").unlink(missing_ok=True)
    for split, names in lists.items():
        write_lines(out / f"{split}_images.txt", names)
    stats = {
        "source": str(from_dir),
        "pairs": pairs,
        "image_lists": bool(lists),
        "image_dir": str(Path(images).resolve()) if images is not None else None,
        "sha256": hashes,
    }
    write_stats(out, stats)
    return stats


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(
        prog="python -m data.builders.multi30k",
        description="Fetch Multi30k task 1 (en-de) into parallel files.",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--from-dir", type=Path, help="folder with the official files placed by hand")
    parser.add_argument(
        "--images", type=Path, help="Flickr30k image folder: check that it holds every listed image"
    )
    parser.add_argument("--force", action="store_true", help="overwrite corpus files in a non-empty --out")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: build the corpus and print its counts; user errors exit with a message."""
    args = parse_args(argv)
    try:
        stats = build_multi30k(args.out, from_dir=args.from_dir, force=args.force, images=args.images)
    except CorpusError as err:
        raise SystemExit(f"error: {err}") from None
    for name, digest in stats["sha256"].items():
        print(f"sha256 {name} {digest}")
    pairs = stats["pairs"]
    print(f"wrote {args.out}: train {pairs['train']}, dev {pairs['dev']}, test {pairs['test']} pairs (en-de)")
    if stats["image_dir"]:
        print(f"all listed images are in {stats['image_dir']}")
        print(f"train with: --data.init_args.image_dir {args.images}")
    elif stats["image_lists"]:
        print("image lists written ({split}_images.txt); give the Flickr30k folder with --images to check it")


if __name__ == "__main__":
    main()
