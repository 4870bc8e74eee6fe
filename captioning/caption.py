"""Caption images with a checkpoint and nothing else.

    python -m captioning.caption --checkpoint CKPT IMG [IMG ...] [--beam-size 3 | --greedy]
        [--method greedy|beam|sample] [--max-len N] [--batch-size 16] [--device auto]
        [--attention-plot DIR] [--skip-bad]

Prints `path<TAB>caption` a line per image, in input order (the caption's words joined by spaces;
an empty caption gives an empty field). The checkpoint (from `python -m captioning fit`) is loaded
with torch.load(weights_only=True); it holds the CNN's weights, the decoder's and the vocabulary, so
no dataset and no network are needed. Images get the training pipeline's preprocessing
(data.captions.default_transform at the checkpoint's image_size and the backbone's mean/std; a
datamodule given a custom transform in its config is not recorded in the checkpoint).

A bad image (missing, a directory, not an image) stops the run before anything is printed, with
`error: cannot read image PATH: ...` and exit status 2; with --skip-bad it is left out with a warning
on stderr and the others are captioned. --attention-plot DIR writes DIR/<image stem>.png per image
(the attention over the CNN's feature grid for every generated word; -2, -3, ... after a stem that
is already taken); it needs an attention (ShowAttendTell, model="attention") checkpoint: a ShowTell
checkpoint has no attention to plot and is refused before any work, and so is a plot file that
exists already (nothing the user has is overwritten).
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from data.captions import TOKENIZER_NAME, ImageFileError, check_image, default_transform, load_rgb
from data.parallel import DataError
from seq2seq.translate import CheckpointError, load_checkpoint

from .encoders import input_normalization

__all__ = ["Caption", "Captioner", "CheckpointError", "image_problem", "load_captioning_checkpoint"]

METHODS = ("greedy", "beam", "sample")
DEFAULT_IMAGE_SIZE = 224  # checkpoints written before "image_size" went into checkpoint["seqcap"]


@dataclass
class Caption:
    """One image's caption: its source (the path as given, or "<image N>" for a PIL image), the
    words (no specials; "<unk>" may occur), the text (words joined by spaces), the search score
    and, when asked of an attention model, the attention (len(tokens), HW) on the CPU."""

    source: str
    tokens: list[str]
    text: str
    score: float
    attention: Tensor | None = None


def image_problem(path: str | Path) -> str | None:
    """A cheap check of one image file (no full decode): None when it looks fine, else
    'cannot read image PATH: why'."""
    path = Path(path)
    if not path.exists():
        return f"cannot read image {path}: no such file"
    if path.is_dir():
        return f"cannot read image {path}: it is a directory"
    problem = check_image(path)
    if problem is None or problem.startswith("cannot read image"):
        return problem
    return f"cannot read image {path}: {problem}"


def load_captioning_checkpoint(path: str | Path) -> dict:
    """torch.load(weights_only=True) of a `python -m captioning fit` checkpoint, checked: a
    CheckpointError naming the file for anything else (a translation or LM checkpoint, a state
    dict, a file that is not a torch file, ...)."""
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise CheckpointError(f"{path}: not a Lightning checkpoint written by `python -m captioning fit`")
    meta = ckpt.get("seqcap")
    if not isinstance(meta, dict) or not isinstance(meta.get("vocab"), list):
        what = (
            "a translation checkpoint" if isinstance(meta, dict) and "src_vocab" in meta else "no vocabulary"
        )
        raise CheckpointError(
            f"{path}: not a seqcap captioning checkpoint ({what}; expected checkpoint['seqcap']['vocab'] "
            "as written by `python -m captioning fit`)"
        )
    hparams = ckpt["hyper_parameters"]
    if (
        not isinstance(hparams, dict)
        or "vocab_size" not in hparams
        or hparams.get("model") not in ("showtell", "attention")
        or not any(k.startswith("encoder.cnn.") for k in ckpt["state_dict"])
    ):
        kind = hparams.get("model") if isinstance(hparams, dict) else None
        raise CheckpointError(
            f"{path}: holds no captioning model (model={kind!r}, expected 'showtell' or 'attention' with "
            "CNN weights under encoder.cnn.; a translation or language model checkpoint?)"
        )
    return ckpt


def _build_module(ckpt: dict, path: str | Path):
    """CaptioningModule from the checkpoint's hyperparameters (unknown keys left out), without
    fetching any pretrained weights: the checkpoint's state dict holds the CNN's."""
    from .module import CaptioningModule

    accepted = inspect.signature(CaptioningModule.__init__).parameters
    hparams = {k: v for k, v in dict(ckpt["hyper_parameters"]).items() if k in accepted and k != "self"}
    hparams.update(pretrained=False, weights_path=None)
    try:
        module = CaptioningModule(**hparams)
        module.load_state_dict(ckpt["state_dict"])
        module._set_vocab_state(ckpt["seqcap"])
    except (TypeError, ValueError, RuntimeError, KeyError) as e:
        raise CheckpointError(
            f"{path}: cannot rebuild its captioning model ({type(e).__name__}: {e})"
        ) from None
    return module


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Captioner:
    """A CaptioningModule (CNN + ShowTell / ShowAttendTell) with its vocabulary and preprocessing:
    images in, captions out."""

    def __init__(
        self,
        module,
        image_size: int = DEFAULT_IMAGE_SIZE,
        device: str | torch.device = "cpu",
        normalization: tuple[Sequence[float], Sequence[float]] | None = None,
    ):
        """normalization: the (mean, std) the CNN was trained with (default: its encoder's)."""
        if module.vocab is None:
            raise ValueError("the module has no vocabulary (load it from a checkpoint)")
        self.device = _resolve_device(device)
        self.module = module.to(self.device).eval()
        self.vocab = module.vocab
        self.image_size = int(image_size)
        mean, std = normalization or (module.encoder.mean, module.encoder.std)
        self.transform = default_transform(self.image_size, mean, std)
        self.checkpoint: str | None = None

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "auto") -> Captioner:
        """Everything from the checkpoint file; CheckpointError naming it if it is not usable."""
        ckpt = load_captioning_checkpoint(path)
        module = _build_module(ckpt, path)
        meta = ckpt["seqcap"]
        tokenizer = meta.get("tokenizer", TOKENIZER_NAME)
        if tokenizer != TOKENIZER_NAME:
            raise CheckpointError(
                f"{path}: captions tokenized by {tokenizer!r}, this code knows {TOKENIZER_NAME!r}"
            )
        # rebuilt without loading pretrained weights, the encoder would pick their default mean/std:
        # the images are normalised as for the CNN that was trained (the checkpoint's hyperparameters)
        hp = ckpt["hyper_parameters"]
        normalization = input_normalization(
            hp.get("backbone", "efficientnet_lite0"), hp.get("pretrained", True), hp.get("weights_path")
        )
        captioner = cls(module, int(meta.get("image_size") or DEFAULT_IMAGE_SIZE), device, normalization)
        captioner.checkpoint = str(path)
        return captioner

    @property
    def model_kind(self) -> str:
        """ "showtell" or "attention" (the module's `model` hyperparameter)."""
        return self.module.hparams.model

    @property
    def has_attention(self) -> bool:
        return self.model_kind == "attention"

    @property
    def max_len(self) -> int:
        """The decoding limit the model was validated with (the module's max_len)."""
        return int(self.module.hparams.max_len)

    def _load(self, image, index: int) -> tuple[Tensor, str]:
        if isinstance(image, Image.Image):
            return self.transform(image.convert("RGB")), f"<image {index}>"
        return self.transform(load_rgb(image)), str(image)

    @torch.inference_mode()
    def caption(
        self,
        images: Sequence[str | Path | Image.Image],
        method: str = "beam",
        beam_size: int = 3,
        max_len: int | None = None,
        return_attention: bool = False,
        batch_size: int = 16,
        temperature: float = 1.0,
        seed: int | None = None,
        progress: bool = False,
        on_bad_image: Callable[[ImageFileError], None] | None = None,
    ) -> list[Caption | None]:
        """One Caption per image, in input order; images are paths or PIL images.

        method: greedy, beam (beam_size) or sample (temperature; seed for a reproducible draw);
        max_len defaults to the module's. return_attention needs an attention model (ValueError
        otherwise). A file that cannot be read raises ImageFileError naming it, unless
        on_bad_image is given: then it is called with the error and the image's entry is None.
        """
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if beam_size < 1 or batch_size < 1:
            raise ValueError(f"beam_size and batch_size must be >= 1, got {beam_size} and {batch_size}")
        if return_attention and not self.has_attention:
            raise ValueError(
                f"a {self.model_kind!r} model has no attention: return_attention needs a "
                "ShowAttendTell (model='attention') checkpoint"
            )
        max_len = self.max_len if max_len is None else int(max_len)
        generator = None
        if method == "sample" and seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(seed)
        results: list[Caption | None] = [None] * len(images)
        starts = range(0, len(images), batch_size)
        bar = tqdm(starts, desc="captioning", unit="batch", disable=not progress, file=sys.stderr)
        for start in bar:
            pixels, where, sources = [], [], []
            for i in range(start, min(start + batch_size, len(images))):
                try:
                    tensor, source = self._load(images[i], i)
                except ImageFileError as e:
                    if on_bad_image is None:
                        raise
                    on_bad_image(e)
                    continue
                pixels.append(tensor)
                where.append(i)
                sources.append(source)
            if not pixels:
                continue
            features = self.module.encoder(torch.stack(pixels).to(self.device))
            hyps = self.module.model.caption(
                features, method=method, beam_size=beam_size, max_len=max_len, temperature=temperature,
                generator=generator, return_attention=return_attention,
            )  # fmt: skip
            for i, source, options in zip(where, sources, hyps):
                best = options[0]
                tokens = self.vocab.decode(best.tokens)
                attention = best.attention.float().cpu() if best.attention is not None else None
                results[i] = Caption(source, tokens, " ".join(tokens), float(best.score), attention)
        return results


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
    parser = argparse.ArgumentParser(prog="python -m captioning.caption", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a .ckpt written by `python -m captioning fit`")
    parser.add_argument("images", nargs="+", metavar="IMG", help="image files")
    parser.add_argument("--method", choices=METHODS, default="beam")
    parser.add_argument("--greedy", action="store_true", help="the same as --method greedy")
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument(
        "--max-len", type=int, default=None, help="most words a caption (default: the model's)"
    )
    parser.add_argument("--temperature", type=float, default=1.0, help="for --method sample")
    parser.add_argument("--seed", type=int, default=None, help="for --method sample: a reproducible draw")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--attention-plot", metavar="DIR",
        help="write DIR/<image stem>.png: the attention for every word (attention checkpoints only)",
    )  # fmt: skip
    parser.add_argument("--skip-bad", action="store_true", help="leave unreadable images out, with a warning")
    args = parser.parse_args(argv)
    method = "greedy" if args.greedy else args.method
    if args.greedy and args.method not in ("beam", "greedy"):
        parser.error(f"--greedy contradicts --method {args.method}")
    if args.beam_size < 1 or args.batch_size < 1:
        parser.error(f"--beam-size and --batch-size must be >= 1, got {args.beam_size} and {args.batch_size}")
    if args.max_len is not None and args.max_len < 1:
        parser.error(f"--max-len must be >= 1, got {args.max_len}")
    if args.attention_plot and Path(args.attention_plot).exists() and not Path(args.attention_plot).is_dir():
        parser.error(f"--attention-plot {args.attention_plot} exists and is not a folder")

    def warn(message: str) -> None:
        print(f"warning: {message}", file=sys.stderr)

    paths = list(args.images)
    try:
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
        taken = [str(plots[i]) for i in todo if plots and plots[i].exists()]
        if taken:  # nothing the user had is overwritten, an input image least of all
            more = f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""
            raise DataError(
                f"--attention-plot {args.attention_plot}: {taken[0]} exists{more}; "
                "choose a new or empty folder for the plots"
            )
        captioner = Captioner.from_checkpoint(args.checkpoint, args.device)
        if args.attention_plot and not captioner.has_attention:
            raise CheckpointError(
                f"{args.checkpoint} is a {captioner.model_kind!r} (Show and Tell) model, which has no "
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
    except (CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    lines = [f"{paths[i]}\t{c.text}" for i, c in zip(todo, captions) if c is not None]
    sys.stdout.write("".join(line + "\n" for line in lines))
    sys.stdout.flush()
    if args.attention_plot:
        from .visualize import attention_overlay

        for i, c in zip(todo, captions):
            if c is None or c.attention is None:
                continue
            try:
                attention_overlay(load_rgb(paths[i]), c.tokens, c.attention, plots[i], title=c.text)
            except ImageFileError as e:  # changed since it was captioned
                warn(f"no attention plot: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
