"""Peak memory of `seqcap translate` by input size: numbers, not a test.

    python -m seq2seq.translation.memory_probe --checkpoint CKPT [--sizes 1000 10000 100000]
        [--beam-size 1] [--cli seq2seq.translation.cli] [-- EXTRA CLI ARGS]

For each size N it writes N random sentences of the checkpoint's source words (3-8 words each,
seed 0) to a temporary file, runs `python -m CLI --checkpoint CKPT --input FILE --output FILE`
in a fresh wrapper process, and prints the CLI's peak resident set size (ru_maxrss of the child,
MiB) and its wall time. --cli may also be the path of a .py file (e.g. an older version of the
CLI, to compare). With streaming, the peak at 100k sentences stays within a few MB of that at 1k.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Runs the command given as its arguments and prints the child's peak RSS in KiB (Linux).
WRAPPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.run(sys.argv[1:]).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)\n"
)


def source_words(checkpoint: str) -> list[str]:
    """The checkpoint's source words, specials (<pad>, <unk>, ...) left out."""
    from seq2seq.training.checkpoint import load_checkpoint

    vocab = load_checkpoint(checkpoint)["seqcap"]["src_vocab"]
    return [w for w in vocab if not (w.startswith("<") and w.endswith(">"))] or ["a"]


def peak_rss(cli: str, checkpoint: str, n: int, words: list[str], extra: list[str], folder: Path):
    """(peak RSS in MiB, seconds, exit status) of one translate run over n random sentences."""
    rng = random.Random(0)
    src, out = folder / f"in{n}.txt", folder / f"out{n}.txt"
    with open(src, "w", encoding="utf-8") as f:
        for _ in range(n):
            f.write(" ".join(rng.choice(words) for _ in range(rng.randint(3, 8))) + "\n")
    target = [cli] if cli.endswith(".py") else ["-m", cli]
    command = [sys.executable, *target, "--checkpoint", checkpoint, "--input", str(src)]
    command += ["--output", str(out), *extra]
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", WRAPPER, *command], capture_output=True, text=True, check=False
    )
    seconds = time.monotonic() - start
    kib, rc = result.stdout.split()[-2:]
    if int(rc) != 0:
        print(result.stderr[-2000:], file=sys.stderr)
    return int(kib) / 1024, seconds, int(rc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m seq2seq.translation.memory_probe", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--beam-size", type=int, default=1)
    parser.add_argument("--cli", default="seq2seq.translation.cli", help="module, or a .py file")
    parser.add_argument("extra", nargs="*", help="more arguments for the CLI (after --)")
    args = parser.parse_args(argv)
    words = source_words(args.checkpoint)
    extra = ["--beam-size", str(args.beam_size), "--device", "cpu", *args.extra]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for n in args.sizes:
            mib, seconds, rc = peak_rss(args.cli, args.checkpoint, n, words, extra, Path(folder))
            rows.append(
                {"sentences": n, "peak_rss_mib": round(mib, 1), "seconds": round(seconds, 1), "rc": rc}
            )
            print(json.dumps(rows[-1]), flush=True)
    if len(rows) > 1:
        growth = rows[-1]["peak_rss_mib"] - rows[0]["peak_rss_mib"]
        print(f"peak RSS, largest minus smallest input: {growth:+.1f} MiB")
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
