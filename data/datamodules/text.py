"""TextDataModule: plain text files -> token streams for language modelling (truncated BPTT).

Where the text comes from (exactly one of):

- ``data_dir``: ``train.txt``, ``valid.txt`` (or ``dev.txt``) and ``test.txt`` (optional) in it.
- ``train_files`` + ``val_files`` (+ ``test_files``): explicit lists.
- ``files`` + ``val_fraction`` + ``test_fraction``: one pool split by a deterministic rule: each
  unit (line or paragraph, see below) goes to test when the SHA-1 of its text maps below
  ``test_fraction``, to valid when below ``test_fraction + val_fraction``, else to train
  (:func:`data.core.corpus_io.split_of`). The split is the same on every machine, independent of the
  order of the files, and identical units (licences share whole paragraphs) land in one split.

Every entry of a file list may be a file, a folder (its non-hidden files, sorted; not recursive)
or a glob pattern; files reached twice (symlinks such as ``GPL -> GPL-3``) are read once.

Units: ``unit="line"`` makes every non-empty line a unit (one sentence a line, as in PTB);
``unit="paragraph"`` joins consecutive non-empty lines, so a blank line ends a unit (for
hard-wrapped prose such as the licence texts in ``/usr/share/common-licenses``). Whitespace runs
inside a unit become one space. Each unit is encoded as ``<bos> tokens <eos>``.

Levels: ``word`` (:class:`data.core.tokenizers.WordTokenizer`), ``char``
(:class:`data.core.tokenizers.CharTokenizer`: every character, the space included, is a token) or
``sentencepiece`` (trained on train only); :func:`data.core.tokenizers.tokenizer_from_state` restores
any of them from ``vocab_state()["tokenizer"]``.
The vocabulary is built from train only (``min_freq``, ``max_vocab_size``); rarer words are
``<unk>``; a unit that tokenises to nothing is dropped (:mod:`data.core.rules`, which the prepared
path, :mod:`data.prepared.text`, follows too; it reads the text through ``read_texts``,
``make_tokenizer``, ``rules`` and ``source_files``). Files are read by :mod:`data.core.text_files`.

Batches. With ``tbptt_steps = k`` (truncated BPTT) each split is one token stream, the units
concatenated, cut into ``batch_size`` parallel streams of N columns (:func:`batchify`):
``inputs[b] = stream[b*N : (b+1)*N]`` and ``targets[b] = stream[b*N+1 : (b+1)*N+1]``, so every
token after the first is a target exactly once (the last ``(L-1) mod B`` tokens are dropped).
A target ``<bos>`` (which always follows ``<eos>``) is replaced by ``<pad>`` and not scored, so
perplexity counts the words and ``<eos>`` of each unit, as is usual. Batch i is
``{"input": inputs[:, i*k:(i+1)*k], "target": targets[:, i*k:(i+1)*k], "chunk": i}``; the
loader yields the chunks in order (never shuffled): the model carries its state from one chunk
to the next (see :class:`seq2seq.lm.module.LanguageModule`). With ``tbptt_steps = None`` (full BPTT)
batches are padded units instead: ``input = <bos> w``, ``target = w <eos>``, with ``lengths``,
shuffled by length bucket for training; no state carries between batches. Under DDP each process
takes ``batch_size`` streams of its own (the stream is cut into ``batch_size * world_size``).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset

from data.core.batching import BucketBatchSampler
from data.core.corpus_io import split_of
from data.core.parallel import DataError
from data.core.resumable import StartAt, make_loader
from data.core.rules import CorpusRules, kept_units, token_counts
from data.core.text_files import Unit, expand_files, read_units
from data.core.tokenizers import Tokenizer, build_tokenizer, tokenizer_from_state
from data.core.vocab import BOS, EOS, PAD, UNK, Vocabulary
from data.prepared.store import load_array, open_or_prepare
from data.prepared.text import MappedStreamChunks, load_units, prepare_text, text_key

__all__ = [
    "TextDataModule",
    "batchify",
    "expand_files",
    "read_units",
]

# The chunks come from an IterableDataset with a __len__ (for progress bars), read in the main
# process: Lightning's warning about worker processes duplicating its data does not apply.
warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")

Level = Literal["word", "char", "sentencepiece"]
SPLITS = ("train", "valid", "test")


# -- stream layout -----------------------------------------------------------------------------
def encode_stream(units: list[list[int]]) -> Tensor:
    """Units of token ids -> one stream ``<bos> u1 <eos> <bos> u2 <eos> ...`` (L,) long."""
    ids: list[int] = []
    for u in units:
        ids.append(BOS)
        ids.extend(u)
        ids.append(EOS)
    return torch.tensor(ids, dtype=torch.long)


def batchify(stream: Tensor, streams: int) -> tuple[Tensor, Tensor]:
    """stream (L,) -> inputs (B, N), targets (B, N) with N = (L - 1) // B:
    ``inputs[b] = stream[b*N:(b+1)*N]``, ``targets[b] = stream[b*N+1:(b+1)*N+1]``; a target
    ``<bos>`` (always after ``<eos>``, nothing to predict) becomes ``<pad>``, which is not scored."""
    if streams < 1:
        raise ValueError(f"need at least one stream, got {streams}")
    n = (len(stream) - 1) // streams
    if n < 1:
        raise ValueError(f"a stream of {len(stream)} tokens cannot be cut into {streams} streams")
    inputs = stream[: streams * n].view(streams, n).clone()
    targets = stream[1 : streams * n + 1].view(streams, n).clone()
    targets[targets == BOS] = PAD
    return inputs, targets


class StreamChunks(StartAt, IterableDataset):
    """Chunks of k columns of (B, N) inputs/targets, in order: batch i holds columns [i*k, (i+1)*k)."""

    def __init__(self, inputs: Tensor, targets: Tensor, k: int):
        if k < 1:
            raise ValueError(f"tbptt_steps must be >= 1, got {k}")
        self.inputs, self.targets, self.k = inputs, targets, k

    def __len__(self) -> int:
        return math.ceil(self.inputs.shape[1] / self.k)

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(i)
        cols = slice(i * self.k, (i + 1) * self.k)
        return {"input": self.inputs[:, cols], "target": self.targets[:, cols], "chunk": i}

    def __iter__(self):
        for i in range(self.take_start(), len(self)):  # a resumed loader starts part-way in
            yield self[i]


class UnitDataset(Dataset):
    def __init__(self, units: list[list[int]]):
        self.units = units

    def __len__(self) -> int:
        return len(self.units)

    def __getitem__(self, i: int) -> list[int]:
        return self.units[i]


def collate_units(units: list[list[int]]) -> dict:
    """Units (no specials) -> input (B, T) = <bos> w, target (B, T) = w <eos>, lengths (B,)."""
    B, T = len(units), max(len(u) for u in units) + 1
    inputs = torch.full((B, T), PAD, dtype=torch.long)
    targets = torch.full((B, T), PAD, dtype=torch.long)
    for b, u in enumerate(units):
        inputs[b, : len(u) + 1] = torch.tensor([BOS] + u, dtype=torch.long)
        targets[b, : len(u) + 1] = torch.tensor(u + [EOS], dtype=torch.long)
    return {"input": inputs, "target": targets, "lengths": torch.tensor([len(u) + 1 for u in units])}


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


# -- the datamodule ------------------------------------------------------------------------------
class TextDataModule(pl.LightningDataModule):
    def __init__(
        self,
        data_dir: str | None = None,
        train_files: list[str] | None = None,
        val_files: list[str] | None = None,
        test_files: list[str] | None = None,
        files: list[str] | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        level: Level = "word",
        unit: Unit = "line",
        word_tokenizer: Literal["toktok", "treebank", "wordpunct", "space"] = "toktok",
        lowercase: bool = False,
        sp_vocab_size: int = 4000,
        sp_model_type: Literal["bpe", "unigram"] = "bpe",
        min_freq: int = 1,
        max_vocab_size: int | None = None,
        batch_size: int = 20,
        eval_batch_size: int | None = None,
        tbptt_steps: int | None = 35,
        seed: int = 0,
        prepared_dir: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self._built = False
        self.prepared: Path | None = None  # the prepared folder in use (data.prepared.text)
        self.streams: dict[str, np.ndarray] = {}
        self.units: dict[str, list[list[int]]] = {}
        self.origins: dict[str, str] = {}

    # -- text -> units of ids (built once, on first use) ---------------------------------------
    def check(self) -> None:
        """The options make sense together, else :class:`DataError` (checked on first use, not
        in ``__init__``, so LightningCLI shows the message rather than a wrapped traceback)."""
        hp = self.hparams
        given = (("data_dir", hp.data_dir), ("train_files", hp.train_files), ("files", hp.files))
        sources = [name for name, value in given if value]
        if len(sources) != 1:
            raise DataError(
                "give exactly one of data.data_dir (train.txt, valid.txt, test.txt), "
                "data.train_files (+ val_files, test_files) or data.files (+ val_fraction, "
                f"test_fraction); got {sources or 'none'} (set the others to null, e.g. "
                "--data.init_args.files null)"
            )
        if not hp.train_files and (hp.val_files or hp.test_files):
            raise DataError("data.val_files and data.test_files go with data.train_files")
        if hp.level not in ("word", "char", "sentencepiece"):
            raise DataError(f"data.level must be 'word', 'char' or 'sentencepiece', got {hp.level!r}")
        if hp.unit not in ("line", "paragraph"):
            raise DataError(f"data.unit must be 'line' or 'paragraph', got {hp.unit!r}")
        for name, value in (("val_fraction", hp.val_fraction), ("test_fraction", hp.test_fraction)):
            if not 0.0 <= value < 1.0:
                raise DataError(f"data.{name} must be in [0, 1), got {value}")
        if hp.val_fraction + hp.test_fraction >= 1.0:
            raise DataError("data.val_fraction + data.test_fraction must leave something for training")
        if hp.batch_size < 1 or (hp.eval_batch_size is not None and hp.eval_batch_size < 1):
            raise DataError(f"batch sizes must be >= 1, got {hp.batch_size}, {hp.eval_batch_size}")
        if hp.tbptt_steps is not None and hp.tbptt_steps < 1:
            raise DataError(f"data.tbptt_steps must be >= 1 or null (full BPTT), got {hp.tbptt_steps}")

    # -- what the raw and the prepared path (data.prepared.text) both use -----------------------
    def read_texts(self) -> dict[str, list[str]]:
        """The units of text of each split (train, valid, test: those given); fills ``origins``."""
        hp = self.hparams
        texts: dict[str, list[str]] = {}
        if hp.data_dir:
            root = Path(hp.data_dir).expanduser()
            if not root.is_dir():
                raise DataError(f"{root}: no such data directory (data.data_dir)")
            names = {"train": ["train.txt"], "valid": ["valid.txt", "dev.txt"], "test": ["test.txt"]}
            for split, candidates in names.items():
                for name in candidates:
                    if (root / name).is_file():
                        texts[split] = read_units(root / name, hp.unit)
                        self.origins[split] = str(root / name)
                        break
            if "train" not in texts:
                raise DataError(f"{root}: no train.txt (data.data_dir)")
        elif hp.train_files:
            for split, entries, option in (("train", hp.train_files, "train_files"),
                                           ("valid", hp.val_files, "val_files"),
                                           ("test", hp.test_files, "test_files")):  # fmt: skip
                if entries:
                    paths = expand_files(entries, option)
                    texts[split] = [u for p in paths for u in read_units(p, hp.unit)]
                    self.origins[split] = f"{len(paths)} file(s) of data.{option}"
        else:
            paths = expand_files(hp.files, "files")
            texts = {split: [] for split in SPLITS}
            for p in paths:
                for u in read_units(p, hp.unit):
                    split = split_of(u, hp.val_fraction, hp.test_fraction)
                    texts["valid" if split == "dev" else split].append(u)
            for split in SPLITS:
                self.origins[split] = f"{split} part of {len(paths)} file(s) of data.files"
        if not texts.get("train"):
            raise DataError(f"{self.origins.get('train', 'the training data')}: no text to train on")
        return texts

    def source_files(self) -> list[Path]:
        """The files the text is read from (for a prepared folder's key)."""
        hp = self.hparams
        if hp.data_dir:
            root = Path(hp.data_dir).expanduser()
            names = ["train.txt", "valid.txt", "dev.txt", "test.txt"]
            return [root / name for name in names if (root / name).is_file()]
        entries = (
            [(hp.train_files, "train_files"), (hp.val_files, "val_files"), (hp.test_files, "test_files")]
            if hp.train_files else [(hp.files, "files")]
        )  # fmt: skip
        return [path for value, option in entries if value for path in expand_files(value, option)]

    def make_tokenizer(self, train: list[str]) -> Tokenizer:
        """A tokenizer of the configured level (sentencepiece trains on the units of `train`)."""
        hp = self.hparams
        if hp.level == "char":
            return build_tokenizer("char", lowercase=hp.lowercase)
        if hp.level == "sentencepiece":
            try:
                return build_tokenizer(
                    "sentencepiece", train, vocab_size=hp.sp_vocab_size, model_type=hp.sp_model_type,
                    lowercase=hp.lowercase, seed=hp.seed,
                )  # fmt: skip
            except ValueError as error:
                raise DataError(f"{self.origins['train']}: {error} (data.sp_vocab_size)") from None
        return build_tokenizer("word", lowercase=hp.lowercase, kind=hp.word_tokenizer)

    @property
    def rules(self) -> CorpusRules:
        """The vocabulary's rules, from the data options."""
        hp = self.hparams
        return CorpusRules(hp.min_freq, hp.max_vocab_size, hp.level == "sentencepiece")

    def build(self) -> None:
        if self._built:
            return
        self.check()
        hp = self.hparams
        if hp.prepared_dir:
            self._build_prepared()
            self._built = True
            return
        texts = self.read_texts()
        self.tokenizer = self.make_tokenizer(texts["train"])
        tokens = {split: [self.tokenizer.tokenize(u) for u in units] for split, units in texts.items()}
        self.vocab = self.rules.vocabulary(token_counts(tokens["train"]))
        for split, toks in tokens.items():
            keep = kept_units([len(t) for t in toks])
            self.units[split] = [self.vocab.encode(t) for t, k in zip(toks, keep) if k]
            n = sum(len(u) for u in self.units[split])
            unk = sum(i == UNK for u in self.units[split] for i in u)
            rank_zero_info(
                f"[data] {self.origins[split]}: {len(self.units[split])} {hp.unit}s, {n} {hp.level} "
                f"tokens ({100.0 * unk / max(n, 1):.1f}% <unk>)"
            )
        rank_zero_info(f"[data] vocabulary: {len(self.vocab)} {hp.level} types (from train)")
        self._built = True

    def _build_prepared(self) -> None:
        """Open (or, on local rank 0, first write) the prepared folder; units and streams memory-mapped."""
        hp = self.hparams
        self.prepared, meta = open_or_prepare(
            hp.prepared_dir, text_key(self), lambda: prepare_text(self, hp.prepared_dir)
        )
        self.tokenizer = tokenizer_from_state(meta["tokenizer"])
        self.vocab = Vocabulary.from_list(meta["vocab"])
        for split, counts in meta["counts"].items():
            self.units[split] = load_units(self.prepared, split)
            self.streams[split] = load_array(self.prepared, f"{split}.stream")
            self.origins[split] = meta["origins"][split]
            n = max(counts["tokens"], 1)
            rank_zero_info(
                f"[data] {self.origins[split]} (prepared, {self.prepared}): {counts['units']} {hp.unit}s, "
                f"{counts['tokens']} {hp.level} tokens ({100.0 * counts['unk'] / n:.1f}% <unk>)"
            )
        rank_zero_info(f"[data] vocabulary: {len(self.vocab)} {hp.level} types (from train)")

    @property
    def vocab_size(self) -> int:
        self.build()
        return len(self.vocab)

    def vocab_state(self) -> dict:
        """Everything inference needs besides the weights, as plain types."""
        self.build()
        return {
            "vocab": self.vocab.to_list(),
            "tokenizer": self.tokenizer.state(),
            "level": self.hparams.level,
            "unit": self.hparams.unit,
        }

    # -- Lightning hooks -----------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        self.build()
        needed = {"fit": ["train", "valid"], "validate": ["valid"], "test": ["test"]}.get(stage or "", [])
        for split in needed:
            if not self.units.get(split):
                raise DataError(f"{self.origins.get(split, 'the data')}: no {split} text (stage {stage!r})")

    def stream(self, split: str, streams: int | None = None) -> tuple[Tensor, Tensor]:
        """The split as (B, N) inputs and targets (see :func:`batchify`)."""
        self.build()
        B = streams or self.hparams.batch_size
        if split in self.streams:
            stream = torch.from_numpy(np.asarray(self.streams[split], dtype=np.int64))
        else:
            stream = encode_stream(self.units[split])
        try:
            return batchify(stream, B)
        except ValueError:
            raise DataError(
                f"{self.origins[split]}: {len(stream)} tokens are too few for {B} parallel streams; "
                "lower data.batch_size / data.eval_batch_size"
            ) from None

    def _loader(self, split: str, train: bool) -> DataLoader:
        hp = self.hparams
        B = hp.batch_size if train else (hp.eval_batch_size or hp.batch_size)
        if hp.tbptt_steps is None:
            units = self.units[split]
            lengths = (
                [n + 1 for n in np.diff(units.offsets).tolist()]
                if self.prepared
                else [len(u) + 1 for u in units]
            )
            sampler = BucketBatchSampler(lengths, B, "sentences", shuffle=train, seed=hp.seed, even=train)
            kwargs = {"batch_sampler": sampler, "collate_fn": collate_units}
            return make_loader(UnitDataset(units), train=train, seed=hp.seed, **kwargs)
        rank, world = _dist()
        if split in self.streams:  # prepared: chunks sliced from the memory-mapped stream
            try:
                chunks = MappedStreamChunks(
                    self.streams[split], B * world, range(rank * B, (rank + 1) * B), hp.tbptt_steps
                )
            except ValueError:
                raise DataError(
                    f"{self.origins[split]}: {len(self.streams[split])} tokens are too few for {B * world} "
                    "parallel streams; lower data.batch_size / data.eval_batch_size"
                ) from None
            return make_loader(chunks, train=train, seed=hp.seed, batch_size=None)
        inputs, targets = self.stream(split, B * world)
        rows = slice(rank * B, (rank + 1) * B)
        # batch_size=None: every item already is a batch; an IterableDataset keeps the order
        # (Lightning adds no shuffling or distributed sampler to it)
        chunks = StreamChunks(inputs[rows], targets[rows], hp.tbptt_steps)
        return make_loader(chunks, train=train, seed=hp.seed, batch_size=None)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
