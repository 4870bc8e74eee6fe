"""Score a checkpoint on a test set: sacreBLEU (with its signature) and nltk corpus BLEU.

    python -m seq2seq.translation.evaluate --checkpoint CKPT [CKPT ...] --src FILE --ref FILE [--beam-size 5]
        [--workers 1]
        [--lm CKPT [--lm-weight W] [--lm-mode rescore|fusion]]
        [--images FILE --image-dir DIR [--skip-bad] [--shuffle-images SEED]] [--output FILE [--overwrite]]

Prints one JSON line: {"sacrebleu": ..., "signature": ..., "nltk_bleu": ..., "copy_sacrebleu": ...,
"sentences": ...}. Several checkpoints are scored as an ensemble, --lm adds a target-language
model (as in `seqcap translate`). copy_sacrebleu scores the source itself as the output (the
baseline to beat).
--output FILE writes the JSON line there instead, whole or not at all; an output that is an input,
a folder, or an existing file (without --overwrite) is refused before any work (exit status 2).

A multimodal checkpoint needs --images (one image file name a line, line i for pair i: the
Multi30k `{split}_images.txt`) and --image-dir. --skip-bad leaves pairs with a missing or
unreadable image out (the JSON counts them as "skipped"); --shuffle-images SEED permutes the images
among the sentences (incongruent images, Elliott 2018: a model that reads the image gets worse).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from data.core.images import ImageFileError, check_image
from data.core.outputs import atomic_output, check_output
from data.core.parallel import DataError, read_lines
from data.core.tokenizers import WordTokenizer
from seq2seq.lm.rescoring import add_lm_arguments, lm_from_args
from seq2seq.predictor import add_inference_arguments
from seq2seq.training.checkpoint import CheckpointError
from seq2seq.training.metrics import nltk_bleu, sacre_bleu
from seq2seq.translation.predictor import Translator
from seq2seq.workers import add_workers_argument, check_workers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m seq2seq.translation.evaluate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--checkpoint", required=True, nargs="+", metavar="CKPT", help="several: an ensemble")
    parser.add_argument("--src", required=True, help="source sentences, one a line")
    parser.add_argument("--ref", required=True, help="reference translations, line by line")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=0.6)
    parser.add_argument("--batch-size", type=int, default=64)
    add_inference_arguments(parser)
    add_workers_argument(parser)
    parser.add_argument("--images", help="image list, one file name a line (multimodal checkpoints)")
    parser.add_argument("--image-dir", default=".", help="folder the image names are relative to")
    parser.add_argument("--skip-bad", action="store_true", help="leave out pairs whose image is bad")
    parser.add_argument("--shuffle-images", type=int, metavar="SEED", help="permute the images (incongruent)")
    parser.add_argument("--output", metavar="FILE", help="write the JSON line to FILE (default: stdout)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    add_lm_arguments(parser)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    skipped = 0
    inputs = [args.src, args.ref, args.images]
    try:
        if args.output:  # before any work
            check_output(args.output, overwrite=args.overwrite, inputs=inputs)
        src, ref = read_lines(args.src), read_lines(args.ref)
        if len(src) != len(ref):
            raise DataError(f"{args.src} has {len(src)} lines but {args.ref} has {len(ref)}")
        translator = Translator.from_checkpoint(args.checkpoint, args.device, quantize=args.quantize)
        translator.use_lm(lm_from_args(args, translator.device))
        check_workers(args.workers, translator.device)
        images = None
        if translator.multimodal != (args.images is not None):
            raise DataError(
                "this checkpoint translates a sentence with its image: give --images FILE --image-dir DIR"
                if translator.multimodal
                else "this checkpoint is a text-only translator: drop --images"
            )
        if args.images is not None:
            names = read_lines(args.images)
            if len(names) != len(src):
                raise DataError(f"{args.images} has {len(names)} lines but {args.src} has {len(src)}")
            images = [Path(args.image_dir) / n.strip() for n in names]
            keep = []
            for number, path in enumerate(images, start=1):
                problem = check_image(path)
                if problem is not None and not args.skip_bad:
                    raise ImageFileError(f"{args.images}, line {number}: {problem}; --skip-bad leaves it out")
                if problem is not None:
                    print(f"warning: {args.images}, line {number}: {problem}; pair left out", file=sys.stderr)
                else:
                    keep.append(number - 1)
            skipped = len(src) - len(keep)
            src, ref, images = [src[i] for i in keep], [ref[i] for i in keep], [images[i] for i in keep]
            if args.shuffle_images is not None:
                random.Random(args.shuffle_images).shuffle(images)
        hyps = [t[0].text for t in translator.translate(
            src, args.beam_size, args.alpha, batch_size=args.batch_size,
            progress=len(src) > args.batch_size, images=images, workers=args.workers,
        )]  # fmt: skip
        bleu, signature = sacre_bleu(hyps, ref)
        copy, _ = sacre_bleu(src, ref)
        tok = WordTokenizer(kind="toktok")
        nltk4 = nltk_bleu([tok.tokenize(h) for h in hyps], [[tok.tokenize(r)] for r in ref])["bleu4"]
        line = json.dumps({
            "sacrebleu": round(bleu, 2), "signature": signature, "nltk_bleu": round(nltk4, 2),
            "copy_sacrebleu": round(copy, 2), "sentences": len(src), "beam_size": args.beam_size,
            **({"checkpoints": len(args.checkpoint)} if len(args.checkpoint) > 1 else {}),
            **({"lm_weight": args.lm_weight, "lm_mode": args.lm_mode} if args.lm else {}),
            **({"skipped": skipped, "shuffle_images": args.shuffle_images} if args.images else {}),
        }) + "\n"  # fmt: skip
        if args.output:
            with atomic_output(args.output, overwrite=args.overwrite, inputs=inputs) as f:
                f.write(line)
        else:
            sys.stdout.write(line)
    except (CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
