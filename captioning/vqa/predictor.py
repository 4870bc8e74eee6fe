"""Answerer: a VQA checkpoint with its vocabularies and image preprocessing, (image, questions) in,
answers out.

    answerer = Answerer.from_checkpoint(CKPT, device="auto")   # or Predictor.from_checkpoint
    answerer.answer(IMAGE, ["what colour is the star?", ...], top=5)
        -> [Answer(question, top, unknown, attention), ...]

The CNN (ImageEncoder) and the VQA network (VQANet) are rebuilt from the checkpoint's
hyperparameters and weights, not through the training module; images get the checkpoint's image
size and normalisation (seq2seq.predictor.image_transform). A question word the model never saw is
read as <unk> and listed in the Answer's `unknown`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from captioning.vqa.network import VQANet
from data.core.images import load_rgb
from data.core.parallel import DataError
from data.core.vocab import Vocabulary
from data.core.vqa import TOKENIZER_NAME, pad_questions, tokenize_question
from seq2seq.modules.vision import ImageEncoder
from seq2seq.predictor import Predictor, image_transform
from seq2seq.training.checkpoint import CheckpointError, build_from_hparams

__all__ = ["Answer", "Answerer"]


def check_questions(questions: list[str]) -> None:
    """DataError (a ValueError) naming the first question without a word (empty, spaces or
    punctuation only), or when there is no question at all."""
    if isinstance(questions, str) or not questions:
        raise DataError("give a list of one or more questions, e.g. ['what colour is the star?']")
    for n, question in enumerate(questions, start=1):
        if not tokenize_question(question):
            raise DataError(
                f"question {n} ({question!r}) is empty: ask something about the image, "
                "e.g. 'what colour is the star?'"
            )


@dataclass
class Answer:
    """One question's answers: (answer, probability) pairs, most likely first; the question words
    the model never saw; and for an attention model the weights of each hop (hops, R) on the CPU."""

    question: str
    top: list[tuple[str, float]]
    unknown: list[str]
    attention: Tensor | None = None


class Answerer(Predictor):
    """A CNN and a VQANet with their vocabularies and preprocessing: (image, questions) in, answers out."""

    task = "vqa"

    def __init__(
        self,
        encoder: ImageEncoder,
        model: VQANet,
        vocab: Vocabulary,
        answers: list[str],
        transform,
        device: str | torch.device = "cpu",
    ):
        """transform: PIL image -> (3, H, W) normalised as the CNN was trained."""
        self.device = torch.device(device)
        self.encoder = encoder.to(self.device).eval()
        self.model = model.to(self.device).eval()
        self.vocab, self.answers, self.transform = vocab, list(answers), transform
        self.members: list[Answerer] = [self]  # an ensemble's models (join), this one first

    @classmethod
    def from_loaded(cls, ckpt: dict, path: str | Path, device: torch.device, **options) -> Answerer:
        meta, hp = ckpt["seqcap"], ckpt.get("hyper_parameters") or {}
        if "answers" not in meta or "vocab" not in meta:
            raise CheckpointError(
                f"{path}: not a seqcap VQA checkpoint (no answer vocabulary inside); train one with "
                "`seqcap fit -c configs/vqa/shapes_attention.yaml`"
            )
        if meta.get("tokenizer", TOKENIZER_NAME) != TOKENIZER_NAME:
            raise CheckpointError(
                f"{path}: questions tokenized by {meta['tokenizer']!r}, not {TOKENIZER_NAME!r}"
            )
        encoder = build_from_hparams(
            ImageEncoder, ckpt, path, prefix="encoder.", pretrained=False, weights_path=None,
            output="grid", embed_dim=None,
        )  # fmt: skip
        model = build_from_hparams(
            VQANet, ckpt, path, prefix="model.", feature_size=encoder.feature_dim,
            kind=hp.get("model", "attention"),
        )  # fmt: skip
        vocab = Vocabulary.from_list(meta["vocab"])
        return cls(encoder, model, vocab, meta["answers"], image_transform(ckpt), device)

    @property
    def model_kind(self) -> str:
        """lstm_q_norm_i, attention, blind or image_only."""
        return self.model.kind

    @property
    def has_attention(self) -> bool:
        return self.model_kind == "attention"

    def join(self, others: list[Answerer]) -> None:
        """An ensemble of this answerer and `others` (same vocabularies, checked by from_checkpoint):
        the answer probabilities are averaged; attention is this model's."""
        self.members = [self, *others]

    def encode_questions(self, questions: list[str]) -> tuple[Tensor, Tensor]:
        """Question strings -> (B, T) ids (unknown words -> <unk>) on this device, and lengths (B,)."""
        question, lengths = pad_questions([self.vocab.encode(tokenize_question(q)) for q in questions])
        return question.to(self.device), lengths

    def answer(self, image: str | Path | Image.Image, questions: list[str], top: int = 5) -> list[Answer]:
        """The `top` answers of each question about `image`, a path or a PIL image (ImageFileError
        when the file cannot be read). An empty question (or one of spaces or punctuation only) is
        refused with a DataError (a ValueError) naming it: the model would answer it anyway."""
        check_questions(questions)
        rgb = image.convert("RGB") if isinstance(image, Image.Image) else load_rgb(image)
        return self.answer_each([rgb] * len(questions), questions, top=top)

    @torch.inference_mode()
    def answer_each(
        self, images: Sequence[str | Path | Image.Image], questions: list[str], top: int = 5
    ) -> list[Answer]:
        """`answer` over (image, question) pairs in one forward: images[i] is questions[i]'s (the
        same object given for several questions goes through the CNN once). -> one Answer a
        question, each as `answer(images[i], [questions[i]])` gives it (to float rounding)."""
        check_questions(questions)
        if len(images) != len(questions):
            raise DataError(f"{len(images)} images for {len(questions)} questions: give one image a question")
        where: dict[int, int] = {}  # id of a distinct image -> its row
        rgbs, rows = [], []
        for image in images:
            if id(image) not in where:
                where[id(image)] = len(rgbs)
                rgbs.append(image.convert("RGB") if isinstance(image, Image.Image) else load_rgb(image))
            rows.append(where[id(image)])
        ids, lengths = self.encode_questions(questions)
        probs, weights = 0.0, None
        for member in self.members:  # an ensemble: the mean of its models' answer probabilities
            pixels = torch.stack([member.transform(rgb) for rgb in rgbs]).to(self.device)
            grid = member.encoder(pixels)  # (I, R, F): one row a distinct image
            if len(rgbs) == 1:
                grid = grid.expand(len(questions), -1, -1)  # (B, R, F): one image, B questions
            else:
                grid = grid[torch.tensor(rows, device=grid.device)]  # (B, R, F): each question's image
            logits, member_weights = member.model(ids, lengths, grid)
            probs = probs + logits.float().softmax(-1).cpu() / len(self.members)
            weights = member_weights if weights is None else weights
        best = probs.topk(min(top, probs.shape[1]), dim=-1)
        known = self.vocab.stoi
        out = []
        for b, question in enumerate(questions):
            pairs = [(self.answers[int(k)], float(p)) for p, k in zip(best.values[b], best.indices[b])]
            unknown = [w for w in tokenize_question(question) if w not in known]
            attention = torch.stack([w[b] for w in weights]).float().cpu() if weights else None
            out.append(Answer(question, pairs, unknown, attention))
        return out
