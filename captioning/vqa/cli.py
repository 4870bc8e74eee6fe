"""Answer questions about an image with a VQA checkpoint and nothing else.

    python -m captioning.vqa.cli --checkpoint CKPT IMAGE "what colour is the star?" ["how many ..." ...]
        [--top 5] [--attention-plot DIR] [--device auto]

Prints, per question, the question and its `--top` answers with their probabilities (softmax over
the model's K answers), most likely first::

    what colour is the star?
      0.981  red
      0.012  orange

The checkpoint (from `python -m captioning fit -c configs/vqa/...`) holds the CNN, the VQA network
and both vocabularies. A question word the model never saw is read as `<unk>` (a warning on stderr
names it) and the question still gets an answer. An image that cannot be read is named
(`error: cannot read image PATH: ...`, exit status 2) before any model work. --attention-plot DIR
writes DIR/<image stem>-q<N>.png per question: each hop's attention over the CNN grid, drawn on the
image (attention checkpoints only; a file already there is never overwritten).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from captioning.captioner.predictor import image_problem
from captioning.vqa.predictor import Answerer
from data.core.images import ImageFileError
from data.core.parallel import DataError
from seq2seq.training.checkpoint import CheckpointError

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m captioning.vqa.cli", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a .ckpt from `python -m captioning fit` (VQA)")
    parser.add_argument("image", metavar="IMAGE", help="an image file")
    parser.add_argument("questions", nargs="+", metavar="QUESTION", help="questions about the image")
    parser.add_argument("--top", type=int, default=5, help="answers shown per question")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--attention-plot", metavar="DIR",
        help="write DIR/<image stem>-q<N>.png: each hop's attention (attention checkpoints only)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error(f"--top must be >= 1, got {args.top}")
    if args.attention_plot and Path(args.attention_plot).exists() and not Path(args.attention_plot).is_dir():
        parser.error(f"--attention-plot {args.attention_plot} exists and is not a folder")
    stem = Path(args.image).stem or "image"
    out = Path(args.attention_plot) if args.attention_plot else None
    plots = [out / f"{stem}-q{n + 1}.png" for n in range(len(args.questions))] if out else []
    try:
        problem = image_problem(args.image)
        if problem is not None:
            raise ImageFileError(problem)
        taken = [str(p) for p in plots if p.exists()]
        if taken:  # nothing the user had is overwritten
            raise DataError(f"--attention-plot {args.attention_plot}: {taken[0]} exists; choose a new folder")
        answerer = Answerer.from_checkpoint(args.checkpoint, args.device)
        if args.attention_plot and not answerer.has_attention:
            kind = answerer.model_kind
            raise CheckpointError(
                f"{args.checkpoint} is a {kind!r} model, which has no attention to plot: "
                "--attention-plot needs a model='attention' checkpoint"
            )
        answers = answerer.answer(args.image, args.questions, top=args.top)
    except (CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for a in answers:
        if a.unknown:
            print(f"warning: {a.question!r}: words the model never saw, read as <unk>: "
                  f"{', '.join(a.unknown)}", file=sys.stderr)  # fmt: skip
        print(a.question)
        for text, p in a.top:
            print(f"  {p:.3f}  {text}")
    if args.attention_plot:
        from seq2seq.training.plots import attention_overlay

        for a, png in zip(answers, plots):
            hops = [f"hop {k + 1}" for k in range(a.attention.shape[0])]
            answer, p = a.top[0]
            attention_overlay(args.image, hops, a.attention, png, title=f"answer: {answer} ({p:.2f})")
            print(f"attention plot for {a.question!r}: {png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
