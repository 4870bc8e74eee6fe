"""Reading plain text for language modelling: lists of files, folders and globs; units of text.

Used by :class:`data.datamodules.text.TextDataModule` (and so by the prepared path, which reads
through it). Errors name the file, folder or pattern, and the data option it came from.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Literal

from data.core.parallel import DataError, read_lines

__all__ = ["Unit", "expand_files", "read_units"]

Unit = Literal["line", "paragraph"]


def expand_files(entries: list[str], option: str = "files") -> list[Path]:
    """Files, folders (their non-hidden files, sorted) and glob patterns -> distinct files, in order."""
    if isinstance(entries, str):
        entries = [entries]
    found: list[Path] = []
    seen: set[Path] = set()
    for entry in entries:
        path = Path(entry).expanduser()
        if path.is_dir():
            paths = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            if not paths:
                raise DataError(f"{path}: the folder holds no files (data.{option})")
        elif path.is_file():
            paths = [path]
        elif glob.has_magic(str(entry)):
            paths = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
            if not paths:
                raise DataError(f"{entry}: the pattern matches no files (data.{option})")
        else:
            raise DataError(f"{path}: no such file or folder (data.{option})")
        for p in paths:
            real = p.resolve()
            if real not in seen:
                seen.add(real)
                found.append(p)
    return found


def read_units(path: str | Path, unit: Unit = "line") -> list[str]:
    """A UTF-8 text file -> its units: non-empty lines, or paragraphs (blank-line separated),
    whitespace collapsed. Errors name the file (and the line for bad UTF-8)."""
    if unit not in ("line", "paragraph"):
        raise ValueError(f"unit must be 'line' or 'paragraph', got {unit!r}")
    lines = [" ".join(line.split()) for line in read_lines(path)]
    if unit == "line":
        return [line for line in lines if line]
    units, current = [], []
    for line in lines + [""]:
        if line:
            current.append(line)
        elif current:
            units.append(" ".join(current))
            current = []
    return units
