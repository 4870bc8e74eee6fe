"""The JoeyNMT anchor of `python -m seq2seq.bench --anchor joeynmt` (issue 28).

One epoch of seqcap's gettext_attention model and one epoch of the nearest JoeyNMT 2.3 model, each
as its own process started the way a user starts it (`seqcap fit -c ...`, `python -m joeynmt train
...`), on the same files, in the same run. Measured for each process (:func:`run_measured`): its
wall time from start to exit, start-up, data loading, vocabularies, the epoch and the final
checkpoint included, and its peak resident set size (RSS).

The same files: :func:`pretokenize` tokenises the corpus once, beforehand and unmeasured, with the
tokenizer the seqcap config names (toktok words), drops the training pairs either side of which
is over max_len, and writes tokens joined by single spaces. Both read that text and split it on
spaces (seqcap with ``word_tokenizer: space``, JoeyNMT with ``level: word``), so both filter out
nothing and count the same tokens of the same pairs; both keep the most frequent tokens, ties
broken by the token, so the vocabularies hold the same 8,000 entries (seqcap's limit counts its
four specials, JoeyNMT's ``voc_limit`` does not). Neither validates during the epoch (seqcap:
``limit_val_batches 0``; JoeyNMT: ``validation_freq`` past the epoch, and ``--skip-test``),
neither uses DataLoader worker processes, and both run on the CPU in fp32.

JoeyNMT is optional and never a dependency: it runs in whichever interpreter has it
(:func:`joeynmt_python`), e.g. a separate virtual environment. Usage from the benchmark::

    pairs = pretokenize(Path(args.data), work / "data")
    ours = seqcap_epoch(CONFIG, work / "data", work)
    anchor = anchor_epoch(work / "data", work, joeynmt_python(args.joeynmt_python))
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from data.core.parallel import DataError, find_split
from data.core.tokenizers import build_tokenizer
from data.core.vocab import SPECIALS

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "translation" / "gettext_attention.yaml"
NEVER = 10**9  # JoeyNMT's validation_freq: more updates than an epoch has (a multiple of logging_freq)


@dataclass(frozen=True)
class Measured:
    """One process run to completion: wall `seconds` from start to exit, `peak_rss_mb` (MiB) and
    its `returncode`."""

    seconds: float
    peak_rss_mb: float
    returncode: int


# Runs argv[2:] as its child and writes "seconds ru_maxrss returncode" of that child to fd argv[1].
# The measured process is this launcher's child, not the caller's: a process's ru_maxrss keeps,
# through exec, the high-water mark of the memory it was forked from (Linux: exec_mmap), which
# would be the caller's (the benchmark, torch loaded); this launcher's is a bare interpreter's.
_LAUNCHER = """
import os, signal, subprocess, sys, time
start = time.perf_counter()
child = subprocess.Popen(sys.argv[2:])
signal.signal(signal.SIGTERM, lambda *_: child.terminate())
_, status, usage = os.wait4(child.pid, 0)
seconds = time.perf_counter() - start
os.write(int(sys.argv[1]), f"{seconds} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}".encode())
"""


def run_measured(
    cmd: list[str], *, env: dict | None = None, cwd: Path | str | None = None, log_path: Path | None = None
) -> Measured:
    """Runs `cmd` to completion; its stdout and stderr go to `log_path` (else nowhere).

    `seconds` is wall time from the start of the process to its exit. `peak_rss_mb` is the kernel's
    ru_maxrss of the process as `os.wait4` reports it: its peak RSS, or that of a descendant it
    waited for if that one was larger (the largest single process, not a sum over the tree). The
    runs here start no DataLoader workers, so it is the training process's own. The process is
    started by a small launcher (a bare interpreter, about 10 MB: the floor of this figure), so
    that the caller's memory does not count as the process's."""
    sink = open(log_path, "w", encoding="utf-8") if log_path else contextlib.nullcontext(subprocess.DEVNULL)
    read_end, write_end = os.pipe()
    with sink as out, os.fdopen(read_end, "rb") as report:
        try:
            launcher = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(write_end), *cmd],
                env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, pass_fds=(write_end,),
            )  # fmt: skip
        finally:
            os.close(write_end)
        try:
            launcher.wait()
        except BaseException:  # interrupted: leave no orphan behind
            launcher.terminate()
            launcher.wait()
            raise
        fields = report.read().split()
    if len(fields) != 3:
        raise RuntimeError(f"{cmd[0]} could not be run: launcher exit {launcher.returncode} (see {log_path})")
    per_mb = 2**20 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return Measured(float(fields[0]), int(fields[1]) / per_mb, int(fields[2]))


def joeynmt_version(python: str) -> str | None:
    """The version of the joeynmt package installed for interpreter `python` (read from its
    metadata, without importing it), or None when it has none or `python` does not run."""
    probe = "import importlib.metadata as m; print(m.version('joeynmt'))"
    try:
        result = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def joeynmt_python(explicit: str | None) -> str | None:
    """The interpreter to run JoeyNMT with: `explicit` (a ValueError if it has no joeynmt), else
    this interpreter when it has joeynmt, else None."""
    if explicit is not None:
        if joeynmt_version(explicit) is None:
            raise ValueError(
                f"{explicit} has no joeynmt: install it there ({explicit} -m pip install joeynmt==2.3.0) "
                "or name an interpreter that has it"
            )
        return explicit
    return sys.executable if joeynmt_version(sys.executable) is not None else None


def _line(tokens: list[str], where: str) -> str:
    if not tokens or any(not token or token.split() != [token] for token in tokens):
        raise DataError(f"{where}: tokens {tokens!r} cannot be written split by single spaces")
    return " ".join(tokens)


def pretokenize(
    data_dir: Path, out_dir: Path, *, src: str = "en", tgt: str = "de", word_tokenizer: str = "toktok",
    max_len: int = 50,
) -> int:  # fmt: skip
    """Writes out_dir/{train,dev}.{src,tgt}: the pairs of data_dir's train and dev splits (an empty
    side skipped, as seqcap's data module skips it), tokenised with seqcap's word tokenizer of kind
    `word_tokenizer` and joined by single spaces; the training pairs with a side over `max_len`
    tokens are dropped, dev is kept whole. Returns the number of training pairs written."""
    tokenizer = build_tokenizer("word", kind=word_tokenizer)
    out_dir.mkdir(parents=True, exist_ok=True)
    kept = 0
    for split in ("train", "dev"):
        text = find_split(data_dir, split, src, tgt)
        if text is None:
            raise DataError(f"{data_dir}: no {split} split ({split}.{src} + {split}.{tgt})")
        pairs = [(tokenizer.tokenize(s), tokenizer.tokenize(t)) for s, t in zip(text.src, text.tgt)]
        if split == "train":
            pairs = [(s, t) for s, t in pairs if max(len(s), len(t)) <= max_len]
            kept = len(pairs)
        for side, lang in enumerate((src, tgt)):
            where = f"{text.origin} ({lang})"
            lines = [_line(pair[side], where) + "\n" for pair in pairs]
            (out_dir / f"{split}.{lang}").write_text("".join(lines), encoding="utf-8")
    return kept


def joeynmt_config(
    data_dir: Path, out_dir: Path, *, src: str = "en", tgt: str = "de", vocab_size: int = 8000,
    max_len: int = 50, batch_size: int = 64, embed_dim: int = 256, hidden_size: int = 256,
    dropout: float = 0.2, lr: float = 1e-3, clip_grad_norm: float = 1.0, input_feeding: bool = True,
    seed: int = 0,
) -> dict:  # fmt: skip
    """A JoeyNMT 2.3 training config of gettext_attention's model on :func:`pretokenize`'s files in
    `data_dir`, its model directory `out_dir`: one epoch on the CPU, no validation.

    `vocab_size` counts the specials, as seqcap's ``max_vocab_size``; `hidden_size` is per
    direction in the encoder, as in seqcap. JoeyNMT's recurrent decoder is Luong-shaped whatever
    its attention (the query is the new state s_t, then tanh(W [s_t; c_t]) feeds the output layer),
    where seqcap's Bahdanau decoder queries with s_{t-1} and feeds c_t into the LSTM; with
    `input_feeding` JoeyNMT's LSTM sees the previous attentional vector, the nearest it has."""

    def side(lang: str) -> dict:
        return {
            "lang": lang, "level": "word", "lowercase": False, "normalize": False,
            "max_length": max_len, "min_length": 1,
            "voc_limit": vocab_size - len(SPECIALS), "voc_min_freq": 1,
            "tokenizer_cfg": {"pretokenizer": "none"},
        }  # fmt: skip

    def rnn(**extra) -> dict:
        return {
            "type": "recurrent", "rnn_type": "lstm", "num_layers": 1, "hidden_size": hidden_size,
            "embeddings": {"embedding_dim": embed_dim, "scale": False}, "dropout": dropout, **extra,
        }  # fmt: skip

    return {
        "name": "seqcap_anchor",
        "joeynmt_version": "2.3.0",
        "model_dir": str(out_dir),
        "use_cuda": False,
        "fp16": False,
        "num_workers": 0,
        "random_seed": seed,
        "data": {
            "train": str(data_dir / "train"),
            "dev": str(data_dir / "dev"),
            "dataset_type": "plain",
            "src": side(src),
            "trg": side(tgt),
        },
        "testing": {"batch_size": batch_size, "batch_type": "sentence", "beam_size": 1},
        "training": {
            "optimizer": "adam",
            "adam_betas": [0.9, 0.999],
            "learning_rate": lr,
            # a constant rate, as seqcap's within an epoch without validation (JoeyNMT 2.3 needs a
            # scheduler; its "plateau" passes ReduceLROnPlateau a `verbose` that torch 2.14 lacks)
            "scheduling": "exponential",
            "decrease_factor": 1.0,
            "clip_grad_norm": clip_grad_norm,
            "loss": "crossentropy",
            "label_smoothing": 0.0,
            "normalization": "tokens",  # seqcap's loss is the mean over the target tokens
            "batch_size": batch_size,
            "batch_type": "sentence",
            "shuffle": True,
            "epochs": 1,
            "logging_freq": 50,  # Lightning's log_every_n_steps
            "validation_freq": NEVER,
            "keep_best_ckpts": 1,
            "overwrite": True,
        },
        "model": {
            "encoder": rnn(bidirectional=True),
            "decoder": rnn(
                attention="bahdanau",
                init_hidden="bridge",
                input_feeding=input_feeding,
                hidden_dropout=dropout,
            ),
        },
    }


def write_joeynmt_config(config: dict, path: Path) -> Path:
    """`config` as YAML at `path`, under a line that says where it comes from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# JoeyNMT 2.3 anchor of {CONFIG.relative_to(REPO)}, written by seq2seq.bench_anchor\n"
    path.write_text(header + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def anchor_epoch(data_dir: Path, work_dir: Path, python: str) -> Measured:
    """One JoeyNMT epoch on :func:`pretokenize`'s files in `data_dir`, run with interpreter `python`
    as `python -m joeynmt train CONFIG --skip-test`; config, model and log under work_dir."""
    work_dir = work_dir.resolve()
    config = write_joeynmt_config(
        joeynmt_config(data_dir.resolve(), work_dir / "joeynmt"), work_dir / "joeynmt.yaml"
    )
    return run_measured(
        [python, "-m", "joeynmt", "train", str(config), "--skip-test"],
        cwd=work_dir, log_path=work_dir / "joeynmt.log",
    )  # fmt: skip


def seqcap_epoch(config: Path, data_dir: Path, work_dir: Path) -> Measured:
    """One epoch of seqcap's `config` on :func:`pretokenize`'s files in `data_dir`, as a user runs it:
    `python -m seqcap fit -c CONFIG`, with these options: the data split on spaces, one epoch,
    no validation, the CPU, no progress bar (the output goes to a file), runs under
    work_dir/seqcap, output in work_dir/seqcap.log, wandb off."""
    work_dir = work_dir.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "seqcap", "fit", "-c", str(Path(config).resolve()),
        "--data.init_args.data_dir", str(data_dir.resolve()),
        "--data.init_args.word_tokenizer", "space",
        "--data.init_args.num_workers", "0",
        "--trainer.max_epochs", "1",
        "--trainer.limit_val_batches", "0",
        "--trainer.accelerator", "cpu",
        "--trainer.devices", "1",
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(work_dir / "seqcap"),
        "--wandb", "off",
    ]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return run_measured(cmd, env=env, cwd=REPO, log_path=work_dir / "seqcap.log")
