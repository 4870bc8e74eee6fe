"""Prepared corpora: parallel text tokenised and encoded once, then read memory-mapped.

``python -m data.prepared.prepare`` (or the first run of a data module with ``prepared_dir``) writes

    <prepared_dir>/<digest>/
        meta.json                      format, key, vocabularies, tokenizer states, counts
        <split>.src.ids.npy            int32, every pair's source ids, concatenated
        <split>.src.offsets.npy        int64 (N + 1,): pair i is ids[offsets[i]:offsets[i + 1]]
        <split>.src.text.npy           uint8, the raw UTF-8 sentences, concatenated
        <split>.src.text_offsets.npy   int64 (N + 1,)
        <split>.tgt.*                  the same for the target side
        <split>.lines.npy              int64 (N,), the 0-based file line of each pair
        <split>.lengths.npy            int32 (N,), max(source, target) tokens + 1, for bucketing

for the splits train, dev and test (those that exist). Plain ``.npy`` files opened with
``numpy.load(mmap_mode="r")``: opening costs nothing whatever the corpus size, a pair is two
slices, and every process of a node reads the same pages from the OS page cache (fairseq's
indexed datasets are the same idea: flat ids plus offsets).

The digest is a hash of the key: the folder format, the tokenizer version
(:data:`data.core.tokenizers.VERSION`), every data option the ids depend on and each source file's
path, size and modification time. Change any of them and a new folder is built beside the old
one, as the feature cache does. A folder given directly (``prepared_dir`` pointing at a folder
with a ``meta.json``) is used as it is, and a key that differs from the options is an error
naming what differs. Preparation writes into a hidden ``.<digest>.tmp-*`` folder that is
renamed into place only when complete, ``meta.json`` last: an interrupted run leaves nothing a
later run would trust.

Tokenisation runs in a process pool over chunks of pairs: each worker tokenises and maps tokens to
ids of its own chunk-local vocabulary, the main process adds up the counts, builds the
vocabularies exactly as :meth:`data.core.vocab.Vocabulary.build` does, and maps local ids to the final
ones with one numpy lookup per chunk. The result is the same pairs, ids and order as the raw-text
path of :class:`data.datamodules.translation.ParallelTextDataModule` (tested batch for batch).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pytorch_lightning.utilities import rank_zero_info
from tqdm import tqdm

from data.core.parallel import DataError, ParallelText
from data.core.tokenizers import VERSION as TOKENIZER_VERSION
from data.core.tokenizers import Tokenizer, tokenizer_from_state
from data.core.vocab import BOS, EOS, PAD, UNK, Vocabulary

if TYPE_CHECKING:
    from data.datamodules.translation import ParallelTextDataModule

__all__ = [
    "FORMAT",
    "KEY_OPTIONS",
    "open_or_prepare",
    "open_split",
    "prepare",
    "prepared_key",
    "open_prepared",
]

FORMAT = 1
# the data options the ids depend on (batching options are not: the same folder serves them all)
KEY_OPTIONS = (
    "src_lang", "tgt_lang", "tokenizer", "word_tokenizer", "lowercase", "sp_vocab_size", "sp_model_type",
    "min_freq", "max_vocab_size", "max_len", "seed", "train_split", "dev_split", "test_split",
)  # fmt: skip
SPLITS = ("train", "dev", "test")
CHUNK = 5000  # pairs a worker tokenises at a time


def prepared_key(dm: ParallelTextDataModule) -> dict[str, Any]:
    """What the prepared ids of `dm` depend on, as plain JSON."""
    hp = dm.hparams
    files = []
    for name in SPLITS:
        for path in dm.split_files(getattr(hp, f"{name}_split")):
            st = os.stat(path)
            files.append([str(path), st.st_size, st.st_mtime_ns])
    return {
        "format": FORMAT,
        "kind": "parallel",
        "tokenizer_version": TOKENIZER_VERSION,
        "options": {name: hp[name] for name in KEY_OPTIONS},
        "files": files,
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


# -- workers ----------------------------------------------------------------------------------
_TOKENIZERS: list[Tokenizer] = []


def _init_worker(*states: dict) -> None:
    _TOKENIZERS[:] = [tokenizer_from_state(state) for state in states]


def _tokenize_chunk(chunk: tuple[list[str], ...]) -> list[tuple[list[str], np.ndarray, np.ndarray]]:
    """Lines of each side (source, target; or one side) -> per side: the chunk's distinct tokens,
    every token as an index into them (int32, flat), and the number of tokens of each line."""
    out = []
    for tokenizer, lines in zip(_TOKENIZERS, chunk):
        tokenize, local, ids = tokenizer.tokenize, {}, []
        lengths = np.empty(len(lines), dtype=np.int32)
        for i, line in enumerate(lines):
            tokens = tokenize(line)
            lengths[i] = len(tokens)
            ids.extend([local.setdefault(t, len(local)) for t in tokens])
        out.append((list(local), np.asarray(ids, dtype=np.int32), lengths))
    return out


def tokenize_splits(
    tokenizers: list[Tokenizer], splits: dict[str, list[list[str]]], workers: int, progress: bool, unit: str
) -> dict[str, list[list[tuple]]]:
    """{split: [lines of side 0, lines of side 1, ...]} -> {split: chunks of _tokenize_chunk's
    output}, in a pool of `workers` processes (none for 1), with a progress bar per split."""
    states = [t.state() for t in tokenizers]
    pool = None
    if workers > 1:  # fork where there is one: the workers need not import torch again
        context = get_context("fork") if sys.platform.startswith("linux") else get_context()
        pool = context.Pool(workers, _init_worker, states)
    else:
        _init_worker(*states)
    parts = {}
    try:
        for name, sides in splits.items():
            n = len(sides[0])
            chunks = [tuple(side[i : i + CHUNK] for side in sides) for i in range(0, n, CHUNK)]
            results = pool.imap(_tokenize_chunk, chunks) if pool is not None else map(_tokenize_chunk, chunks)
            bar = tqdm(total=n, desc=f"tokenising {name}", unit=unit, disable=None if progress else True)
            parts[name] = []
            for r in results:
                parts[name].append(r)
                bar.update(len(r[0][2]))
            bar.close()
    except BaseException:  # a failing worker or Ctrl-C: stop the others now
        if pool is not None:
            pool.terminate()
        raise
    if pool is not None:
        pool.close()
        pool.join()
    return parts


def count_tokens(chunks: list[list[tuple]], side: int, keep: np.ndarray | None = None) -> Counter:
    """Token counts of one side over the chunks (only lines where `keep` is true)."""
    counts: Counter[str] = Counter()
    start = 0
    for chunk in chunks:
        tokens, local, n = chunk[side]
        if keep is not None:
            local = local[np.repeat(keep[start : start + len(n)], n)]
        start += len(n)
        for token, c in zip(tokens, np.bincount(local, minlength=len(tokens)).tolist()):
            if c:
                counts[token] += c
    return counts


def _lookup(vocab: Vocabulary, tokens: list[str]) -> np.ndarray:
    """Chunk-local tokens -> final ids, as Vocabulary.encode maps them (special strings -> <unk>)."""
    ids = np.fromiter((vocab.stoi.get(t, UNK) for t in tokens), dtype=np.int32, count=len(tokens))
    ids[(ids == PAD) | (ids == BOS) | (ids == EOS)] = UNK
    return ids


# -- writing ----------------------------------------------------------------------------------
def _save_side(folder: Path, stem: str, ids: list[np.ndarray], lengths: np.ndarray, texts: list[str]) -> None:
    np.save(folder / f"{stem}.ids.npy", np.concatenate(ids) if ids else np.zeros(0, np.int32))
    np.save(folder / f"{stem}.offsets.npy", np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]))
    raw = [t.encode("utf-8") for t in texts]
    np.save(folder / f"{stem}.text.npy", np.frombuffer(b"".join(raw), dtype=np.uint8))
    sizes = np.fromiter(map(len, raw), dtype=np.int64, count=len(raw))
    np.save(folder / f"{stem}.text_offsets.npy", np.concatenate([[0], np.cumsum(sizes)]))


def _write_split(
    folder: Path, name: str, text: ParallelText, parts: list[dict], vocabs: dict, keep=None
) -> None:
    """One split's ids and text; `keep` (bool per pair) drops over-long training pairs."""
    longest = None
    for side, (stem, texts) in enumerate((("src", text.src), ("tgt", text.tgt))):
        ids, lengths = [], []
        start = 0
        for part in parts:
            tokens, local, n = part[side]
            n_pairs = len(n)
            if keep is not None:
                k = keep[start : start + n_pairs]
                local, n = local[np.repeat(k, n)], n[k]
            ids.append(_lookup(vocabs[side], tokens)[local])
            lengths.append(n)
            start += n_pairs
        kept_texts = texts if keep is None else [t for t, k in zip(texts, keep) if k]
        lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int32)  # an empty split
        _save_side(folder, f"{name}.{stem}", ids, lengths, kept_texts)
        longest = lengths if longest is None else np.maximum(longest, lengths)
    np.save(folder / f"{name}.lengths.npy", (longest + 1).astype(np.int32))  # what batches are bucketed by
    lines = np.asarray(text.lines, dtype=np.int64)
    np.save(folder / f"{name}.lines.npy", lines if keep is None else lines[keep])


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


def prepare(
    dm: ParallelTextDataModule, root: str | Path, workers: int | None = None, progress: bool = True
) -> Path:
    """Tokenise and encode `dm`'s corpus into ``root/<digest>`` (nothing to do when it is there)."""
    hp = dm.hparams
    key = prepared_key(dm)
    folder, done = keyed_folder(root, key)
    if done:
        return folder
    started = time.perf_counter()
    train = dm.read_train()
    src_tokenizer, tgt_tokenizer = dm._tokenizer(train.src), dm._tokenizer(train.tgt)
    workers = workers or cores()
    splits = {"train": train}
    for name in ("dev", "test"):
        text = dm._read(getattr(hp, f"{name}_split"))
        if text is not None:
            splits[name] = text
    parts = tokenize_splits(
        [src_tokenizer, tgt_tokenizer], {name: [t.src, t.tgt] for name, t in splits.items()},
        workers, progress, unit="pairs",
    )  # fmt: skip

    # keep the training pairs within max_len, count their tokens, build the vocabularies
    src_len = np.concatenate([p[0][2] for p in parts["train"]])
    tgt_len = np.concatenate([p[1][2] for p in parts["train"]])
    keep = np.maximum(src_len, tgt_len) <= hp.max_len
    if not keep.any():
        raise DataError(f"{train.origin}: every training pair is longer than max_len={hp.max_len}")
    limit = None if hp.tokenizer == "sentencepiece" else hp.max_vocab_size
    vocabs = [
        Vocabulary.from_counts(count_tokens(parts["train"], side, keep), hp.min_freq, limit)
        for side in (0, 1)
    ]

    with written_atomically(folder) as tmp:
        sizes = {}
        for name, text in splits.items():
            _write_split(tmp, name, text, parts[name], vocabs, keep if name == "train" else None)
            sizes[name] = int(keep.sum()) if name == "train" else len(text)
        meta = {
            "key": key,
            "src_vocab": vocabs[0].to_list(),
            "tgt_vocab": vocabs[1].to_list(),
            "src_tokenizer": src_tokenizer.state(),
            "tgt_tokenizer": tgt_tokenizer.state(),
            "pairs": sizes,
            "origins": {name: text.origin for name, text in splits.items()},
            "skipped_empty": {name: text.skipped_empty for name, text in splits.items()},
            "dropped_long": int((~keep).sum()),
            "seconds": round(time.perf_counter() - started, 2),
        }
        (tmp / "meta.json").write_text(json.dumps(meta))
    rank_zero_info(
        f"[data] prepared {folder}: {sizes} pairs in {meta['seconds']:.1f} s "
        f"({len(train) / max(meta['seconds'], 0.01):,.0f} training pairs/s, {workers} processes)"
    )
    return folder


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


class _Ragged:
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


class PreparedText:
    """The ParallelText view of a prepared split: src, tgt (sentences, read on access), lines."""

    def __init__(self, src: _Ragged, tgt: _Ragged, lines: np.ndarray, origin: str, skipped_empty: int):
        self.src, self.tgt, self.lines, self.origin, self.skipped_empty = (
            src,
            tgt,
            lines,
            origin,
            skipped_empty,
        )

    def __len__(self) -> int:
        return len(self.src)


def open_split(
    folder: str | Path, split: str, meta: dict, indices: list[int] | None = None
) -> tuple[_Ragged, _Ragged, PreparedText, np.ndarray]:
    """A prepared split, memory-mapped: source ids, target ids, the text view and the stored
    lengths, for :class:`data.datamodules.translation.PairDataset`; `indices` restricts it to those pairs
    (``val_size``), in that order."""
    folder = Path(folder)

    def load(name: str) -> np.ndarray:
        return load_array(folder, f"{split}.{name}")

    idx = np.asarray(indices, dtype=np.int64) if indices is not None else None

    def pick(values: np.ndarray) -> np.ndarray:
        return values if idx is None else values[idx]

    text = PreparedText(
        _Ragged(load("src.text"), load("src.text_offsets"), idx, text=True),
        _Ragged(load("tgt.text"), load("tgt.text_offsets"), idx, text=True),
        pick(load("lines")), meta["origins"][split], meta["skipped_empty"][split],
    )  # fmt: skip
    src = _Ragged(load("src.ids"), load("src.offsets"), idx, text=False)
    tgt = _Ragged(load("tgt.ids"), load("tgt.offsets"), idx, text=False)
    return src, tgt, text, pick(load("lengths"))


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
