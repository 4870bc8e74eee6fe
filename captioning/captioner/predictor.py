"""Captioner: a captioning checkpoint with its vocabulary and preprocessing, images in, captions out.

    captioner = Captioner.from_checkpoint(CKPT, device="auto")   # or Predictor.from_checkpoint
    captioner.caption([IMG, ...], method="beam", beam_size=3) -> [Caption(source, tokens, text, score), ...]

The checkpoint (from `seqcap fit -c configs/captioning/...`) is loaded with torch.load(weights_only=True);
it holds the CNN's weights, the decoder's and the vocabulary, so no dataset and no network are needed.
The CNN (ImageEncoder) and the decoder (ShowTell / ShowAttendTell) are rebuilt from the saved
hyperparameters, not through the training module. Images get the training pipeline's preprocessing
(seq2seq.predictor.image_transform: the checkpoint's image size and the mean/std its CNN was trained
with; a datamodule given a custom transform in its config is not recorded in the checkpoint).
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

from captioning.captioner.network import CAPTION_SEARCH, ShowAttendTell, ShowTell
from data.core.caption_sources import TOKENIZER_NAME
from data.core.images import ImageFileError, check_image, load_rgb
from data.core.vocab import BOS, EOS, PAD, Vocabulary
from seq2seq import combine, search
from seq2seq.modules.vision import ImageEncoder
from seq2seq.predictor import Predictor, image_transform
from seq2seq.search import SearchOptions
from seq2seq.training.checkpoint import CheckpointError, build_from_hparams, load_checkpoint, saved_options

__all__ = ["Caption", "Captioner", "image_problem", "load_captioning_checkpoint"]

METHODS = ("greedy", "beam", "sample")


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
    """torch.load(weights_only=True) of a captioning checkpoint, checked (check_captioning_checkpoint)."""
    return check_captioning_checkpoint(load_checkpoint(path), path)


def check_captioning_checkpoint(ckpt: dict, path: str | Path) -> dict:
    """`ckpt` when it holds a captioning model; else a CheckpointError naming the file and what it
    holds instead (a translation or LM checkpoint, a state dict, ...)."""
    if "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise CheckpointError(f"{path}: not a Lightning checkpoint written by `seqcap fit`")
    meta = ckpt.get("seqcap")
    if not isinstance(meta, dict) or not isinstance(meta.get("vocab"), list):
        what = (
            "a translation checkpoint" if isinstance(meta, dict) and "src_vocab" in meta else "no vocabulary"
        )
        raise CheckpointError(
            f"{path}: not a seqcap captioning checkpoint ({what}; expected checkpoint['seqcap']['vocab'] "
            "as written by `seqcap fit -c configs/captioning/...`)"
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


class Captioner(Predictor):
    """A CNN (ImageEncoder) and a ShowTell / ShowAttendTell decoder with their vocabulary and image
    preprocessing: images in, captions out."""

    task = "captioning"

    def __init__(
        self,
        encoder: ImageEncoder,
        model: ShowTell | ShowAttendTell,
        vocab: Vocabulary,
        transform,
        max_len: int = 20,
        device: str | torch.device = "cpu",
    ):
        """transform: PIL image -> (3, H, W) normalised as the CNN was trained; max_len: the default
        decoding limit (the one the model was validated with)."""
        self.device = torch.device(device)
        self.encoder = encoder.to(self.device).eval()
        self.model = model.to(self.device).eval()
        self.vocab = vocab
        self.transform = transform
        self.max_len = int(max_len)
        self.checkpoint: str | None = None
        self.members: list[Captioner] = [self]  # an ensemble's models (join), this one first
        self.lm = None  # a seq2seq.lm.rescoring.LanguageModelScoring (use_lm)

    @classmethod
    def from_loaded(cls, ckpt: dict, path: str | Path, device: torch.device, **options) -> Captioner:
        """The networks rebuilt from the checkpoint's hyperparameters and weights; no pretrained
        weights are fetched (the state dict holds the CNN's)."""
        check_captioning_checkpoint(ckpt, path)
        meta, hp = ckpt["seqcap"], ckpt["hyper_parameters"]
        tokenizer = meta.get("tokenizer", TOKENIZER_NAME)
        if tokenizer != TOKENIZER_NAME:
            raise CheckpointError(
                f"{path}: captions tokenized by {tokenizer!r}, this code knows {TOKENIZER_NAME!r}"
            )
        kind = hp["model"]
        encoder = build_from_hparams(
            ImageEncoder, ckpt, path, prefix="encoder.", pretrained=False, weights_path=None,
            output="global" if kind == "showtell" else "grid", embed_dim=None,
        )  # fmt: skip
        network = ShowTell if kind == "showtell" else ShowAttendTell
        model = build_from_hparams(network, ckpt, path, prefix="model.", feature_dim=encoder.feature_dim)
        vocab = Vocabulary.from_list(meta["vocab"])
        max_len = saved_options(SearchOptions, hp, "search", CAPTION_SEARCH).max_len or CAPTION_SEARCH.max_len
        return cls(encoder, model, vocab, image_transform(ckpt), max_len, device)

    @property
    def model_kind(self) -> str:
        """ "showtell" or "attention"."""
        return "showtell" if isinstance(self.model, ShowTell) else "attention"

    @property
    def has_attention(self) -> bool:
        return self.model_kind == "attention"

    def join(self, others: list[Captioner]) -> None:
        """An ensemble of this captioner and `others` (same vocabulary, checked by from_checkpoint):
        one search over the log of their mean word probability, each model with its own CNN and
        preprocessing; attention is this model's (an attention captioner's, when it is first)."""
        self.members = [self, *others]

    def use_lm(self, lm) -> None:
        """Caption with a language model of the captions' language (seq2seq.lm.rescoring; None:
        without): rescoring of the beam, or shallow fusion (checked against the caption words)."""
        if lm is not None:
            lm.bind(self.vocab, None, "the captions")
        self.lm = lm

    def _load(self, image, index: int) -> tuple[Image.Image, str]:
        if isinstance(image, Image.Image):
            return image.convert("RGB"), f"<image {index}>"
        return load_rgb(image), str(image)

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
        max_len defaults to the checkpoint's. return_attention needs an attention model (ValueError
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
        rescoring = method == "beam" and self.lm is not None and self.lm.mode == "rescore" and self.lm.weight
        options = SearchOptions(
            method=method, beam_size=beam_size, max_len=max_len, temperature=temperature,
            n_best=beam_size if rescoring else 1,
        )  # fmt: skip
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
                    rgb, source = self._load(images[i], i)
                except ImageFileError as e:
                    if on_bad_image is None:
                        raise
                    on_bad_image(e)
                    continue
                pixels.append(rgb)
                where.append(i)
                sources.append(source)
            if not pixels:
                continue
            hyps = self._search(pixels, options, generator, return_attention)
            for i, source, found in zip(where, sources, hyps):
                if rescoring:
                    found = self._rescore(found, options.alpha)
                best = found[0]
                tokens = self.vocab.decode(best.tokens)
                attention = best.attention.float().cpu() if best.attention is not None else None
                results[i] = Caption(source, tokens, " ".join(tokens), float(best.score), attention)
        return results

    def _search(self, images: list[Image.Image], options: SearchOptions, generator, return_attention: bool):
        """Decodes a batch of RGB images with every model of the ensemble (and the LM in fusion
        mode): per image its hypotheses."""
        starts = []
        for member in self.members:
            pixels = torch.stack([member.transform(rgb) for rgb in images]).to(self.device)
            features = member.encoder(pixels)
            starts.append((member.model.step, member.model.init_state(features)))
        step, state = combine.ensemble(starts)
        if self.lm is not None and self.lm.mode == "fusion" and self.lm.weight != 0:
            step, state = combine.fuse((step, state), self.lm.fusion_start(len(images)), self.lm.weight)
        return search.decode(
            step, state, len(images), bos=BOS, eos=EOS, search=options, max_len=options.max_len,
            generator=generator, return_attention=return_attention, banned=(PAD, BOS),
        )  # fmt: skip

    def _rescore(self, hyps: list, alpha: float) -> list:
        """The beam's list reordered by (log P + W log P_lm) / lp (seq2seq.lm.rescoring)."""
        texts = [" ".join(self.vocab.decode(h.tokens)) for h in hyps]
        scores = self.lm.rescore(texts, [h.score for h in hyps], [len(h.tokens) for h in hyps], alpha)
        for h, score in zip(hyps, scores):
            h.score = score
        return sorted(hyps, key=lambda h: h.score, reverse=True)
