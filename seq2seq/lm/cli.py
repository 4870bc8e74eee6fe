"""Generate or score text with a language-model checkpoint and nothing else.

    python -m seq2seq.lm.cli --checkpoint CKPT [--prompt "..."] [--num 5] [--max-len 50]
        [--temperature 1.0] [--top-k 0] [--seed 0] [--no-unk] [--output FILE [--overwrite]]
    python -m seq2seq.lm.cli --checkpoint CKPT --score "a sentence" [--score "another" ...]

Sampling is seed 002 Algorithm 8-1: start at <bos> with a zero state and draw each token from
p(z_t | z_<t) until <eos> (or --max-len new tokens). With --prompt the prompt runs through the
model first and sampling continues it. --temperature divides the logits (0: greedy, the same
every time), --top-k keeps the k likeliest tokens. One detokenized sample a line. With --score
each sentence gets a line ``LOGPROB<TAB>TOKENS<TAB>SENTENCE``: log P(sentence, <eos> | <bos>)
in nats and its number of tokens (<eos> included), e.g. to rank a recogniser's candidates. The
checkpoint is loaded with torch.load(weights_only=True). --output FILE writes the lines there
instead of stdout, whole or not at all; an existing FILE (without --overwrite) or a folder is refused
before any work (exit status 2).
"""

from __future__ import annotations

import argparse
import sys

from data.core.outputs import OutputError, check_output, write_lines
from seq2seq.lm.predictor import LanguageModelPredictor
from seq2seq.predictor import add_inference_arguments
from seq2seq.training.checkpoint import CheckpointError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seq2seq.lm.cli", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a .ckpt written by `python -m seq2seq fit`")
    parser.add_argument("--prompt", default="", help="text to continue (default: start at <bos>)")
    parser.add_argument("--num", type=int, default=5, help="number of samples")
    parser.add_argument("--max-len", type=int, default=50, help="at most this many new tokens a sample")
    parser.add_argument("--temperature", type=float, default=1.0, help="0: greedy")
    parser.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-unk", action="store_true", help="never sample <unk>")
    parser.add_argument(
        "--score", action="append", metavar="SENTENCE",
        help="print log P(SENTENCE) instead of sampling; may be given several times",
    )  # fmt: skip
    add_inference_arguments(parser)
    parser.add_argument("--output", metavar="FILE", help="write the lines to FILE (default: stdout)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    args = parser.parse_args(argv)
    if args.num < 1:
        parser.error(f"--num must be >= 1, got {args.num}")
    if args.max_len < 1:
        parser.error(f"--max-len must be >= 1, got {args.max_len}")
    if args.temperature < 0:
        parser.error(f"--temperature must be >= 0, got {args.temperature}")
    if args.top_k < 0:
        parser.error(f"--top-k must be >= 0, got {args.top_k}")
    try:
        if args.output:  # before any work
            check_output(args.output, overwrite=args.overwrite, inputs=[args.checkpoint])
        runner = LanguageModelPredictor.from_checkpoint(args.checkpoint, args.device, quantize=args.quantize)
        if args.score:
            scores = zip(args.score, runner.score(args.score))
            lines = [f"{logp:.4f}\t{n}\t{sentence}" for sentence, (logp, n) in scores]
        else:
            lines = runner.generate(
                num=args.num, prompt=args.prompt, max_len=args.max_len, temperature=args.temperature,
                top_k=args.top_k, seed=args.seed, allow_unk=not args.no_unk,
            )  # fmt: skip
        write_lines(lines, args.output, overwrite=args.overwrite, inputs=[args.checkpoint])
    except (CheckpointError, OutputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
