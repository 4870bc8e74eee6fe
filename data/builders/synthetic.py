"""Synthetic sequence-transduction corpora (copy, reverse, sort) for quick checks of seq2seq models.

Usage::

    python -m data.builders.synthetic --task reverse --vocab 20 --train-len 5-20 --test-len 5-60 \\
        --n 20000 --out data/reverse

Tokens are ``w0`` ... ``w<vocab-1>``, space separated. The target of ``copy`` is the source, of
``reverse`` the source backwards, of ``sort`` the source tokens in ascending order of their index
(``w2`` before ``w10``: numeric, not string order; repeats kept). Each sentence's length is drawn
uniformly from the inclusive range given as ``LOW-HIGH`` (or one number for a fixed length): train
and dev from ``--train-len``, test from ``--test-len``, so a longer test range measures length
generalisation. Files: ``<out>/{train,dev,test}.src`` and ``.tgt`` plus ``stats.json``.

Each split has its own random stream seeded from ``(seed, split)``, so the output is the same for
the same ``--seed`` on every machine, and changing ``--n`` leaves dev and test as they were.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable
from pathlib import Path

from data.core.corpus_io import CorpusError, check_out_dir, write_parallel, write_stats

TASKS: dict[str, Callable[[list[int]], list[int]]] = {
    "copy": lambda ids: list(ids),
    "reverse": lambda ids: ids[::-1],
    "sort": sorted,
}
SRC_EXT, TGT_EXT = "src", "tgt"


def parse_range(text: str, name: str = "length range") -> tuple[int, int]:
    """Parse ``"5-20"`` (inclusive) or ``"7"`` (fixed) into ``(low, high)`` with ``1 <= low <= high``."""
    parts = text.strip().split("-")
    try:
        low, high = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else (None, None)
    except ValueError:
        low, high = None, None
    if low is None:
        raise CorpusError(f"{name} {text!r} is not LOW-HIGH with whole numbers; write e.g. 5-20")
    return check_range((low, high), name)


def check_range(bounds: tuple[int, int], name: str = "length range") -> tuple[int, int]:
    """Check that ``bounds`` is ``(low, high)`` with ``1 <= low <= high``; return it as a tuple."""
    low, high = bounds
    if low < 1:
        raise CorpusError(f"{name} {low}-{high} starts below 1; sentences need at least one token")
    if low > high:
        raise CorpusError(f"{name} {low}-{high} has LOW above HIGH; write it as {high}-{low}")
    return int(low), int(high)


def tokens(ids: list[int]) -> str:
    """Render token ids as the space-separated line ``w<id> w<id> ...``."""
    return " ".join(f"w{i}" for i in ids)


def make_split(
    task: str, n: int, vocab: int, length: tuple[int, int], rng: random.Random
) -> tuple[list[str], list[str]]:
    """``n`` (source, target) lines for ``task`` with lengths uniform in ``length`` (inclusive)."""
    transform = TASKS[task]
    src_lines, tgt_lines = [], []
    for _ in range(n):
        ids = [rng.randrange(vocab) for _ in range(rng.randint(*length))]
        src_lines.append(tokens(ids))
        tgt_lines.append(tokens(transform(ids)))
    return src_lines, tgt_lines


def _check_sizes(task: str, vocab: int, n: int, n_dev: int, n_test: int) -> None:
    """Known task, at least one token type, a training set, non-negative dev/test sizes."""
    if task not in TASKS:
        raise CorpusError(f"task {task!r} is unknown; choose one of {', '.join(TASKS)}")
    if vocab < 1:
        raise CorpusError(f"--vocab {vocab} must be at least 1")
    if n < 1:
        raise CorpusError(f"--n {n} must be at least 1 (the number of training pairs)")
    for name, value in (("--n-dev", n_dev), ("--n-test", n_test)):
        if value < 0:
            raise CorpusError(f"{name} {value} must be 0 or more")


def build_synthetic_corpus(
    task: str,
    out: str | Path,
    vocab: int = 20,
    train_len: tuple[int, int] = (5, 20),
    test_len: tuple[int, int] = (5, 60),
    n: int = 20000,
    n_dev: int = 1000,
    n_test: int = 2000,
    seed: int = 0,
    force: bool = False,
) -> dict:
    """Write ``<out>/{train,dev,test}.{src,tgt}`` and ``<out>/stats.json``; return the stats."""
    _check_sizes(task, vocab, n, n_dev, n_test)
    train_len = check_range(train_len, "--train-len")
    test_len = check_range(test_len, "--test-len")
    out = Path(out)
    check_out_dir(out, force)
    plan = {"train": (n, train_len), "dev": (n_dev, train_len), "test": (n_test, test_len)}
    pairs = {}
    for split, (size, length) in plan.items():
        rng = random.Random(f"seqcap-synthetic:{seed}:{split}")
        src_lines, tgt_lines = make_split(task, size, vocab, length, rng)
        write_parallel(out, split, src_lines, tgt_lines, SRC_EXT, TGT_EXT)
        pairs[split] = size
    stats = {
        "task": task,
        "vocab": vocab,
        "train_len": list(train_len),
        "test_len": list(test_len),
        "seed": seed,
        "pairs": pairs,
    }
    write_stats(out, stats)
    return stats


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(
        prog="python -m data.builders.synthetic", description="Write a synthetic copy/reverse/sort corpus."
    )
    parser.add_argument("--task", required=True, choices=sorted(TASKS), help="target = which transform")
    parser.add_argument("--vocab", type=int, default=20, help="number of token types w0..w<vocab-1>")
    parser.add_argument("--train-len", default="5-20", help="LOW-HIGH token count for train and dev")
    parser.add_argument("--test-len", default="5-60", help="LOW-HIGH token count for test")
    parser.add_argument("--n", type=int, default=20000, help="training pairs")
    parser.add_argument("--n-dev", type=int, default=1000, help="dev pairs")
    parser.add_argument("--n-test", type=int, default=2000, help="test pairs")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--force", action="store_true", help="overwrite corpus files in a non-empty --out")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: build the corpus and print its counts; user errors exit with a message."""
    args = parse_args(argv)
    try:
        stats = build_synthetic_corpus(
            args.task,
            args.out,
            vocab=args.vocab,
            train_len=parse_range(args.train_len, "--train-len"),
            test_len=parse_range(args.test_len, "--test-len"),
            n=args.n,
            n_dev=args.n_dev,
            n_test=args.n_test,
            seed=args.seed,
            force=args.force,
        )
    except CorpusError as err:
        raise SystemExit(f"error: {err}") from None
    pairs = stats["pairs"]
    print(
        f"wrote {args.out}: {stats['task']} task, train {pairs['train']}, dev {pairs['dev']}, "
        f"test {pairs['test']} pairs (vocab {stats['vocab']}, train/dev lengths "
        f"{'-'.join(map(str, stats['train_len']))}, test lengths {'-'.join(map(str, stats['test_len']))})"
    )


if __name__ == "__main__":
    main()
