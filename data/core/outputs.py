"""Output files that are never lost: checked before any work, written whole or not at all.

Every inference command (translate, evaluate, generate, caption, answer) writes its files through
this module:

- :func:`check_output` runs before any decoding and refuses, with an :class:`OutputError` that names
  the path and says what to do, an output that is a folder (or another non-regular file such as
  /dev/null), one that is the same file as an input (same device and inode, so a hard link or a
  symbolic link to the input counts), one whose folder does not exist, and one that exists
  already unless ``overwrite`` is set;
- :func:`atomic_output` (a text or binary file object) and :func:`atomic_path` (a temporary path, for
  writers that take a path, such as matplotlib's ``savefig``) write to a temporary file in the
  target's own folder, flush and fsync it, and ``os.replace`` it onto the target only when the
  ``with`` block ends without an error. An error part-way leaves an existing target as it was and
  no temporary file behind.

Nothing here imports seq2seq or captioning: the data, seq2seq and captioning commands all use it.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from data.core.parallel import DataError

__all__ = ["OutputError", "atomic_output", "atomic_path", "check_output", "same_file", "write_lines"]


class OutputError(DataError):
    """An output path that would lose something the user has; the message names it and what to do."""


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether a and b are one file (same st_dev and st_ino; links followed); False if either is missing."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def check_output(
    path: str | Path,
    *,
    overwrite: bool = False,
    inputs: Iterable[str | Path | None] = (),
    option: str = "--output",
    folder_may_be_new: bool = False,
) -> Path:
    """The output path, after refusing anything that would lose the user's data (OutputError).

    inputs: the files the command reads (None entries are ignored); an output that is one of them
    is refused even with overwrite. option: how the message names the path (e.g. "--output").
    folder_may_be_new: a missing folder is fine (the caller creates it before writing: plots)."""
    path = Path(path)
    where = f"{option} {path}" if option else str(path)
    if path.is_dir():
        raise OutputError(f"{where} is a folder; give the path of a file to write, e.g. {path / 'out.txt'}")
    for source in inputs:
        if source is not None and same_file(path, source):
            raise OutputError(
                f"{where} is the same file as the input {source}: writing it would destroy the input; "
                "choose another output path"
            )
    if path.exists() or path.is_symlink():
        try:
            mode = os.stat(path).st_mode
        except OSError:  # a dangling symbolic link
            mode = stat.S_IFREG
        if not stat.S_ISREG(mode):
            raise OutputError(f"{where} exists and is not a regular file; choose another output path")
        if not overwrite:
            raise OutputError(f"{where} exists; pass --overwrite to replace it, or choose another path")
    if not folder_may_be_new and not path.parent.is_dir():
        raise OutputError(f"{where}: the folder {path.parent} does not exist; create it first")
    return path


def _new_file_mode(path: Path) -> int:
    """The mode the replacement gets: the old file's, else what open() would give (0o666 & ~umask)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable where the platform allows it (best effort)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(
    path: str | Path,
    *,
    overwrite: bool = False,
    inputs: Iterable[str | Path | None] = (),
    option: str = "--output",
) -> Iterator[Path]:
    """A temporary path beside `path` (same suffix, so writers that infer the format from it work)
    to write in the ``with`` block; on success it is fsynced and replaces `path`, on an error it is
    removed and `path` stays as it was. check_output runs first (and again just before the replace,
    so a file that appeared meanwhile is not replaced without overwrite)."""
    inputs = tuple(inputs)
    path = check_output(path, overwrite=overwrite, inputs=inputs, option=option)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _new_file_mode(path))
        check_output(path, overwrite=overwrite, inputs=inputs, option=option)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_output(
    path: str | Path,
    *,
    overwrite: bool = False,
    inputs: Iterable[str | Path | None] = (),
    option: str = "--output",
    mode: str = "w",
    encoding: str | None = "utf-8",
    newline: str | None = "\n",
) -> Iterator[IO]:
    """An open file (text, UTF-8 with ``\\n`` line ends by default; mode="wb" for bytes) whose
    content replaces `path` only when the ``with`` block ends without an error (see atomic_path)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path, overwrite=overwrite, inputs=inputs, option=option) as tmp:
        if mode == "wb":
            f = open(tmp, "wb")
        else:
            f = open(tmp, "w", encoding=encoding, newline=newline)
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def write_lines(
    lines: Iterable[str], output: str | Path | None, *, overwrite: bool = False, inputs: Iterable = ()
) -> None:
    """A command's result lines: to `output` whole or not at all (atomic_output), or to stdout."""
    text = "".join(f"{line}\n" for line in lines)
    if output:
        with atomic_output(output, overwrite=overwrite, inputs=inputs) as f:
            f.write(text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
