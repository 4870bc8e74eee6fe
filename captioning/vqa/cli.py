"""Answer questions about an image with a VQA checkpoint and nothing else.

    python -m captioning.vqa.cli --checkpoint CKPT [CKPT ...] IMAGE "what colour is the star?"
        ["how many ..." ...] [--top 5] [--attention-plot DIR] [--output FILE] [--overwrite] [--device auto]

Prints, per question, the question and its `--top` answers with their probabilities (softmax over
the model's K answers), most likely first::

    what colour is the star?
      0.981  red
      0.012  orange

The checkpoint (from `python -m captioning fit -c configs/vqa/...`) holds the CNN, the VQA network
and both vocabularies. Several checkpoints (each named *.ckpt) answer as an ensemble: the mean of
their answer probabilities (plots: the first model's attention). A question word the model never saw
is read as `<unk>` (a warning on stderr names it) and the question still gets an answer; an empty
question (no word at all) is refused. An image that cannot be read is named (`error: cannot read
image PATH: ...`, exit status 2) before any model work. --attention-plot DIR writes DIR/<image
stem>-q<N>.png per question: each hop's attention over the CNN grid, drawn on the image (attention
checkpoints only).

--output FILE writes the answers there instead of stdout, whole or not at all (a temporary file
renamed onto FILE at the end). Before any work, an output or plot that is an input (the image, or
a link to it), a folder, or a file that exists already is refused (exit status 2); --overwrite
replaces existing outputs and plots, never an input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from captioning.captioner.predictor import image_problem
from captioning.vqa.predictor import Answerer, check_questions
from data.core.images import ImageFileError
from data.core.outputs import OutputError, atomic_path, check_output, write_lines
from data.core.parallel import DataError
from seq2seq.predictor import add_inference_arguments
from seq2seq.training.checkpoint import CheckpointError, split_checkpoint_values

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m captioning.vqa.cli", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--checkpoint", required=True, nargs="+", metavar="CKPT",
        help="a .ckpt from `seqcap fit -c configs/vqa/...` (several, each named *.ckpt: an ensemble)",
    )  # fmt: skip
    parser.add_argument(
        "arguments", nargs="*", metavar="IMAGE QUESTION", help="an image file, then questions"
    )
    parser.add_argument("--top", type=int, default=5, help="answers shown per question")
    add_inference_arguments(parser)
    parser.add_argument(
        "--attention-plot", metavar="DIR",
        help="write DIR/<image stem>-q<N>.png: each hop's attention (attention checkpoints only)",
    )  # fmt: skip
    parser.add_argument("--output", metavar="FILE", help="write the answers to FILE (default: stdout)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output or plot")
    args = parser.parse_args(argv)
    args.checkpoint, more = split_checkpoint_values(args.checkpoint)
    positional = more + args.arguments
    if len(positional) < 2:
        parser.error("the following arguments are required: IMAGE QUESTION [QUESTION ...]")
    args.image, args.questions = positional[0], positional[1:]
    if args.top < 1:
        parser.error(f"--top must be >= 1, got {args.top}")
    stem = Path(args.image).stem or "image"
    out = Path(args.attention_plot) if args.attention_plot else None
    plots = [out / f"{stem}-q{n + 1}.png" for n in range(len(args.questions))] if out else []
    inputs = [args.image]
    try:  # every refusal comes before the checkpoint is loaded
        check_questions(args.questions)
        if out is not None and out.exists() and not out.is_dir():
            raise OutputError(
                f"--attention-plot {out} exists and is not a folder; give a folder for the PNGs"
            )
        if args.output:
            check_output(args.output, overwrite=args.overwrite, inputs=inputs)
        problem = image_problem(args.image)
        if problem is not None:
            raise ImageFileError(problem)
        for png in plots:
            check_output(
                png,
                overwrite=args.overwrite,
                inputs=inputs,
                option="--attention-plot",
                folder_may_be_new=True,
            )
        answerer = Answerer.from_checkpoint(args.checkpoint, args.device, quantize=args.quantize)
        if args.attention_plot and not answerer.has_attention:
            kind = answerer.model_kind
            raise CheckpointError(
                f"{args.checkpoint[0]} is a {kind!r} model, which has no attention to plot: "
                "--attention-plot needs a model='attention' checkpoint"
            )
        answers = answerer.answer(args.image, args.questions, top=args.top)
        lines = []
        for a in answers:
            if a.unknown:
                print(f"warning: {a.question!r}: words the model never saw, read as <unk>: "
                      f"{', '.join(a.unknown)}", file=sys.stderr)  # fmt: skip
            lines.append(a.question)
            lines.extend(f"  {p:.3f}  {text}" for text, p in a.top)
        write_lines(lines, args.output, overwrite=args.overwrite, inputs=inputs)
        if args.attention_plot:
            from seq2seq.training.plots import attention_overlay

            out.mkdir(parents=True, exist_ok=True)
            for a, png in zip(answers, plots):
                hops = [f"hop {k + 1}" for k in range(a.attention.shape[0])]
                answer, p = a.top[0]
                with atomic_path(
                    png, overwrite=args.overwrite, inputs=inputs, option="--attention-plot"
                ) as tmp:
                    attention_overlay(args.image, hops, a.attention, tmp, title=f"answer: {answer} ({p:.2f})")
                print(f"attention plot for {a.question!r}: {png}", file=sys.stderr)
    except (CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
