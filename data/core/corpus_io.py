"""Small helpers shared by the corpus builders: output folders, parallel files, stable splits.

Every builder writes a folder of parallel text files, one sentence per line, UTF-8, ``\\n`` line
ends, line ``i`` of ``<split>.<src>`` translating line ``i`` of ``<split>.<tgt>``, plus a
``stats.json`` with the counts. Errors a user can cause are raised as :class:`CorpusError` with a
message that names the file or value and what to do; the CLIs turn it into ``SystemExit``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

SPLITS = ("train", "dev", "test")


class CorpusError(Exception):
    """A problem the user can fix (bad argument, missing or malformed file, occupied folder)."""


def check_out_dir(out: Path, force: bool, ignore: tuple[str, ...] = ()) -> None:
    """Refuse to write into an existing non-empty folder unless ``force`` is set.

    Entries named in ``ignore`` (e.g. a builder's own download cache) do not count as content.
    Nothing is created here, so a build that fails later on its input leaves no empty folder.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CorpusError(f"output path {out} exists and is not a folder; choose another --out")
    occupied = out.is_dir() and any(entry.name not in ignore for entry in out.iterdir())
    if occupied and not force:
        raise CorpusError(
            f"output folder {out} already exists and is not empty; choose another --out, or pass "
            "--force to overwrite the corpus files in it (other files there are left alone)"
        )


def write_lines(path: Path, lines: Sequence[str]) -> None:
    """Write ``lines`` to ``path``, one per line, UTF-8; refuse lines that contain a line break."""
    for i, line in enumerate(lines):
        if "\n" in line or "\r" in line:
            raise CorpusError(f"line {i + 1} for {path} contains a line break ({line!r}); fix the input")
    text = "".join(line + "\n" for line in lines)
    Path(path).write_text(text, encoding="utf-8", newline="\n")


def write_parallel(
    out: Path, split: str, src_lines: Sequence[str], tgt_lines: Sequence[str], src_ext: str, tgt_ext: str
) -> tuple[Path, Path]:
    """Write ``<out>/<split>.<src_ext>`` and ``<out>/<split>.<tgt_ext>``; returns the two paths."""
    if len(src_lines) != len(tgt_lines):
        raise ValueError(f"{split}: {len(src_lines)} source lines but {len(tgt_lines)} target lines")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    src_path, tgt_path = out / f"{split}.{src_ext}", out / f"{split}.{tgt_ext}"
    write_lines(src_path, src_lines)
    write_lines(tgt_path, tgt_lines)
    return src_path, tgt_path


def decode_lines(data: bytes, path: Path) -> list[str]:
    """Decode UTF-8 ``data`` (read from ``path``) into lines without their ``\\n``/``\\r\\n`` ends."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CorpusError(f"{path} is not UTF-8 text (byte {err.start}); convert it to UTF-8") from err
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_lines(path: Path) -> list[str]:
    """Read a UTF-8 text file into lines without their line ends (only ``\\n``/``\\r\\n`` split)."""
    return decode_lines(Path(path).read_bytes(), path)


def write_stats(out: Path, stats: dict) -> Path:
    """Write ``stats`` as ``<out>/stats.json`` (sorted keys, indented) and return its path."""
    path = Path(out) / "stats.json"
    path.write_text(json.dumps(stats, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def stable_fraction(text: str, salt: str = "") -> float:
    """Map ``text`` to a number in [0, 1) that is the same on every machine and Python version.

    The first 8 bytes of SHA-1 over ``salt + "\\0" + text`` (UTF-8), read as a big-endian integer and
    divided by 2**64. Python's ``hash()`` is salted per process, so it is not used.
    """
    digest = hashlib.sha1(f"{salt}\0{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(text: str, dev_fraction: float, test_fraction: float, salt: str = "") -> str:
    """Assign ``text`` to "test" (lowest ``test_fraction``), "dev" (next ``dev_fraction``) or "train"."""
    u = stable_fraction(text, salt)
    if u < test_fraction:
        return "test"
    if u < test_fraction + dev_fraction:
        return "dev"
    return "train"


def check_fractions(dev_fraction: float, test_fraction: float) -> None:
    """Both fractions in [0, 1) and leaving something for training, else :class:`CorpusError`."""
    for name, value in (("--dev-fraction", dev_fraction), ("--test-fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise CorpusError(f"{name} {value} is outside [0, 1); give a fraction such as 0.05")
    if dev_fraction + test_fraction >= 1.0:
        raise CorpusError(
            f"--dev-fraction {dev_fraction} + --test-fraction {test_fraction} leave nothing for training; "
            "make their sum less than 1"
        )
