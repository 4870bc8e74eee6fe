"""Caption images with a checkpoint and nothing else.

    python -m captioning.captioner.cli --checkpoint CKPT [CKPT ...] IMG [IMG ...] [--beam-size 3 | --greedy]
        [--method greedy|beam|sample] [--max-len N] [--batch-size 16] [--device auto]
        [--attention-plot DIR] [--skip-bad] [--output FILE] [--overwrite]
        [--lm CKPT [--lm-weight W] [--lm-mode rescore|fusion]]

Prints `path<TAB>caption` a line per image, in input order (the caption's words joined by spaces;
an empty caption gives an empty field). The checkpoint (from `python -m captioning fit`) is all it
needs: see captioning/captioner/predictor.py for how it is loaded and how images are preprocessed.
Several checkpoints (each named *.ckpt) caption as an ensemble, one search over the log of their
mean word probability; --attention-plot draws the first model's attention. --lm CKPT adds a
language model of the captions' language: rescoring of the beam (default) or shallow fusion
(--lm-mode fusion, a word-level LM), with weight --lm-weight.

A bad image (missing, a directory, not an image) stops the run before anything is printed, with
`error: cannot read image PATH: ...` and exit status 2; with --skip-bad it is left out with a warning
on stderr and the others are captioned. --attention-plot DIR writes DIR/<image stem>.png per image
(the attention over the CNN's feature grid for every generated word; -2, -3, ... after a stem that
is already taken); it needs an attention (ShowAttendTell, model="attention") checkpoint: a ShowTell
checkpoint has no attention to plot and is refused before any work.

--output FILE writes the lines there instead of stdout, whole or not at all (a temporary file
renamed onto FILE at the end). Before any work, an output or plot that is an input image (or a link
to one), a folder, or a file that exists already is refused (exit status 2); --overwrite replaces
existing outputs and plots, never an input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from captioning.captioner.predictor import METHODS, Captioner, image_problem
from data.core.images import ImageFileError, load_rgb
from data.core.outputs import OutputError, atomic_path, check_output, write_lines
from data.core.parallel import DataError
from seq2seq.lm.rescoring import add_lm_arguments, lm_from_args
from seq2seq.predictor import add_inference_arguments
from seq2seq.training.checkpoint import CheckpointError, split_checkpoint_values


def plot_names(paths: Sequence[str]) -> list[str]:
    """One distinct <stem>.png per image; a name already given out gets -2, -3, ... after the stem."""
    names: list[str] = []
    for i, path in enumerate(paths):
        stem = Path(path).stem or f"image{i + 1}"
        name, k = f"{stem}.png", 1
        while name in names:
            k += 1
            name = f"{stem}-{k}.png"
        names.append(name)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m captioning.captioner.cli", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--checkpoint", required=True, nargs="+", metavar="CKPT",
        help="a .ckpt written by `seqcap fit` (several, each named *.ckpt: an ensemble)",
    )  # fmt: skip
    parser.add_argument("images", nargs="*", metavar="IMG", help="image files")
    parser.add_argument("--method", choices=METHODS, default="beam")
    parser.add_argument("--greedy", action="store_true", help="the same as --method greedy")
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument(
        "--max-len", type=int, default=None, help="most words a caption (default: the model's)"
    )
    parser.add_argument("--temperature", type=float, default=1.0, help="for --method sample")
    parser.add_argument("--seed", type=int, default=None, help="for --method sample: a reproducible draw")
    parser.add_argument("--batch-size", type=int, default=16)
    add_inference_arguments(parser)
    parser.add_argument(
        "--attention-plot", metavar="DIR",
        help="write DIR/<image stem>.png: the attention for every word (attention checkpoints only)",
    )  # fmt: skip
    parser.add_argument("--skip-bad", action="store_true", help="leave unreadable images out, with a warning")
    parser.add_argument("--output", metavar="FILE", help="write the captions to FILE (default: stdout)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output or plot")
    add_lm_arguments(parser)
    args = parser.parse_args(argv)
    args.checkpoint, more = split_checkpoint_values(args.checkpoint)
    args.images = more + args.images
    if not args.images:
        parser.error("the following arguments are required: IMG")
    method = "greedy" if args.greedy else args.method
    if args.greedy and args.method not in ("beam", "greedy"):
        parser.error(f"--greedy contradicts --method {args.method}")
    if args.beam_size < 1 or args.batch_size < 1:
        parser.error(f"--beam-size and --batch-size must be >= 1, got {args.beam_size} and {args.batch_size}")
    if args.max_len is not None and args.max_len < 1:
        parser.error(f"--max-len must be >= 1, got {args.max_len}")

    def warn(message: str) -> None:
        print(f"warning: {message}", file=sys.stderr)

    paths = list(args.images)
    try:  # every refusal comes before the checkpoint is loaded
        plot_dir = Path(args.attention_plot) if args.attention_plot else None
        if plot_dir is not None and plot_dir.exists() and not plot_dir.is_dir():
            raise OutputError(
                f"--attention-plot {plot_dir} exists and is not a folder; give a folder for the PNGs"
            )
        if args.output:
            check_output(args.output, overwrite=args.overwrite, inputs=paths)
        problems = [(i, image_problem(p)) for i, p in enumerate(paths)]
        bad = [(i, why) for i, why in problems if why is not None]
        if bad and not args.skip_bad:
            more = f" (and {len(bad) - 1} more bad images)" if len(bad) > 1 else ""
            raise ImageFileError(f"{bad[0][1]}{more}; --skip-bad leaves such images out")
        for _, why in bad:
            warn(f"skipping: {why}")
        todo = [i for i, why in problems if why is None]
        if not todo:
            raise ImageFileError("no readable image among the inputs")
        out = Path(args.attention_plot) if args.attention_plot else None
        plots = [out / name for name in plot_names(paths)] if out else []
        for i in todo if plots else []:  # nothing the user had is lost, an input image least of all
            check_output(
                plots[i],
                overwrite=args.overwrite,
                inputs=paths,
                option="--attention-plot",
                folder_may_be_new=True,
            )
        captioner = Captioner.from_checkpoint(args.checkpoint, args.device, quantize=args.quantize)
        captioner.use_lm(lm_from_args(args, captioner.device))
        if args.attention_plot and not captioner.has_attention:
            raise CheckpointError(
                f"{args.checkpoint[0]} is a {captioner.model_kind!r} (Show and Tell) model, which has no "
                "attention to plot: --attention-plot needs a model='attention' (Show, Attend and Tell) "
                "checkpoint"
            )

        def skip(error: ImageFileError) -> None:  # a file that passed the check but does not decode
            warn(f"skipping: {error}")

        captions = captioner.caption(
            [paths[i] for i in todo], method, args.beam_size, args.max_len,
            return_attention=bool(args.attention_plot), batch_size=args.batch_size,
            temperature=args.temperature, seed=args.seed, progress=len(todo) > args.batch_size,
            on_bad_image=skip if args.skip_bad else None,
        )  # fmt: skip
        lines = [f"{paths[i]}\t{c.text}" for i, c in zip(todo, captions) if c is not None]
        write_lines(lines, args.output, overwrite=args.overwrite, inputs=paths)
        if plot_dir is not None:
            write_plots(captions, todo, paths, plots, args.overwrite, warn)
    except (CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def write_plots(
    captions, todo: list[int], paths: list[str], plots: list[Path], overwrite: bool, warn
) -> None:
    """Each caption's attention overlay, written whole to its plot path (never onto an input)."""
    from seq2seq.training.plots import attention_overlay

    for i, c in zip(todo, captions):
        if c is None or c.attention is None:
            continue
        try:
            image = load_rgb(paths[i])
        except ImageFileError as e:  # changed since it was captioned
            warn(f"no attention plot: {e}")
            continue
        plots[i].parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(plots[i], overwrite=overwrite, inputs=paths, option="--attention-plot") as tmp:
            attention_overlay(image, c.tokens, c.attention, tmp, title=c.text)


if __name__ == "__main__":
    sys.exit(main())
