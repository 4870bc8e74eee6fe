"""Prepared language-model text: units tokenised and encoded once, then read memory-mapped.

The counterpart of :mod:`data.prepared.parallel` for :class:`data.datamodules.text.TextDataModule`.
``prepared_dir`` gets one folder per key, ``<prepared_dir>/<digest>/``:

    meta.json               format, key, vocabulary, tokenizer state, counts per split
    <split>.ids.npy         int32, the ids of every non-empty unit, concatenated
    <split>.offsets.npy     int64 (N + 1,): unit i is ids[offsets[i]:offsets[i + 1]]
    <split>.stream.npy      int32, ``<bos> u1 <eos> <bos> u2 <eos> ...`` (what truncated BPTT reads)

for the splits train, valid, test (those with text). The folder is keyed, written and opened as
:mod:`data.prepared.store` does it; the vocabulary and the units kept follow :mod:`data.core.rules`,
as on the raw-text path. :func:`prepare_text` takes any object with the methods of
:class:`TextSource`, which TextDataModule has; this module does not import it. The chunks of truncated
BPTT are sliced from the memory-mapped stream as they are needed (:class:`MappedStreamChunks`),
the same tensors as :func:`data.datamodules.text.batchify` + ``StreamChunks`` give, without a copy of the
whole stream in every process.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import IterableDataset

from data.core.resumable import StartAt
from data.core.rules import CorpusRules, kept_units
from data.core.tokenizers import Tokenizer
from data.core.vocab import BOS, EOS, PAD, UNK
from data.prepared.pool import count_tokens, tokenize_splits
from data.prepared.store import Ragged, cores, keyed_folder, load_array, make_key, written_atomically

__all__ = ["MappedStreamChunks", "TextSource", "load_units", "prepare_text", "text_key"]

KEY_OPTIONS = (
    "data_dir", "train_files", "val_files", "test_files", "files", "val_fraction", "test_fraction",
    "level", "unit", "word_tokenizer", "lowercase", "sp_vocab_size", "sp_model_type", "min_freq",
    "max_vocab_size", "seed",
)  # fmt: skip


class TextSource(Protocol):
    """What :func:`prepare_text` needs of a data module: TextDataModule's public methods
    (:mod:`data.datamodules.text`)."""

    hparams: Mapping[str, Any]  # KEY_OPTIONS among them
    origins: dict[str, str]  # split -> where its text came from (filled by read_texts)

    @property
    def rules(self) -> CorpusRules: ...

    def source_files(self) -> list[Path]: ...

    def read_texts(self) -> dict[str, list[str]]: ...

    def make_tokenizer(self, train: list[str]) -> Tokenizer: ...


def text_key(dm: TextSource) -> dict[str, Any]:
    """What the prepared ids of `dm` depend on, as plain JSON."""
    return make_key("text", {name: dm.hparams[name] for name in KEY_OPTIONS}, dm.source_files())


def _stream(ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Flat unit ids + offsets -> ``<bos> u1 <eos> <bos> u2 <eos> ...`` (int32)."""
    n = len(offsets) - 1
    stream = np.empty(len(ids) + 2 * n, dtype=np.int32)
    unit = np.repeat(np.arange(n), np.diff(offsets))
    stream[np.arange(len(ids)) + 2 * unit + 1] = ids
    stream[offsets[:-1] + 2 * np.arange(n)] = BOS
    stream[offsets[1:] + 2 * np.arange(n) + 1] = EOS
    return stream


def prepare_text(dm: TextSource, root: str | Path, workers: int | None = None, progress: bool = True) -> Path:
    """Tokenise and encode `dm`'s text into ``root/<digest>`` (nothing to do when it is there)."""
    key = text_key(dm)
    folder, done = keyed_folder(root, key)
    if done:
        return folder
    started = time.perf_counter()
    texts = dm.read_texts()
    tokenizer = dm.make_tokenizer(texts["train"])
    workers = workers or cores()
    parts = tokenize_splits(
        [tokenizer], {s: [u] for s, u in texts.items() if u}, workers, progress, unit="units"
    )
    vocab = dm.rules.vocabulary(count_tokens(parts["train"], 0))
    with written_atomically(folder) as tmp:
        counts = {}
        for split, chunks in parts.items():
            ids = [vocab.encode_array(tokens)[local] for tokens, local, _ in (c[0] for c in chunks)]
            lengths = np.concatenate([c[0][2] for c in chunks])
            ids = np.concatenate(ids) if ids else np.zeros(0, np.int32)
            lengths = lengths[kept_units(lengths)]  # a unit without tokens goes (its ids are none)
            offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
            np.save(tmp / f"{split}.ids.npy", ids)
            np.save(tmp / f"{split}.offsets.npy", offsets)
            np.save(tmp / f"{split}.stream.npy", _stream(ids, offsets))
            counts[split] = {"units": len(offsets) - 1, "tokens": len(ids), "unk": int((ids == UNK).sum())}
        meta = {
            "key": key,
            "vocab": vocab.to_list(),
            "tokenizer": tokenizer.state(),
            "counts": counts,
            "origins": {split: dm.origins[split] for split in parts},
            "seconds": round(time.perf_counter() - started, 2),
        }
        (tmp / "meta.json").write_text(json.dumps(meta))
    rank_zero_info(f"[data] prepared {folder}: {counts} in {meta['seconds']:.1f} s ({workers} processes)")
    return folder


def load_units(folder: Path, split: str) -> Ragged:
    """The units of ids of a prepared split, memory-mapped."""
    return Ragged(
        load_array(folder, f"{split}.ids"), load_array(folder, f"{split}.offsets"), None, text=False
    )


class MappedStreamChunks(StartAt, IterableDataset):
    """Truncated-BPTT chunks sliced from a memory-mapped stream: the rows `rows` of
    ``batchify(stream, streams)`` (row r is ``stream[r*N:(r+1)*N]``, N = (L - 1) // streams), k
    columns a chunk, exactly as ``StreamChunks`` yields them."""

    def __init__(self, stream: np.ndarray, streams: int, rows: range, k: int):
        if k < 1:
            raise ValueError(f"tbptt_steps must be >= 1, got {k}")
        self.stream, self.rows, self.k = stream, rows, k
        self.n = (len(stream) - 1) // streams
        if self.n < 1:
            raise ValueError(f"a stream of {len(stream)} tokens cannot be cut into {streams} streams")

    def __len__(self) -> int:
        return math.ceil(self.n / self.k)

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(i)
        a, b, n = i * self.k, min((i + 1) * self.k, self.n), self.n
        inputs = np.stack([self.stream[r * n + a : r * n + b] for r in self.rows]).astype(np.int64)
        targets = np.stack([self.stream[r * n + a + 1 : r * n + b + 1] for r in self.rows]).astype(np.int64)
        targets[targets == BOS] = PAD
        return {"input": torch.from_numpy(inputs), "target": torch.from_numpy(targets), "chunk": i}

    def __iter__(self):
        for i in range(self.take_start(), len(self)):  # a resumed loader starts part-way in
            yield self[i]
