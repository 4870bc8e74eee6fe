"""Prepared folders: keyed by what their contents depend on, written atomically, read memory-mapped.

What :mod:`data.prepared.parallel` (parallel text) and :mod:`data.prepared.text` (language-model text)
share. A prepared folder is ``<root>/<digest>/``, the digest a hash of its key: the folder format,
the tokenizer version (:data:`data.core.tokenizers.VERSION`), every data option the ids depend on
and each source file's path, size and modification time (:func:`make_key`). Change any of them
and a new folder is built beside the old one, as the feature cache does. A folder given directly
(a path holding a ``meta.json``) is used as it is, and a key that differs from the options is an
error naming what differs (:func:`open_prepared`). A folder is written into a hidden
``.<digest>.tmp-*`` folder renamed into place only when complete, ``meta.json`` last
(:func:`written_atomically`): an interrupted run leaves nothing a later run would trust. Local
rank 0 prepares, the other processes of the node wait for it (:func:`open_or_prepare`).

The arrays are plain ``.npy`` files opened with ``numpy.load(mmap_mode="r")`` (:func:`load_array`);
ragged data (a sentence's ids, its text) is flat values plus offsets (:class:`Ragged`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from data.core.parallel import DataError
from data.core.tokenizers import VERSION as TOKENIZER_VERSION

__all__ = [
    "FORMAT",
    "Ragged",
    "cores",
    "digest",
    "keyed_folder",
    "load_array",
    "make_key",
    "open_or_prepare",
    "open_prepared",
    "written_atomically",
]

FORMAT = 1


def make_key(kind: str, options: dict[str, Any], files: Iterable[str | Path]) -> dict[str, Any]:
    """What a prepared folder of `kind` depends on, as plain JSON: the format, the tokenizer
    version, the data `options` and each of `files` with its size and modification time."""
    stats = []
    for path in files:
        st = os.stat(path)
        stats.append([str(path), st.st_size, st.st_mtime_ns])
    return {
        "format": FORMAT,
        "kind": kind,
        "tokenizer_version": TOKENIZER_VERSION,
        "options": options,
        "files": stats,
    }


def digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def keyed_folder(root: str | Path, key: dict[str, Any]) -> tuple[Path, bool]:
    """``root/<digest of key>`` and whether it is prepared already (its meta.json is written last)."""
    folder = Path(root) / digest(key)
    return folder, (folder / "meta.json").is_file()


def key_differences(stored: dict, wanted: dict) -> list[str]:
    """Human-readable differences between two keys ("max_len: 50 in the folder, 100 asked for")."""
    out = []
    for name, what in (
        ("format", "in this code"),
        ("kind", "asked for"),
        ("tokenizer_version", "in this code"),
    ):
        if stored.get(name) != wanted.get(name):
            out.append(f"{name}: {stored.get(name)} in the folder, {wanted.get(name)} {what}")
    old, new = stored.get("options", {}), wanted.get("options", {})
    for name in sorted(set(old) | set(new)):
        if old.get(name) != new.get(name):
            out.append(f"{name}: {old.get(name)!r} in the folder, {new.get(name)!r} asked for")
    if wanted.get("files") and stored.get("files") != wanted.get("files"):
        were = {f[0]: f[1:] for f in stored.get("files", [])}
        for path, *stat in wanted["files"]:
            if were.get(path) != stat:
                out.append(f"{path}: changed since the folder was prepared (size or modification time)")
        out += [f"{p}: in the folder's key, not among the data files now" for p in were
                if p not in {f[0] for f in wanted["files"]}]  # fmt: skip
    return out


@contextmanager
def written_atomically(folder: Path) -> Iterator[Path]:
    """A hidden temporary folder beside `folder`, renamed to `folder` when the block completes
    (it must write meta.json last) and removed when it fails; a folder that another process
    completed first wins."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    # a name of its own (not just the pid: containers on other nodes of a shared disk repeat pids)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / "meta.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# -- reading ----------------------------------------------------------------------------------
def cores() -> int:
    """The cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def local_rank() -> int:
    """This process's rank on its node (torchrun / Lightning: LOCAL_RANK, SLURM: SLURM_LOCALID)."""
    return int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0")))


def load_array(folder: Path, name: str) -> np.ndarray:
    """``folder/name.npy`` memory-mapped; a missing or unreadable file is named with what to do."""
    try:
        return np.load(folder / f"{name}.npy", mmap_mode="r")
    except (OSError, ValueError) as error:
        raise DataError(
            f"{folder}: {name}.npy cannot be read ({error}); the folder is damaged or from another "
            "version of seqcap: delete it and prepare again"
        ) from None


class Ragged:
    """Item i of flat values + offsets, as a list of ints (ids) or a str (UTF-8 text)."""

    def __init__(self, values: np.ndarray, offsets: np.ndarray, indices: np.ndarray | None, text: bool):
        self.values, self.offsets, self.indices, self.text = values, offsets, indices, text

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.offsets) - 1

    def __getitem__(self, i: int | slice):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if not 0 <= i < len(self):
            raise IndexError(i)
        j = int(self.indices[i]) if self.indices is not None else i
        part = self.values[self.offsets[j] : self.offsets[j + 1]]
        return part.tobytes().decode("utf-8") if self.text else part.tolist()


def open_prepared(path: str | Path, key: dict[str, Any]) -> tuple[Path, dict] | None:
    """The prepared folder for `key`: `path` itself when it holds a meta.json (its key must match),
    else ``path/<digest>`` when it is there; None when it must still be prepared."""
    path = Path(path)
    if (path / "meta.json").is_file():
        folder = path
    else:
        folder, done = keyed_folder(path, key)
        if not done:
            return None
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError) as error:
        raise DataError(
            f"{folder / 'meta.json'}: cannot be read ({error}); delete {folder} and prepare again"
        ) from None
    differences = key_differences(meta.get("key", {}), key)
    if differences:
        raise DataError(
            f"{folder}: this prepared folder does not fit the data options:\n  " + "\n  ".join(differences)
            + f"\nSet data.prepared_dir to the folder above {folder.name} (a folder per set of options is "
            "kept there), or remove it and prepare again (python -m data.prepared.prepare)"
        )  # fmt: skip
    return folder, meta


def wait_for(path: str | Path, key: dict[str, Any], timeout_s: float = 6 * 3600) -> tuple[Path, dict]:
    """Another process (local rank 0) prepares the folder: wait for it."""
    deadline = time.monotonic() + timeout_s
    while (found := open_prepared(path, key)) is None:
        if time.monotonic() > deadline:
            raise DataError(f"{path}: waited {timeout_s:.0f} s for local rank 0 to prepare {digest(key)}")
        time.sleep(1.0)
    return found


def open_or_prepare(
    path: str | Path, key: dict[str, Any], prepare_here: Callable[[], Path]
) -> tuple[Path, dict]:
    """The prepared folder for `key` under `path`; when it is missing, local rank 0 runs
    `prepare_here` and every other process waits for it (preparation happens once a node)."""
    found = open_prepared(path, key)
    if found is None:
        if local_rank() == 0:
            prepare_here()
            found = open_prepared(path, key)
        else:
            found = wait_for(path, key)
    return found
