"""Which training text is kept and what the vocabularies hold: the rules of both ways to build data.

The raw-text data modules (:mod:`data.datamodules.translation`, :mod:`data.datamodules.text`) hold
every tokenised sentence in memory; the prepared path (:mod:`data.prepared.parallel`,
:mod:`data.prepared.text`) tokenises in worker processes and counts chunk by chunk. Both hand their
token lengths and counts to the functions here, so the pairs kept and the vocabularies built are
the same by construction (tests/data/test_prepared.py compares the batches):

- a training pair is kept when neither side has more than ``max_len`` tokens (dev and test are
  kept whole); when none is left, that is a :class:`DataError` naming the file. Pairs with an
  empty side were skipped before, when the text was read (:mod:`data.core.parallel`);
- a unit of language-model text that tokenises to nothing is dropped, in every split;
- a vocabulary comes from the kept training text only: the tokens seen at least ``min_freq``
  times, most frequent first, ties broken by the token (:meth:`Vocabulary.from_counts`), at most
  ``max_vocab_size`` entries with the four specials, except over sentencepiece pieces: their
  number was fixed when the tokenizer was trained (``sp_vocab_size``), with no second limit on top.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from data.core.parallel import DataError
from data.core.vocab import Vocabulary

__all__ = ["CorpusRules", "TrainingPairs", "kept_units", "token_counts", "training_pairs"]


@dataclass(frozen=True)
class CorpusRules:
    """The data options the kept text and the vocabularies depend on (a data module's
    ``rules``); ``subword``: the tokens are sentencepiece pieces; ``max_len`` None: no limit."""

    min_freq: int = 1
    max_vocab_size: int | None = None
    subword: bool = False
    max_len: int | None = None

    def vocabulary(self, counts: Mapping[str, int]) -> Vocabulary:
        """The vocabulary of the training tokens counted in `counts`."""
        return Vocabulary.from_counts(counts, self.min_freq, None if self.subword else self.max_vocab_size)


def token_counts(sentences: Iterable[list[str]]) -> Counter[str]:
    """How often each token occurs in `sentences` (lists of tokens)."""
    counts: Counter[str] = Counter()
    for sentence in sentences:
        counts.update(sentence)
    return counts


@dataclass(frozen=True)
class TrainingPairs:
    """What :func:`training_pairs` decided: ``keep`` (bool per pair) and the two vocabularies."""

    keep: np.ndarray
    src_vocab: Vocabulary
    tgt_vocab: Vocabulary

    @property
    def dropped(self) -> int:
        """Training pairs over ``max_len``."""
        return int((~self.keep).sum())


def training_pairs(
    rules: CorpusRules,
    src_lengths: Sequence[int] | np.ndarray,
    tgt_lengths: Sequence[int] | np.ndarray,
    counts: Callable[[int, np.ndarray], Mapping[str, int]],
    origin: str,
) -> TrainingPairs:
    """The training pairs kept and the source and target vocabularies built from them.

    `src_lengths` / `tgt_lengths`: the tokens of each training pair's sides; `counts(side, keep)`
    counts the tokens of side 0 (source) or 1 (target) over the pairs where `keep` is true;
    `origin` names the training files in the error when no pair is left."""
    longest = np.maximum(np.asarray(src_lengths, dtype=np.int64), np.asarray(tgt_lengths, dtype=np.int64))
    keep = longest <= rules.max_len if rules.max_len is not None else np.ones(len(longest), dtype=bool)
    if not keep.any():
        raise DataError(f"{origin}: every training pair is longer than max_len={rules.max_len}")
    return TrainingPairs(keep, rules.vocabulary(counts(0, keep)), rules.vocabulary(counts(1, keep)))


def kept_units(lengths: Sequence[int] | np.ndarray) -> np.ndarray:
    """Which units of language-model text stay (bool per unit): those with a token."""
    return np.asarray(lengths, dtype=np.int64) > 0
