"""Translate raw sentences with a checkpoint and nothing else.

    python -m seq2seq.translation.cli --checkpoint CKPT [--beam-size 5] [--alpha 0.6] [--n-best 1]
        [--input FILE] [--output FILE] [--batch-size 64] [--attention-plot DIR]
        [--image-dir DIR] [--skip-bad]

Reads one sentence a line (stdin by default), writes detokenized translations in input order
(stdout by default). An empty line gives an empty line; a sentence longer than the model's
maximum length is truncated with a warning on stderr. With --n-best N > 1 each input gives N
lines `INDEX ||| TRANSLATION ||| SCORE`. With an attention model, an <unk> in the output is
replaced by the source word it attends to most (--no-unk-replace keeps it). The checkpoint is
loaded with weights_only=True.

A multimodal checkpoint (trained with an image `fusion`) reads `IMAGE<TAB>SENTENCE` lines, IMAGE
relative to --image-dir (default: the current folder); a missing or unreadable image is named
with its line, and --skip-bad writes an empty line for it instead (a warning on stderr says which).
--attention-plot DIR writes NNNNN.png (the source heatmap) and, for flat and doubly fusion,
NNNNN_image.png (where each output word looks in the image).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data.core.images import ImageFileError, check_image
from data.core.parallel import DataError, read_lines
from seq2seq.training.checkpoint import CheckpointError
from seq2seq.training.plots import attention_heatmap, attention_overlay
from seq2seq.translation.predictor import Translator


def split_images(lines: list[str], image_dir: Path, skip_bad: bool, origin: str, warn) -> tuple[list, list]:
    """`IMAGE<TAB>SENTENCE` lines -> sentences and image paths (None where the line is empty or,
    with skip_bad, its image bad; its sentence is then ""). DataError naming the line otherwise."""
    sentences, images = [], []
    for number, line in enumerate(lines, start=1):
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m seq2seq.translation.cli", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--checkpoint", required=True, help="a .ckpt written by `python -m seq2seq fit`")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=0.6, help="GNMT length penalty")
    parser.add_argument("--n-best", type=int, default=1)
    parser.add_argument("--input", help="file with one sentence a line (default: stdin)")
    parser.add_argument("--output", help="file to write (default: stdout)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--attention-plot", metavar="DIR", help="write an attention heatmap PNG per sentence")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--image-dir", default=".", help="folder of the IMAGE names (multimodal)")
    parser.add_argument("--skip-bad", action="store_true", help="go on past a missing or unreadable image")
    parser.add_argument(
        "--no-unk-replace", action="store_true",
        help="keep <unk> in the output instead of copying the source word it attends to most",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.beam_size < 1 or not 1 <= args.n_best <= args.beam_size:
        parser.error(
            f"need --beam-size >= 1 and 1 <= --n-best <= --beam-size, got {args.beam_size}, {args.n_best}"
        )
    if args.output and args.input and Path(args.output).resolve() == Path(args.input).resolve():
        parser.error("--output must not be the --input file: it would overwrite your input")

    def warn(message: str) -> None:
        print(f"warning: {args.input or 'stdin'}, {message}", file=sys.stderr)

    try:
        translator = Translator.from_checkpoint(
            args.checkpoint, args.device, unk_replace=not args.no_unk_replace
        )
        lines = read_lines(args.input) if args.input else sys.stdin.read().splitlines()
        origin = args.input or "stdin"
        images: list = [None] * len(lines)
        if translator.multimodal:
            lines, images = split_images(lines, Path(args.image_dir), args.skip_bad, origin, warn)
        else:
            tabbed = next((n for n, line in enumerate(lines, start=1) if "\t" in line), None)
            if tabbed is not None:
                raise DataError(
                    f"{origin}, line {tabbed}: a tab, but this checkpoint is a text-only translator "
                    "(fusion none): give one plain sentence a line"
                )
        results = translator.translate(
            lines, args.beam_size, args.alpha, args.n_best, args.batch_size,
            return_attention=bool(args.attention_plot), progress=len(lines) > args.batch_size, warn=warn,
            images=images if translator.multimodal else None,
        )  # fmt: skip
    except (CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = []
    for i, options in enumerate(results):
        if args.n_best == 1:
            out.append(options[0].text)
        else:
            out.extend(f"{i} ||| {t.text} ||| {t.score:.4f}" for t in options)
        if args.attention_plot and options[0].attention is not None and options[0].tokens:
            src_tokens = translator.encode(lines[i])[1]
            attention_heatmap(
                options[0].attention, src_tokens, options[0].tokens,
                Path(args.attention_plot) / f"{i + 1:05d}.png", title=f"line {i + 1}",
            )  # fmt: skip
            if options[0].image_attention is not None:
                attention_overlay(
                    images[i], options[0].tokens, options[0].image_attention,
                    Path(args.attention_plot) / f"{i + 1:05d}_image.png", title=f"line {i + 1}",
                )  # fmt: skip
    text = "\n".join(out) + ("\n" if out else "")
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
