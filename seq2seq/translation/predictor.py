"""Translator: a Seq2Seq checkpoint with its vocabularies and tokenizers, raw text in, raw text out.

The inference API behind `seqcap translate` and `seqcap evaluate` (and the quickstart), loaded by
`Translator.from_checkpoint(path)` or `seq2seq.predictor.Predictor.from_checkpoint(path)`. With an
attention model an <unk> in the output becomes the source word it attends to most
(`replace_unknowns`, seq2seq/translation/unknowns.py, also used by TranslationModule's validation).

A multimodal checkpoint (fusion other than "none") also holds its CNN: `translate` then takes one
image a sentence (paths, PIL images, or precomputed grid features), preprocessed as in training.

Several checkpoints (`Translator.from_checkpoint([A, B])`) translate as an ensemble: one beam search
over the log of the models' mean probability (seq2seq.combine.ensemble), each model with its own
CNN for a multimodal ensemble; attention (plots, <unk> replacement) is the first model's.
`use_lm` adds a target-language model (seq2seq.lm.rescoring): n-best rescoring or shallow fusion.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from PIL import Image
from tqdm import tqdm

from data.core.images import load_rgb
from data.core.parallel import DataError
from data.core.tokenizers import tokenizer_from_state
from data.core.vocab import BOS, EOS, Vocabulary
from seq2seq import combine, search
from seq2seq.modules.vision import ImageEncoder
from seq2seq.predictor import Predictor, image_transform
from seq2seq.search import SearchOptions
from seq2seq.training.checkpoint import CheckpointError, build_from_hparams, seqcap_state
from seq2seq.translation.network import BANNED, Seq2Seq, pad_batch
from seq2seq.translation.unknowns import replace_unknowns
from seq2seq.workers import map_in_workers, usable


def rgb_of(image: str | Path | Image.Image) -> Image.Image:
    """A PIL image as RGB, or the file at a path read as RGB (ImageFileError naming a bad file)."""
    return image.convert("RGB") if isinstance(image, Image.Image) else load_rgb(image)


@dataclass
class Translation:
    text: str
    score: float
    tokens: list[str]
    attention: torch.Tensor | None = None  # (T, S) over the source
    image_attention: torch.Tensor | None = None  # (T, R) over the image grid (flat, doubly fusion)


class Translator(Predictor):
    """A Seq2Seq with its vocabularies and tokenizers: raw text in, raw text out."""

    task = "translation"

    def __init__(
        self,
        model: Seq2Seq,
        vocab_state: dict,
        device: str | torch.device = "cpu",
        unk_replace: bool = True,
        image_encoder: ImageEncoder | None = None,
        image_transform=None,
    ):
        """image_encoder and image_transform (PIL image -> (3, H, W)): a multimodal model's CNN."""
        self.unk_replace = unk_replace
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.image_encoder = None if image_encoder is None else image_encoder.to(device).eval()
        self.image_transform = image_transform
        self.src_vocab = Vocabulary.from_list(vocab_state["src_vocab"])
        self.tgt_vocab = Vocabulary.from_list(vocab_state["tgt_vocab"])
        self.src_tokenizer = tokenizer_from_state(vocab_state["src_tokenizer"])
        self.tgt_tokenizer = tokenizer_from_state(vocab_state["tgt_tokenizer"])
        self.max_len = int(vocab_state.get("max_len", 100))
        self.tgt_tokenizer_state = vocab_state["tgt_tokenizer"]
        self.members: list[Translator] = [self]  # an ensemble's models (join), this one first
        self.lm = None  # a LanguageModelScoring (use_lm)

    @classmethod
    def from_loaded(
        cls, ckpt: dict, path: str | Path, device: torch.device, unk_replace: bool = True
    ) -> Translator:
        """The Seq2Seq (and a multimodal model's CNN) rebuilt from the checkpoint's hyperparameters
        and weights; no pretrained weights are fetched (the state dict holds the CNN's)."""
        vocab_state = seqcap_state(ckpt, path, "src_vocab", "translation model")
        hp = ckpt.get("hyper_parameters") or {}
        if hp.get("fusion", "none") == "none":
            model = build_from_hparams(Seq2Seq, ckpt, path, prefix="model.")
            return cls(model, vocab_state, device, unk_replace)
        encoder = build_from_hparams(
            ImageEncoder, ckpt, path, prefix="image_encoder.", pretrained=False, weights_path=None,
            output="grid", embed_dim=None,
        )  # fmt: skip
        model = build_from_hparams(Seq2Seq, ckpt, path, prefix="model.", image_size=encoder.feature_dim)
        return cls(model, vocab_state, device, unk_replace, encoder, image_transform(ckpt))

    def join(self, others: list[Translator]) -> None:
        """An ensemble of this translator and `others` (same vocabularies, checked by
        from_checkpoint): all text-only or all multimodal."""
        for other in others:
            if other.multimodal != self.multimodal:
                kinds = {True: "multimodal", False: "text-only"}
                raise CheckpointError(
                    f"{other.checkpoint}: a {kinds[other.multimodal]} translator, but {self.checkpoint} is "
                    f"{kinds[self.multimodal]}: an ensemble's models read the same inputs"
                )
        self.members = [self, *others]

    def use_lm(self, lm) -> None:
        """Decode with a target-language model (a seq2seq.lm.rescoring.LanguageModelScoring; None:
        without): rescoring of the n-best list, or shallow fusion (checked against the target
        vocabulary's tokenizer here)."""
        if lm is not None:
            lm.bind(self.tgt_vocab, self.tgt_tokenizer_state)
        self.lm = lm

    @property
    def multimodal(self) -> bool:
        return self.image_encoder is not None

    @torch.inference_mode()
    def image_features(
        self, paths: list[str | Path | Image.Image], batch_size: int = 64, progress: bool = False
    ):
        """The CNN's grid features of each image (a path or a PIL image): (N, R, C) on the CPU;
        ImageFileError naming a bad file."""
        if not self.multimodal:
            raise DataError("this checkpoint is a text-only translator (fusion none): it takes no images")
        chunks = [paths[k : k + batch_size] for k in range(0, len(paths), batch_size)]
        out = []
        for chunk in tqdm(chunks, desc="CNN features", unit="batch", disable=not progress, file=sys.stderr):
            pixels = torch.stack([self.image_transform(rgb_of(p)) for p in chunk]).to(self.device)
            out.append(self.image_encoder(pixels).float().cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def encode(self, sentence: str) -> tuple[list[int], list[str], bool]:
        """-> ids, tokens (both cut to max_len) and whether the sentence was truncated."""
        tokens = self.src_tokenizer.tokenize(sentence)
        cut = len(tokens) > self.max_len
        tokens = tokens[: self.max_len]
        return self.src_vocab.encode(tokens), tokens, cut

    @torch.inference_mode()
    def translate(
        self,
        sentences: list[str],
        beam_size: int = 5,
        alpha: float = 0.6,
        n_best: int = 1,
        batch_size: int = 64,
        return_attention: bool = False,
        progress: bool = False,
        warn=None,
        images: list[str | Path | Image.Image | None] | None = None,
        features: torch.Tensor | None = None,
        first_line: int = 1,
        method: Literal["beam", "greedy"] = "beam",
        workers: int = 1,
    ) -> list[list[Translation]]:
        """One list of n_best translations per sentence, in input order (empty in, empty out).
        A multimodal model takes one image a sentence: `images` (paths or PIL images; None for an
        empty one) or
        their `features`
        (N, R, C), e.g. from the feature cache; with attention fusion a Translation has its
        attention over the image grid too (image_attention, (T, R)). A warning names sentence i as
        line first_line + i (a caller that translates a file in chunks passes the chunk's first line).
        method "greedy" takes the likeliest word at every step (beam_size, alpha and n_best unused).
        workers > 1 decodes the batches in that many forked processes of one thread each, on the CPU
        (seq2seq/workers.py): the same translations, more sentences/s on several cores."""
        if self.multimodal and images is None and features is None:
            raise DataError("this checkpoint translates a sentence with its image: give one image a sentence")
        if not self.multimodal and (images is not None or features is not None):
            raise DataError("this checkpoint is a text-only translator (fusion none): it takes no images")
        if images is not None and any(p is None and s.strip() for p, s in zip(images, sentences)):
            raise DataError("a sentence without its image: give one image a sentence")
        if features is not None and len(features) != len(sentences):
            n, m = len(features), len(sentences)
            raise DataError(f"{n} images for {m} sentences: give one image a sentence")
        if images is not None and len(images) != len(sentences):
            n, m = len(images), len(sentences)
            raise DataError(f"{n} images for {m} sentences: give one image a sentence")
        if method not in ("beam", "greedy"):
            raise ValueError(f"method must be 'beam' or 'greedy', got {method!r}")
        # each model of an ensemble sees the images through its own CNN (given features: all the same)
        member_features = [features] * len(self.members)
        if images is not None:
            member_features = [m._features_of(images, batch_size, progress) for m in self.members]
        rescoring = self.lm is not None and self.lm.mode == "rescore" and self.lm.weight != 0
        if method == "greedy":
            search_options, n_best, rescoring = SearchOptions(method="greedy"), 1, False
        else:
            search_options = SearchOptions(
                method="beam", beam_size=beam_size, alpha=alpha, n_best=beam_size if rescoring else n_best
            )
        encoded = [self.encode(s) for s in sentences]
        for i, (_, _, cut) in enumerate(encoded):
            if cut and warn is not None:
                warn(
                    f"line {first_line + i}: {len(self.src_tokenizer.tokenize(sentences[i]))} tokens, "
                    f"truncated to the model's maximum of {self.max_len}"
                )
        results: list[list[Translation]] = [[Translation("", 0.0, [])] * n_best for _ in sentences]
        todo = sorted((i for i, (ids, _, _) in enumerate(encoded) if ids), key=lambda i: len(encoded[i][0]))
        batches = [todo[k : k + batch_size] for k in range(0, len(todo), batch_size)]
        workers = usable(workers, self.device)
        if workers > 1:
            batches.reverse()  # the longest first: no worker is left with a long batch at the end

        @torch.inference_mode()  # in a forked worker too
        def run(batch: list[int]) -> list[list[Translation]]:
            src, lengths = pad_batch([encoded[i][0] for i in batch])
            src, lengths = src.to(self.device), lengths.to(self.device)
            hyps = self._search(src, lengths, member_features, batch, search_options, return_attention)
            return [
                self._translations(
                    options,
                    encoded[i],
                    features=member_features[0],
                    alpha=alpha,
                    rescore_to=n_best if rescoring else None,
                )  # fmt: skip
                for i, options in zip(batch, hyps)
            ]

        done = map_in_workers(run, batches, workers)
        bar = tqdm(
            total=len(batches), desc="translating", unit="batch", disable=not progress, file=sys.stderr
        )
        with bar:
            for batch, translations in zip(batches, done):
                for i, options in zip(batch, translations):
                    results[i] = options
                bar.update()
        return results

    def _translations(
        self, hyps, encoded, *, features, alpha: float, rescore_to: int | None
    ) -> list[Translation]:
        """One sentence's hypotheses as Translations (its `encoded` ids and tokens); with
        `rescore_to`, the list rescored by the LM and cut to that many."""
        out = []
        for h in hyps:
            attention, image_attention = self._split_attention(h.attention, features)
            if attention is not None:  # (T, S) over this sentence's words, not the batch's padding;
                # copies: a view would keep (and a worker would pickle) the whole batch's history
                attention = attention[:, : len(encoded[0])].clone()
            if image_attention is not None:
                image_attention = image_attention.clone()
            tokens = self.tgt_vocab.decode(h.tokens)
            if self.unk_replace:
                tokens = replace_unknowns(tokens, attention, encoded[1])
            text = self.tgt_tokenizer.detokenize(tokens)
            out.append(Translation(text, h.score, tokens, attention, image_attention))
        return out if rescore_to is None else self._rescore(out, hyps, alpha)[:rescore_to]

    def _search(self, src, lengths, member_features, batch, search_options, return_attention):
        """Beam search over the batch (B, S) with every model of the ensemble (and the LM in
        fusion mode) -> per sentence its hypotheses."""
        starts = []
        for member, features in zip(self.members, member_features):
            image = None if features is None else features[batch].to(self.device)
            starts.append(member.model.decoding_start(src, lengths, image))
        step, state = combine.ensemble(starts)
        if self.lm is not None and self.lm.mode == "fusion" and self.lm.weight != 0:
            step, state = combine.fuse((step, state), self.lm.fusion_start(len(batch)), self.lm.weight)
        return search.decode(
            step, state, len(batch), bos=BOS, eos=EOS, search=search_options,
            max_len=Seq2Seq.max_len(lengths, search_options),
            return_attention=return_attention or self.unk_replace, banned=BANNED,
        )  # fmt: skip

    def _rescore(self, translations: list[Translation], hyps, alpha: float) -> list[Translation]:
        """The beam's list reordered by (log P_tm + W log P_lm) / lp (seq2seq.lm.rescoring)."""
        scores = self.lm.rescore(
            [t.text for t in translations],
            [t.score for t in translations],
            [len(h.tokens) for h in hyps],
            alpha,
        )
        for t, score in zip(translations, scores):
            t.score = score
        return sorted(translations, key=lambda t: t.score, reverse=True)

    def _features_of(self, images: list, batch_size: int, progress: bool):
        """This model's CNN features (N, R, C) of `images` (None for an empty sentence: zeros)."""
        given = [i for i, p in enumerate(images) if p is not None]
        if not given:
            return torch.zeros(len(images), 1, 1)  # every sentence empty
        found = self.image_features([images[i] for i in given], batch_size, progress)
        features = found.new_zeros(len(images), *found.shape[1:])
        features[given] = found
        return features

    def _split_attention(self, attention, features):
        """(T, S + R) attention over source and image -> the source's (T, S), the regions' (T, R)."""
        if attention is None or features is None or self.model.decoder.fusion not in ("flat", "doubly"):
            return attention, None
        R = features.shape[1]
        return attention[:, :-R], attention[:, -R:]
