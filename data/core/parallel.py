"""Reading parallel text: two line-aligned files (train.en + train.de) or one TSV (src<TAB>tgt).

Bad input gets an error that names the file and line: line counts that differ, bytes that are
not UTF-8, a TSV line without a tab. Pairs with an empty side are skipped and counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO


class DataError(ValueError):
    """A problem with the user's data files; the message says which file and line."""


@dataclass
class ParallelText:
    src: list[str]
    tgt: list[str]
    skipped_empty: int = 0
    origin: str = ""
    notes: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # the 0-based file line of each pair

    def subset(self, keep: list[int]) -> ParallelText:
        """The pairs at positions `keep`, in that order, with their file lines."""
        return ParallelText(
            [self.src[i] for i in keep], [self.tgt[i] for i in keep], self.skipped_empty, self.origin,
            list(self.notes), [self.lines[i] for i in keep],
        )  # fmt: skip

    def __len__(self) -> int:
        return len(self.src)


def decode_line(raw: bytes, origin: str, number: int) -> str:
    """One line's bytes -> its text without the line end; DataError naming origin and line if the
    bytes are not UTF-8."""
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{origin}, line {number}: not valid UTF-8 ({e.reason} at byte {e.start}); "
            "convert the file to UTF-8, e.g. with `iconv -f LATIN1 -t UTF-8`"
        ) from None


def iter_lines(stream: BinaryIO, origin: str) -> Iterator[str]:
    """The lines of a binary stream (a file opened "rb", sys.stdin.buffer), decoded one by one as
    they are read; a line that is not UTF-8 is a DataError naming origin (e.g. "<stdin>") and line."""
    for number, raw in enumerate(stream, start=1):
        yield decode_line(raw, origin, number)


def read_lines(path: str | Path) -> list[str]:
    """All lines of a UTF-8 text file without their line ends; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with open(path, "rb") as f:
        return list(iter_lines(f, str(path)))


def read_parallel(src_path: str | Path, tgt_path: str | Path) -> ParallelText:
    """Two line-aligned files; pairs where either side is empty are skipped and counted."""
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise DataError(
            f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}: parallel files must "
            "have one sentence per line, line by line translations of each other"
        )
    return _drop_empty(src, tgt, f"{src_path} + {tgt_path}")


def read_tsv(path: str | Path) -> ParallelText:
    """One `source<TAB>target` pair a line."""
    src, tgt = [], []
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            src.append("")
            tgt.append("")
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise DataError(
                f"{path}, line {number}: expected 'source<TAB>target', found {len(parts) - 1} tabs"
            )
        src.append(parts[0])
        tgt.append(parts[1])
    return _drop_empty(src, tgt, str(path))


def _drop_empty(src: list[str], tgt: list[str], origin: str) -> ParallelText:
    keep = [i for i, (s, t) in enumerate(zip(src, tgt)) if s.strip() and t.strip()]
    return ParallelText(
        [src[i].strip() for i in keep],
        [tgt[i].strip() for i in keep],
        skipped_empty=len(src) - len(keep),
        origin=origin,
        lines=keep,
    )


def split_files(data_dir: str | Path, split: str, src_lang: str, tgt_lang: str) -> list[Path]:
    """The files find_split reads for `split` (both sides, or the TSV); [] when there are none."""
    d = Path(data_dir)
    pair = [d / f"{split}.{src_lang}", d / f"{split}.{tgt_lang}"]
    if any(p.exists() for p in pair):
        return [p for p in pair if p.exists()]
    return [d / f"{split}.tsv"] if (d / f"{split}.tsv").exists() else []


def find_split(data_dir: str | Path, split: str, src_lang: str, tgt_lang: str) -> ParallelText | None:
    """`split.src_lang` + `split.tgt_lang`, or `split.tsv`, in data_dir; None when neither exists."""
    d = Path(data_dir)
    src, tgt, tsv = d / f"{split}.{src_lang}", d / f"{split}.{tgt_lang}", d / f"{split}.tsv"
    if src.exists() or tgt.exists():
        if not (src.exists() and tgt.exists()):
            missing = tgt if src.exists() else src
            raise DataError(f"{missing}: no such file (its parallel side exists)")
        return read_parallel(src, tgt)
    if tsv.exists():
        return read_tsv(tsv)
    return None
