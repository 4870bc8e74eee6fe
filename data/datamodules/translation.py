"""ParallelTextDataModule: train/dev/test parallel text -> bucketed batches of token ids.

Reads DATA_DIR/{train,dev,test}.{src_lang,tgt_lang} (or {split}.tsv), tokenizes (words with
nltk, or sentencepiece trained on the training side), builds the vocabularies from train only,
drops training pairs longer than `max_len` tokens (counted and reported), and batches by length.
`val_size: N` validates on N dev pairs drawn once at random (with `seed`) instead of all of dev:
the same pairs every validation, of every length (the first batches of a length-sorted dev would
be its shortest sentences).
Tokenizers and vocabularies are built on first use, so LightningCLI can link the vocabulary
sizes into the model, and `vocab_state()` puts them into the checkpoint as plain lists.

`prepared_dir: DIR` reads the corpus tokenised and encoded once (data.prepared.parallel, written by
`python -m data.prepared.prepare` or here on first use, by local rank 0 only) and memory-mapped, for corpora
of millions of pairs: the same pairs, ids and batches as from the raw text, and a start-up that
does not grow with the corpus. Both paths keep the pairs and build the vocabularies with
:func:`data.core.rules.training_pairs`; the prepared one reads the corpus through this module's
public ``read_train``, ``read_split``, ``make_tokenizer``, ``rules`` and ``split_files``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from data.core.batching import BucketBatchSampler, collate_pairs
from data.core.parallel import DataError, ParallelText, find_split, split_files
from data.core.resumable import make_loader
from data.core.rules import CorpusRules, token_counts, training_pairs
from data.core.tokenizers import Tokenizer, build_tokenizer, tokenizer_from_state
from data.core.vocab import Vocabulary
from data.prepared.parallel import open_split, prepare, prepared_key
from data.prepared.store import open_or_prepare


class PairDataset(Dataset):
    """Token-id pairs with their raw text (for BLEU against the untouched references).

    Lists in memory (the raw-text path), or the memory-mapped views of a prepared folder
    (:func:`data.prepared.parallel.open_split`) with the lengths stored there."""

    def __init__(
        self, src_ids: Sequence[list[int]], tgt_ids: Sequence[list[int]], text: ParallelText,
        lengths: Sequence[int] | None = None,
    ):  # fmt: skip
        self.src_ids, self.tgt_ids, self.text, self.stored_lengths = src_ids, tgt_ids, text, lengths

    def __len__(self) -> int:
        return len(self.src_ids)

    def __getitem__(self, i: int) -> dict:
        return {
            "index": i,
            "src": self.src_ids[i],
            "tgt": self.tgt_ids[i],
            "src_text": self.text.src[i],
            "tgt_text": self.text.tgt[i],
            "line": int(self.text.lines[i]),
        }

    def lengths(self) -> list[int]:
        """max(source, target) tokens + 1 of every pair, for bucketing."""
        if self.stored_lengths is not None:
            return np.asarray(self.stored_lengths).tolist()
        return [max(len(s), len(t)) + 1 for s, t in zip(self.src_ids, self.tgt_ids)]


def fixed_indices(n: int, size: int, seed: int) -> list[int]:
    """`size` of the positions 0..n-1 drawn at random with `seed`, in order (``val_size``)."""
    return sorted(random.Random(seed).sample(range(n), size))


def fixed_subset(text: ParallelText, size: int, seed: int) -> ParallelText:
    """`size` pairs of `text` drawn at random with `seed`, in their file order."""
    return text.subset(fixed_indices(len(text), size, seed))


class ParallelTextDataModule(pl.LightningDataModule):
    def __init__(
        self,
        data_dir: str,
        src_lang: str = "en",
        tgt_lang: str = "de",
        tokenizer: Literal["word", "sentencepiece"] = "word",
        word_tokenizer: Literal["toktok", "treebank", "wordpunct", "space"] = "toktok",
        lowercase: bool = False,
        sp_vocab_size: int = 8000,
        sp_model_type: Literal["bpe", "unigram"] = "bpe",
        min_freq: int = 1,
        max_vocab_size: int | None = 8000,
        max_len: int = 100,
        batch_size: int = 64,
        batch_by: Literal["sentences", "tokens"] = "sentences",
        eval_batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        train_split: str = "train",
        dev_split: str = "dev",
        test_split: str = "test",
        val_size: int | None = None,
        prepared_dir: str | None = None,
    ):
        super().__init__()
        if val_size is not None and val_size < 1:
            raise ValueError(f"data.val_size must be >= 1 dev pairs or null (all of dev), got {val_size}")
        self.save_hyperparameters()
        self.data_dir = Path(data_dir)
        self._built = False
        self.datasets: dict[str, PairDataset] = {}

    # -- what the raw and the prepared path (data.prepared.parallel) both use ------------------
    def read_split(self, split: str) -> ParallelText | None:
        """The pairs of the split named `split` (a file stem: train, dev, ...); None when absent."""
        hp = self.hparams
        return find_split(self.data_dir, split, hp.src_lang, hp.tgt_lang)

    def make_tokenizer(self, sentences: list[str]) -> Tokenizer:
        """A tokenizer of the configured kind for one side (sentencepiece trains on `sentences`)."""
        hp = self.hparams
        if hp.tokenizer == "sentencepiece":
            return build_tokenizer(
                "sentencepiece", sentences, vocab_size=hp.sp_vocab_size,
                model_type=hp.sp_model_type, lowercase=hp.lowercase, seed=hp.seed,
            )  # fmt: skip
        return build_tokenizer("word", lowercase=hp.lowercase, kind=hp.word_tokenizer)

    @property
    def rules(self) -> CorpusRules:
        """The training pairs kept and the vocabularies' rules, from the data options."""
        hp = self.hparams
        return CorpusRules(hp.min_freq, hp.max_vocab_size, hp.tokenizer == "sentencepiece", hp.max_len)

    def split_files(self, split: str) -> list[Path]:
        """The files a split is read from (for the prepared folder's key)."""
        return split_files(self.data_dir, split, self.hparams.src_lang, self.hparams.tgt_lang)

    def read_train(self) -> ParallelText:
        hp = self.hparams
        if not self.data_dir.is_dir():
            raise DataError(f"{self.data_dir}: no such data directory (data.data_dir)")
        train = self.read_split(hp.train_split)
        if train is None:
            raise DataError(
                f"{self.data_dir}: no training data; expected {hp.train_split}.{hp.src_lang} + "
                f"{hp.train_split}.{hp.tgt_lang} or {hp.train_split}.tsv"
            )
        if len(train) == 0:
            raise DataError(f"{train.origin}: the training set is empty (after skipping empty lines)")
        return train

    def build(self) -> None:
        if self._built:
            return
        hp = self.hparams
        if hp.prepared_dir:
            self._build_prepared()
            self._built = True
            return
        train = self.read_train()
        self.src_tokenizer = self.make_tokenizer(train.src)
        self.tgt_tokenizer = self.make_tokenizer(train.tgt)
        sides = (
            [self.src_tokenizer.tokenize(s) for s in train.src],
            [self.tgt_tokenizer.tokenize(s) for s in train.tgt],
        )
        chosen = training_pairs(
            self.rules, [len(s) for s in sides[0]], [len(t) for t in sides[1]],
            lambda side, keep: token_counts(toks for toks, k in zip(sides[side], keep) if k), train.origin,
        )  # fmt: skip
        keep, dropped = np.flatnonzero(chosen.keep).tolist(), chosen.dropped
        train = train.subset(keep)
        src_tok, tgt_tok = [sides[0][i] for i in keep], [sides[1][i] for i in keep]
        self.src_vocab, self.tgt_vocab = chosen.src_vocab, chosen.tgt_vocab
        self.datasets["train"] = PairDataset(
            [self.src_vocab.encode(s) for s in src_tok], [self.tgt_vocab.encode(t) for t in tgt_tok], train
        )
        rank_zero_info(
            f"[data] {train.origin}: {len(train)} training pairs; {dropped} longer than "
            f"max_len={hp.max_len} dropped, {train.skipped_empty} with an empty side skipped; "
            f"vocabularies {len(self.src_vocab)} ({hp.src_lang}) / {len(self.tgt_vocab)} ({hp.tgt_lang})"
        )
        for name, split in (("dev", hp.dev_split), ("test", hp.test_split)):
            text = self.read_split(split)
            if text is not None:
                note = f"[data] {text.origin}: {len(text)} {name} pairs"
                if name == "dev" and hp.val_size is not None and hp.val_size < len(text):
                    note += f"; validating on {hp.val_size} of them, drawn with seed {hp.seed}"
                    text = fixed_subset(text, hp.val_size, hp.seed)
                self.datasets[name] = self.encode_text(text)
                rank_zero_info(note)
        self._built = True

    def _build_prepared(self) -> None:
        """Open (or, on local rank 0, first write) the prepared folder and memory-map its splits."""
        hp = self.hparams
        folder, meta = open_or_prepare(
            hp.prepared_dir, prepared_key(self), lambda: prepare(self, hp.prepared_dir)
        )
        self.src_tokenizer = tokenizer_from_state(meta["src_tokenizer"])
        self.tgt_tokenizer = tokenizer_from_state(meta["tgt_tokenizer"])
        self.src_vocab = Vocabulary.from_list(meta["src_vocab"])
        self.tgt_vocab = Vocabulary.from_list(meta["tgt_vocab"])
        self.datasets["train"] = PairDataset(*open_split(folder, "train", meta))
        rank_zero_info(
            f"[data] {folder} (prepared from {meta['origins']['train']}): {meta['pairs']['train']} training "
            f"pairs; {meta['dropped_long']} longer than max_len={hp.max_len} dropped, "
            f"{meta['skipped_empty']['train']} with an empty side skipped; vocabularies "
            f"{len(self.src_vocab)} ({hp.src_lang}) / {len(self.tgt_vocab)} ({hp.tgt_lang})"
        )
        for name in ("dev", "test"):
            if name not in meta["pairs"]:
                continue
            n, indices = meta["pairs"][name], None
            note = f"[data] {meta['origins'][name]} (prepared): {n} {name} pairs"
            if name == "dev" and hp.val_size is not None and hp.val_size < n:
                note += f"; validating on {hp.val_size} of them, drawn with seed {hp.seed}"
                indices = fixed_indices(n, hp.val_size, hp.seed)
            self.datasets[name] = PairDataset(*open_split(folder, name, meta, indices))
            rank_zero_info(note)

    def encode_text(self, text: ParallelText) -> PairDataset:
        """Raw pairs -> a dataset with this module's tokenizers and vocabularies (no filtering)."""
        src = [self.src_vocab.encode(self.src_tokenizer.tokenize(s)) for s in text.src]
        tgt = [self.tgt_vocab.encode(self.tgt_tokenizer.tokenize(t)) for t in text.tgt]
        return PairDataset(src, tgt, text)

    @property
    def src_vocab_size(self) -> int:
        self.build()
        return len(self.src_vocab)

    @property
    def tgt_vocab_size(self) -> int:
        self.build()
        return len(self.tgt_vocab)

    def vocab_state(self) -> dict:
        """Everything inference needs besides the weights, as plain types."""
        self.build()
        return {
            "src_vocab": self.src_vocab.to_list(),
            "tgt_vocab": self.tgt_vocab.to_list(),
            "src_tokenizer": self.src_tokenizer.state(),
            "tgt_tokenizer": self.tgt_tokenizer.state(),
            "max_len": self.hparams.max_len,
            "src_lang": self.hparams.src_lang,
            "tgt_lang": self.hparams.tgt_lang,
        }

    # -- Lightning hooks ----------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        self.build()
        if stage in ("fit", "validate") and "dev" not in self.datasets:
            raise DataError(f"{self.data_dir}: no {self.hparams.dev_split} split for validation")
        if stage == "test" and "test" not in self.datasets:
            raise DataError(f"{self.data_dir}: no {self.hparams.test_split} split to test on")

    def dataset(self, name: str) -> Dataset:
        """What the loader of `name` (train, dev, test) reads; items as PairDataset's."""
        return self.datasets[name]

    def collate(self, items: list[dict]) -> dict:
        return collate_pairs(items)

    def _loader(self, name: str, train: bool) -> DataLoader:
        hp = self.hparams
        ds = self.datasets[name]
        lengths = ds.lengths()
        sampler = BucketBatchSampler(
            lengths, hp.batch_size if train else hp.eval_batch_size,
            hp.batch_by if train else "sentences", shuffle=train, seed=hp.seed, even=train,
        )  # fmt: skip
        return make_loader(
            self.dataset(name), train=train, seed=hp.seed, batch_sampler=sampler, collate_fn=self.collate,
            num_workers=hp.num_workers, persistent_workers=hp.num_workers > 0,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("dev", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
