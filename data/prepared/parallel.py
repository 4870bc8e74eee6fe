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
indexed datasets are the same idea: flat ids plus offsets). How the folder is keyed, written and
opened is :mod:`data.prepared.store`'s.

Tokenisation runs in a process pool over chunks of pairs (:mod:`data.prepared.pool`); the training
pairs kept and the vocabularies are decided by :func:`data.core.rules.training_pairs`, the function
the raw-text path of :class:`data.datamodules.translation.ParallelTextDataModule` calls too. The
result is the same pairs, ids and order as that path (tested batch for batch).

:func:`prepare` takes any object with the methods of :class:`ParallelSource`, which that data module
and its subclasses have; this module does not import them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pytorch_lightning.utilities import rank_zero_info

from data.core.parallel import ParallelText
from data.core.rules import CorpusRules, training_pairs
from data.core.tokenizers import Tokenizer
from data.core.vocab import Vocabulary
from data.prepared.pool import count_tokens, tokenize_splits
from data.prepared.store import Ragged, cores, keyed_folder, load_array, make_key, written_atomically

__all__ = ["KEY_OPTIONS", "ParallelSource", "PreparedText", "open_split", "prepare", "prepared_key"]

# the data options the ids depend on (batching options are not: the same folder serves them all)
KEY_OPTIONS = (
    "src_lang", "tgt_lang", "tokenizer", "word_tokenizer", "lowercase", "sp_vocab_size", "sp_model_type",
    "min_freq", "max_vocab_size", "max_len", "seed", "train_split", "dev_split", "test_split",
)  # fmt: skip
SPLITS = ("train", "dev", "test")


class ParallelSource(Protocol):
    """What :func:`prepare` needs of a data module: ParallelTextDataModule's public methods
    (:mod:`data.datamodules.translation`), which its subclasses keep."""

    hparams: Mapping[str, Any]  # KEY_OPTIONS among them

    @property
    def rules(self) -> CorpusRules: ...

    def split_files(self, split: str) -> list[Path]: ...

    def read_train(self) -> ParallelText: ...

    def read_split(self, split: str) -> ParallelText | None: ...

    def make_tokenizer(self, sentences: list[str]) -> Tokenizer: ...


def prepared_key(dm: ParallelSource) -> dict[str, Any]:
    """What the prepared ids of `dm` depend on, as plain JSON."""
    hp = dm.hparams
    files = [path for name in SPLITS for path in dm.split_files(hp[f"{name}_split"])]
    return make_key("parallel", {name: hp[name] for name in KEY_OPTIONS}, files)


# -- writing ----------------------------------------------------------------------------------
def _save_side(folder: Path, stem: str, ids: list[np.ndarray], lengths: np.ndarray, texts: list[str]) -> None:
    np.save(folder / f"{stem}.ids.npy", np.concatenate(ids) if ids else np.zeros(0, np.int32))
    np.save(folder / f"{stem}.offsets.npy", np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]))
    raw = [t.encode("utf-8") for t in texts]
    np.save(folder / f"{stem}.text.npy", np.frombuffer(b"".join(raw), dtype=np.uint8))
    sizes = np.fromiter(map(len, raw), dtype=np.int64, count=len(raw))
    np.save(folder / f"{stem}.text_offsets.npy", np.concatenate([[0], np.cumsum(sizes)]))


def _write_split(
    folder: Path, name: str, text: ParallelText, parts: list[list[tuple]], vocabs: list[Vocabulary], keep=None
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
            ids.append(vocabs[side].encode_array(tokens)[local])
            lengths.append(n)
            start += n_pairs
        kept_texts = texts if keep is None else [t for t, k in zip(texts, keep) if k]
        lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int32)  # an empty split
        _save_side(folder, f"{name}.{stem}", ids, lengths, kept_texts)
        longest = lengths if longest is None else np.maximum(longest, lengths)
    np.save(folder / f"{name}.lengths.npy", (longest + 1).astype(np.int32))  # what batches are bucketed by
    lines = np.asarray(text.lines, dtype=np.int64)
    np.save(folder / f"{name}.lines.npy", lines if keep is None else lines[keep])


def prepare(dm: ParallelSource, root: str | Path, workers: int | None = None, progress: bool = True) -> Path:
    """Tokenise and encode `dm`'s corpus into ``root/<digest>`` (nothing to do when it is there)."""
    hp = dm.hparams
    key = prepared_key(dm)
    folder, done = keyed_folder(root, key)
    if done:
        return folder
    started = time.perf_counter()
    train = dm.read_train()
    src_tokenizer, tgt_tokenizer = dm.make_tokenizer(train.src), dm.make_tokenizer(train.tgt)
    workers = workers or cores()
    splits = {"train": train}
    for name in ("dev", "test"):
        text = dm.read_split(hp[f"{name}_split"])
        if text is not None:
            splits[name] = text
    parts = tokenize_splits(
        [src_tokenizer, tgt_tokenizer], {name: [t.src, t.tgt] for name, t in splits.items()},
        workers, progress, unit="pairs",
    )  # fmt: skip
    chosen = training_pairs(
        dm.rules,
        np.concatenate([p[0][2] for p in parts["train"]]),
        np.concatenate([p[1][2] for p in parts["train"]]),
        lambda side, keep: count_tokens(parts["train"], side, keep),
        train.origin,
    )
    keep, vocabs = chosen.keep, [chosen.src_vocab, chosen.tgt_vocab]
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
            "dropped_long": chosen.dropped,
            "seconds": round(time.perf_counter() - started, 2),
        }
        (tmp / "meta.json").write_text(json.dumps(meta))
    rank_zero_info(
        f"[data] prepared {folder}: {sizes} pairs in {meta['seconds']:.1f} s "
        f"({len(train) / max(meta['seconds'], 0.01):,.0f} training pairs/s, {workers} processes)"
    )
    return folder


# -- reading ----------------------------------------------------------------------------------
class PreparedText:
    """The ParallelText view of a prepared split: src, tgt (sentences, read on access), lines."""

    def __init__(self, src: Ragged, tgt: Ragged, lines: np.ndarray, origin: str, skipped_empty: int):
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
) -> tuple[Ragged, Ragged, PreparedText, np.ndarray]:
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
        Ragged(load("src.text"), load("src.text_offsets"), idx, text=True),
        Ragged(load("tgt.text"), load("tgt.text_offsets"), idx, text=True),
        pick(load("lines")), meta["origins"][split], meta["skipped_empty"][split],
    )  # fmt: skip
    src = Ragged(load("src.ids"), load("src.offsets"), idx, text=False)
    tgt = Ragged(load("tgt.ids"), load("tgt.offsets"), idx, text=False)
    return src, tgt, text, pick(load("lengths"))
