"""Captioner: a captioning checkpoint with its vocabulary and preprocessing, images in, captions out.

    captioner = Captioner.from_checkpoint(CKPT, device="auto")
    captioner.caption([IMG, ...], method="beam", beam_size=3) -> [Caption(source, tokens, text, score), ...]

The checkpoint (from `python -m captioning fit`) is loaded with torch.load(weights_only=True); it
holds the CNN's weights, the decoder's and the vocabulary, so no dataset and no network are needed.
Images get the training pipeline's preprocessing (data.core.images.default_transform at the
checkpoint's image_size and the mean/std the trained CNN expects; a datamodule given a custom
transform in its config is not recorded in the checkpoint).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from data.core.caption_sources import TOKENIZER_NAME
from data.core.images import ImageFileError, check_image, default_transform, load_rgb
from seq2seq.modules.pretrained import input_normalization
from seq2seq.training.checkpoint import CheckpointError, build_from_hparams, load_checkpoint, resolve_device

__all__ = ["Caption", "Captioner", "image_problem", "load_captioning_checkpoint"]

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
    if "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
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
    """CaptioningModule from the checkpoint's hyperparameters and weights, with its vocabulary,
    without fetching any pretrained weights: the checkpoint's state dict holds the CNN's."""
    from captioning.captioner.module import CaptioningModule

    module = build_from_hparams(CaptioningModule, ckpt, path, pretrained=False, weights_path=None)
    try:
        module.on_load_checkpoint(ckpt)  # the vocabulary, as Lightning restores it
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: cannot load its vocabulary ({type(e).__name__}: {e})") from None
    return module


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
        self.device = resolve_device(device)
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
