"""Translate raw sentences with a checkpoint and nothing else.

    python -m seq2seq.translation.cli --checkpoint CKPT [CKPT ...] [--beam-size 5] [--alpha 0.6]
        [--n-best 1] [--input FILE] [--output FILE] [--overwrite] [--batch-size 64] [--chunk-size 1000]
        [--workers 1]
        [--attention-plot DIR] [--image-dir DIR] [--skip-bad] [--lm CKPT [--lm-weight W] [--lm-mode M]]

Reads one sentence a line (stdin by default; UTF-8, a line that is not is an error naming it),
writes detokenized translations in input order (stdout by default). The input is read, translated
and written --chunk-size lines at a time, so memory stays flat however long the input is (within
a chunk, sentences are batched by length as before; the output is the same for any chunk size).
An empty line gives an empty line; a sentence longer than the model's maximum length is
truncated with a warning on stderr. With --n-best N > 1 each input gives N lines
`INDEX ||| TRANSLATION ||| SCORE`.

Several checkpoints translate as an ensemble (one beam search over the log of the models' mean
probability; they must share vocabularies, the error names the first difference); attention
(plots, <unk> replacement) is the first model's. --lm CKPT adds a language model of the target
language (seq2seq.lm.rescoring): --lm-mode rescore (default) reorders the whole beam by
(log P_tm + W log P_lm) / lp and prints its --n-best; --lm-mode fusion adds W log p_lm to every
step of the search (the LM must tokenize as the target side does). With an attention model, an
<unk> in the output is replaced by the source word it attends to most (--no-unk-replace keeps
it). The checkpoint is loaded with weights_only=True.

A multimodal checkpoint (trained with an image `fusion`) reads `IMAGE<TAB>SENTENCE` lines, IMAGE
relative to --image-dir (default: the current folder); a missing or unreadable image is named
with its line, and --skip-bad writes an empty line for it instead (a warning on stderr says which).
--attention-plot DIR writes NNNNN.png (the source heatmap) and, for flat and doubly fusion,
NNNNN_image.png (where each output word looks in the image).

Nothing the user has is lost: --output is written to a temporary file beside it and renamed onto
it only when every line is translated (an error part-way leaves the old file as it was). Before any
work, an --output that is the --input file (or a link to it), a folder, or a file that exists
already is refused (exit status 2); --overwrite replaces an existing output. The same holds for a
plot folder that already holds NNNNN.png plots; an input is never overwritten, --overwrite or not.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from tqdm import tqdm

from data.core.images import ImageFileError, check_image
from data.core.outputs import OutputError, atomic_output, atomic_path, check_output
from data.core.parallel import DataError, iter_lines
from seq2seq.lm.rescoring import add_lm_arguments, lm_from_args
from seq2seq.predictor import add_inference_arguments
from seq2seq.training.checkpoint import CheckpointError
from seq2seq.translation.predictor import Translator
from seq2seq.workers import add_workers_argument, check_workers

PLOT_NAME = re.compile(r"\d{5,}(_image)?\.png")


def split_images(
    lines: list[str], image_dir: Path, skip_bad: bool, origin: str, warn, first_line: int = 1
) -> tuple[list, list]:
    """`IMAGE<TAB>SENTENCE` lines (the first is line first_line of origin) -> sentences and image
    paths (None where the line is empty or, with skip_bad, its image bad; its sentence is then "").
    DataError naming the line otherwise."""
    sentences, images = [], []
    for number, line in enumerate(lines, start=first_line):
        if not line.strip():
            sentences.append("")
            images.append(None)
            continue
        if "\t" not in line:
            raise DataError(
                f"{origin}, line {number}: expected IMAGE<TAB>SENTENCE (this checkpoint translates a "
                "sentence with its image)"
            )
        name, sentence = line.split("\t", 1)
        path = image_dir / name.strip()
        problem = check_image(path)
        if problem is not None:
            if not skip_bad:
                raise ImageFileError(f"{origin}, line {number}: {problem}; --skip-bad goes on without it")
            warn(f"line {number}: {problem}; skipped (empty output line)")
            sentence, path = "", None
        sentences.append(sentence)
        images.append(path)
    return sentences, images


def check_plot_folder(folder: str | Path, overwrite: bool) -> Path:
    """The --attention-plot folder, refused (OutputError) when it is a file, or when it already
    holds NNNNN.png plots and overwrite is not set; nothing is created here."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"--attention-plot {folder} exists and is not a folder; give a folder for the PNGs")
    if folder.is_dir() and not overwrite:
        taken = sorted(p.name for p in folder.iterdir() if PLOT_NAME.fullmatch(p.name))
        if taken:
            more = f" and {len(taken) - 1} more" if len(taken) > 1 else ""
            raise OutputError(
                f"--attention-plot {folder} already holds attention plots ({folder / taken[0]}{more}); "
                "choose a new or empty folder, or pass --overwrite to replace them"
            )
    return folder


def chunked(lines: Iterator[str], size: int) -> Iterator[list[str]]:
    """Lists of `size` consecutive lines (the last one shorter), read as they are needed."""
    while chunk := list(itertools.islice(lines, size)):
        yield chunk


def write_plot(draw: Callable[[Path], object], path: Path, overwrite: bool, inputs: list) -> None:
    """draw(temporary path) writes a PNG, which then replaces `path` whole (never an input)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, overwrite=overwrite, inputs=inputs, option="--attention-plot") as tmp:
        draw(tmp)


def translate_stream(translator: Translator, lines: Iterator[str], out, args, origin: str, warn) -> int:
    """Translate `lines` --chunk-size at a time, writing each chunk's output lines (and plots) to
    `out` before the next chunk is read; returns the number of lines translated."""
    plot_dir = Path(args.attention_plot) if args.attention_plot else None
    if plot_dir is not None:  # matplotlib is imported only when plots are asked for
        from seq2seq.training.plots import attention_heatmap, attention_overlay
    inputs = [args.input] if args.input else []
    done, bar = 0, None
    for chunk in chunked(lines, args.chunk_size):
        first = done + 1
        images: list = [None] * len(chunk)
        if translator.multimodal:
            chunk, images = split_images(chunk, Path(args.image_dir), args.skip_bad, origin, warn, first)
        else:
            tabbed = next((n for n, line in enumerate(chunk, start=first) if "\t" in line), None)
            if tabbed is not None:
                raise DataError(
                    f"{origin}, line {tabbed}: a tab, but this checkpoint is a text-only translator "
                    "(fusion none): give one plain sentence a line"
                )
        if bar is None and done == 0 and len(chunk) > args.batch_size:
            bar = tqdm(desc="translating", unit="sentence", file=sys.stderr)
        results = translator.translate(
            chunk, args.beam_size, args.alpha, args.n_best, args.batch_size,
            return_attention=plot_dir is not None, warn=warn,
            images=images if translator.multimodal else None, first_line=first, workers=args.workers,
        )  # fmt: skip
        text = []
        for k, options in enumerate(results):
            i = done + k
            if args.n_best == 1:
                text.append(options[0].text)
            else:
                text.extend(f"{i} ||| {t.text} ||| {t.score:.4f}" for t in options)
            best = options[0]
            if plot_dir is not None and best.attention is not None and best.tokens:
                src_tokens = translator.encode(chunk[k])[1]
                title = f"line {i + 1}"
                write_plot(
                    lambda tmp, best=best, src_tokens=src_tokens, title=title: attention_heatmap(
                        best.attention, src_tokens, best.tokens, tmp, title=title
                    ),
                    plot_dir / f"{i + 1:05d}.png", args.overwrite, inputs,
                )  # fmt: skip
                if best.image_attention is not None:
                    write_plot(
                        lambda tmp, best=best, image=images[k], title=title: attention_overlay(
                            image, best.tokens, best.image_attention, tmp, title=title
                        ),
                        plot_dir / f"{i + 1:05d}_image.png", args.overwrite, [*inputs, images[k]],
                    )  # fmt: skip
        out.write("".join(line + "\n" for line in text))
        out.flush()
        done += len(chunk)
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m seq2seq.translation.cli", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--checkpoint", required=True, nargs="+", metavar="CKPT",
        help="a .ckpt written by `seqcap fit` (several: an ensemble)",
    )  # fmt: skip
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=0.6, help="GNMT length penalty")
    parser.add_argument("--n-best", type=int, default=1)
    parser.add_argument("--input", help="file with one sentence a line (default: stdin)")
    parser.add_argument("--output", help="file to write, whole once every line is done (default: stdout)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --output (and --attention-plot PNGs)"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--chunk-size", type=int, default=1000, metavar="N",
        help="read, translate and write N lines at a time (memory stays flat; same output)",
    )  # fmt: skip
    parser.add_argument("--attention-plot", metavar="DIR", help="write an attention heatmap PNG per sentence")
    add_inference_arguments(parser)
    add_workers_argument(parser)
    parser.add_argument("--image-dir", default=".", help="folder of the IMAGE names (multimodal)")
    parser.add_argument("--skip-bad", action="store_true", help="go on past a missing or unreadable image")
    parser.add_argument(
        "--no-unk-replace", action="store_true",
        help="keep <unk> in the output instead of copying the source word it attends to most",
    )  # fmt: skip
    add_lm_arguments(parser)
    args = parser.parse_args(argv)
    if args.beam_size < 1 or not 1 <= args.n_best <= args.beam_size:
        parser.error(
            f"need --beam-size >= 1 and 1 <= --n-best <= --beam-size, got {args.beam_size}, {args.n_best}"
        )
    if args.batch_size < 1 or args.chunk_size < 1 or args.workers < 1:
        parser.error(
            "--batch-size, --chunk-size and --workers must be >= 1, "
            f"got {args.batch_size}, {args.chunk_size}, {args.workers}"
        )
    origin = args.input or "<stdin>"

    def warn(message: str) -> None:
        print(f"warning: {origin}, {message}", file=sys.stderr)

    inputs = [args.input] if args.input else []
    try:  # every refusal comes before the checkpoint is loaded or a line is translated
        if args.output:
            check_output(args.output, overwrite=args.overwrite, inputs=inputs)
        if args.attention_plot:
            check_plot_folder(args.attention_plot, args.overwrite)
        if args.input and not Path(args.input).is_file():
            raise DataError(f"{args.input}: no such file")
        translator = Translator.from_checkpoint(
            args.checkpoint, args.device, quantize=args.quantize, unk_replace=not args.no_unk_replace
        )
        translator.use_lm(lm_from_args(args, translator.device))
        check_workers(args.workers, translator.device)
        with contextlib.ExitStack() as stack:
            stream = stack.enter_context(open(args.input, "rb")) if args.input else sys.stdin.buffer
            out = sys.stdout
            if args.output:
                out = stack.enter_context(atomic_output(args.output, overwrite=args.overwrite, inputs=inputs))
            translate_stream(translator, iter_lines(stream, origin), out, args, origin, warn)
    except (CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
