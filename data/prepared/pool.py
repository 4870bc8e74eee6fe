"""Tokenising a corpus in a pool of processes, for the prepared path (data.prepared.parallel, .text).

Each worker tokenises a chunk of lines of every side and maps the tokens to ids of its own
chunk-local vocabulary: per side, the chunk's distinct tokens, every token as an index into them
and the number of tokens of each line. The main process adds up the counts (:func:`count_tokens`),
builds the vocabularies by the rules of :mod:`data.core.rules` and maps local ids to the final ones
with one numpy lookup per chunk (:meth:`data.core.vocab.Vocabulary.encode_array`).
"""

from __future__ import annotations

import sys
from collections import Counter
from multiprocessing import get_context

import numpy as np
from tqdm import tqdm

from data.core.tokenizers import Tokenizer, tokenizer_from_state

__all__ = ["CHUNK", "count_tokens", "tokenize_splits"]

CHUNK = 5000  # lines a worker tokenises at a time

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
