"""Multi30k (task 1, English-German) from the official repository or from files placed by hand.

Usage::

    python -m data.multi30k --out data/multi30k                      # download (needs network)
    python -m data.multi30k --out data/multi30k --from-dir ~/m30k    # files placed by hand

Either way ``<out>`` receives ``train.en``/``train.de`` (29,000 pairs), ``dev.en``/``dev.de``
(the official ``val``, 1,014) and ``test.en``/``test.de`` (``test_2016_flickr``, 1,000), plus
``stats.json``. Downloads go to ``<out>/raw/`` first (kept, so a rerun with ``--from-dir
<out>/raw`` needs no network). ``--from-dir`` takes the official file names, gzipped
(``train.en.gz``) or already unpacked (``train.en``).

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
import shutil
import sys
import zlib
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import urlopen

from data.corpus_io import (
    SPLITS,
    CorpusError,
    check_out_dir,
    decode_lines,
    read_lines,
    write_parallel,
    write_stats,
)

BASE_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw"
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


def url_of(name: str) -> str:
    """Download address of one official file."""
    return f"{BASE_URL}/{name}"


def offline_message(raw_dir: Path, out: Path, reason: object) -> str:
    """What to do when the download fails: which files to fetch, from where, and where to put them."""
    listing = "\n".join(f"  {name}  <-  {url_of(name)}" for name in official_files())
    return (
        f"cannot download Multi30k ({reason}): this machine seems to be offline, or the files moved.\n"
        f"Fetch these files on a machine with network access and place them in {raw_dir} "
        f"(or any folder):\n{listing}\n"
        f"then run: python -m data.multi30k --out {out} --from-dir {raw_dir}"
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
    """Download the six official files into ``raw_dir``; failure -> :class:`CorpusError` with the recipe.

    Files already in ``raw_dir`` are kept, so an interrupted download resumes file by file.
    """
    new_dirs = [d for d in (raw_dir.parent, raw_dir) if not d.exists()]
    raw_dir.mkdir(parents=True, exist_ok=True)
    for name in official_files():
        dest = raw_dir / name
        if dest.exists():
            continue
        print(f"downloading {url_of(name)}", file=sys.stderr)
        try:
            download_file(url_of(name), dest)
        except (URLError, OSError, http.client.HTTPException) as err:
            for folder in reversed(new_dirs):  # leave no empty folders behind
                if not any(folder.iterdir()):
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


def build_multi30k(out: str | Path, from_dir: str | Path | None = None, force: bool = False) -> dict:
    """Write ``<out>/{train,dev,test}.{en,de}`` and ``stats.json`` from ``from_dir`` or a download."""
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
    for split, (en, de) in splits.items():
        write_parallel(out, split, en, de, *LANGS)
    stats = {
        "source": str(from_dir),
        "pairs": {split: len(en) for split, (en, _) in splits.items()},
        "sha256": hashes,
    }
    write_stats(out, stats)
    return stats


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(
        prog="python -m data.multi30k", description="Fetch Multi30k task 1 (en-de) into parallel files."
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--from-dir", type=Path, help="folder with the official files placed by hand")
    parser.add_argument("--force", action="store_true", help="overwrite corpus files in a non-empty --out")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: build the corpus and print its counts; user errors exit with a message."""
    args = parse_args(argv)
    try:
        stats = build_multi30k(args.out, from_dir=args.from_dir, force=args.force)
    except CorpusError as err:
        raise SystemExit(f"error: {err}") from None
    for name, digest in stats["sha256"].items():
        print(f"sha256 {name} {digest}")
    pairs = stats["pairs"]
    print(f"wrote {args.out}: train {pairs['train']}, dev {pairs['dev']}, test {pairs['test']} pairs (en-de)")


if __name__ == "__main__":
    main()
