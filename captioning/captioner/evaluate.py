"""Score a captioning checkpoint on a split: the COCO caption metrics against all references.

    python -m captioning.captioner.evaluate --checkpoint CKPT --data SOURCE [--image-root DIR] [--split test]
        [--beam-size 3 | --greedy] [--limit N] [--max-len N] [--batch-size 16] [--device auto] [--skip-bad]
        [--output FILE [--overwrite]] [--lm CKPT [--lm-weight W] [--lm-mode rescore|fusion]]

Several --checkpoint files are scored as an ensemble; --lm adds a language model of the captions'
language (as in `seqcap caption`).

SOURCE is any file data.datamodules.captions reads (Karpathy JSON: its --split images; COCO annotation JSON or
image_path<TAB>caption TSV: all its images, counted as --split). Prints one JSON line:
{"bleu1": .., "bleu2": .., "bleu3": .., "bleu4": .., "meteor": .., "rouge_l": .., "cider": ..,
"nltk_bleu1" .. "nltk_bleu4": .., "images": N, "split": "test", "method": "beam", "beam_size": 3}
(beam_size null with --greedy; "meteor": "needs java" without a Java runtime on PATH). The scores
are on the 0-100 scale, computed by the one function CaptioningModule's validation and test use
(captioning.captioner.metrics.caption_metrics: pycocoevalcap's scorers, CIDEr-D with the document
frequencies of this split's references; nltk corpus BLEU beside them), the references of an image
being all its tokenized captions (untruncated; a caption with no token is left out), the hypotheses
decoded with the checkpoint's own vocabulary ("<unk>" included). --limit N scores the first N images
of the split (file order).

A bad image stops the run with `error: cannot read image PATH: ...` (exit 2); --skip-bad leaves such
images out with a warning and "skipped": K in the JSON.

--output FILE writes the JSON line there instead, whole or not at all; an output that is an input,
a folder, or an existing file (without --overwrite) is refused before any work (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import sys

from captioning.captioner.metrics import METEOR_MISSING, caption_metrics
from captioning.captioner.predictor import Captioner, image_problem
from data.core.caption_sources import CaptionImage, read_source
from data.core.images import ImageFileError
from data.core.outputs import atomic_output, check_output
from data.core.parallel import DataError
from seq2seq.lm.rescoring import add_lm_arguments, lm_from_args
from seq2seq.predictor import add_inference_arguments
from seq2seq.training.checkpoint import CheckpointError


def split_images(
    source: str, image_root: str | None, split: str, limit: int | None = None
) -> list[CaptionImage]:
    """The images of `split` in `source` with at least one non-empty caption (empty ones dropped),
    the first `limit` of them; DataError if none."""
    images = []
    for image in read_source(source, image_root, split):
        if image.split != split:
            continue
        keep = [k for k, c in enumerate(image.captions) if c]
        if keep:
            image.captions = [image.captions[k] for k in keep]
            image.raw = [image.raw[k] for k in keep]
            images.append(image)
    if not images:
        raise DataError(f"{source}: no {split} images with captions")
    return images[:limit] if limit is not None else images


def score(
    captioner: Captioner,
    images: list[CaptionImage],
    method: str = "beam",
    beam_size: int = 3,
    max_len: int | None = None,
    batch_size: int = 16,
    progress: bool = False,
    on_bad_image=None,
) -> tuple[dict[str, float], list[list[str]], list[list[list[str]]]]:
    """Caption `images` and score them: (caption_metrics' scores, the hypotheses, their references).
    Images that on_bad_image skips (see Captioner.caption) are left out of all three."""
    captions = captioner.caption(
        [im.path for im in images], method, beam_size, max_len, batch_size=batch_size,
        progress=progress, on_bad_image=on_bad_image,
    )  # fmt: skip
    kept = [(c, im) for c, im in zip(captions, images) if c is not None]
    if not kept:
        raise DataError("no image could be captioned")
    hyps = [c.tokens for c, _ in kept]
    refs = [im.captions for _, im in kept]
    return caption_metrics(hyps, refs), hyps, refs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m captioning.captioner.evaluate", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--checkpoint", required=True, nargs="+", metavar="CKPT",
        help="a .ckpt written by `seqcap fit` (several: an ensemble)",
    )  # fmt: skip
    parser.add_argument(
        "--data", required=True, metavar="SOURCE", help="Karpathy JSON, COCO annotation JSON or TSV"
    )
    parser.add_argument(
        "--image-root", default=None, help="folder image paths are relative to (default: SOURCE's)"
    )
    parser.add_argument("--split", choices=("train", "val", "test"), default="test")
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--greedy", action="store_true", help="greedy decoding instead of beam search")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="score the first N images only")
    parser.add_argument(
        "--max-len", type=int, default=None, help="most words a caption (default: the model's)"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    add_inference_arguments(parser)
    parser.add_argument("--skip-bad", action="store_true", help="leave unreadable images out, with a warning")
    parser.add_argument("--output", metavar="FILE", help="write the JSON line to FILE (default: stdout)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    add_lm_arguments(parser)
    args = parser.parse_args(argv)
    if args.beam_size < 1 or args.batch_size < 1:
        parser.error(f"--beam-size and --batch-size must be >= 1, got {args.beam_size} and {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be >= 1, got {args.limit}")
    if args.max_len is not None and args.max_len < 1:
        parser.error(f"--max-len must be >= 1, got {args.max_len}")
    method = "greedy" if args.greedy else "beam"
    skipped = 0

    def skip(problem: str | Exception) -> None:
        nonlocal skipped
        skipped += 1
        print(f"warning: skipping: {problem}", file=sys.stderr)

    try:
        if args.output:  # before any work
            check_output(args.output, overwrite=args.overwrite, inputs=[args.data])
        images = split_images(args.data, args.image_root, args.split, args.limit)
        good = []
        for image in images:  # fail fast, before the model runs
            problem = image_problem(image.path)
            if problem is None:
                good.append(image)
            elif args.skip_bad:
                skip(problem)
            else:
                raise ImageFileError(f"{problem} (listed in {args.data}); --skip-bad leaves such images out")
        if not good:
            raise DataError(f"{args.data}: no readable {args.split} image")
        if args.output:  # an image listed in the source is an input too
            check_output(args.output, overwrite=args.overwrite, inputs=[im.path for im in images])
        captioner = Captioner.from_checkpoint(args.checkpoint, args.device, quantize=args.quantize)
        captioner.use_lm(lm_from_args(args, captioner.device))
        scores, hyps, _ = score(
            captioner, good, method, args.beam_size, args.max_len, args.batch_size,
            progress=len(good) > args.batch_size, on_bad_image=skip if args.skip_bad else None,
        )  # fmt: skip
        result = {key: METEOR_MISSING if scores[key] is None else round(scores[key], 4) for key in scores}
        result.update(images=len(hyps), split=args.split, method=method)
        result["beam_size"] = args.beam_size if method == "beam" else None
        if args.skip_bad:
            result["skipped"] = skipped
        if args.output:
            with atomic_output(args.output, overwrite=args.overwrite, inputs=[args.data]) as f:
                f.write(json.dumps(result) + "\n")
        else:
            print(json.dumps(result))
    except (CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
