"""Score a checkpoint on a test set: sacreBLEU (with its signature) and nltk corpus BLEU.

    python -m seq2seq.evaluate --checkpoint CKPT --src FILE --ref FILE [--beam-size 5]

Prints one JSON line: {"sacrebleu": ..., "signature": ..., "nltk_bleu": ..., "copy_sacrebleu": ...,
"sentences": ...}. copy_sacrebleu scores the source itself as the output (the baseline to beat).
"""

from __future__ import annotations

import argparse
import json
import sys

from data.parallel import DataError, read_lines
from data.tokenizers import WordTokenizer

from .checkpoint import CheckpointError
from .metrics import nltk_bleu, sacre_bleu
from .translator import Translator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seq2seq.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--src", required=True, help="source sentences, one a line")
    parser.add_argument("--ref", required=True, help="reference translations, line by line")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=0.6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    try:
        src, ref = read_lines(args.src), read_lines(args.ref)
        if len(src) != len(ref):
            raise DataError(f"{args.src} has {len(src)} lines but {args.ref} has {len(ref)}")
        translator = Translator.from_checkpoint(args.checkpoint, args.device)
    except (CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    hyps = [t[0].text for t in translator.translate(
        src, args.beam_size, args.alpha, batch_size=args.batch_size, progress=len(src) > args.batch_size,
    )]  # fmt: skip
    bleu, signature = sacre_bleu(hyps, ref)
    copy, _ = sacre_bleu(src, ref)
    tok = WordTokenizer(kind="toktok")
    nltk4 = nltk_bleu([tok.tokenize(h) for h in hyps], [[tok.tokenize(r)] for r in ref])["bleu4"]
    print(json.dumps({
        "sacrebleu": round(bleu, 2), "signature": signature, "nltk_bleu": round(nltk4, 2),
        "copy_sacrebleu": round(copy, 2), "sentences": len(src), "beam_size": args.beam_size,
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
