"""Translator: a Seq2Seq checkpoint with its vocabularies and tokenizers, raw text in, raw text out.

The inference API behind `python -m seq2seq.translate` and `python -m seq2seq.evaluate` (and the
quickstart). With an attention model an <unk> in the output becomes the source word it attends
to most (`replace_unknowns`, also used by TranslationModule's validation).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from data.tokenizers import tokenizer_from_state
from data.vocab import Vocabulary

from .checkpoint import build_from_hparams, load_checkpoint, resolve_device, seqcap_state
from .model import Seq2Seq, pad_batch


def replace_unknowns(
    tokens: list[str], attention: torch.Tensor | None, src_tokens: list[str], unk: str = "<unk>"
) -> list[str]:
    """Each <unk> in the output becomes the source token it attends to most (Luong et al. 2015,
    "Addressing the rare word problem"): names, placeholders and numbers pass through.
    tokens: T output tokens, attention: (T, S) or None (then nothing changes)."""
    if attention is None or unk not in tokens or not src_tokens:
        return tokens
    best = attention[: len(tokens), : len(src_tokens)].argmax(-1).tolist()
    return [src_tokens[best[t]] if tok == unk else tok for t, tok in enumerate(tokens)]


@dataclass
class Translation:
    text: str
    score: float
    tokens: list[str]
    attention: torch.Tensor | None = None


class Translator:
    """A Seq2Seq with its vocabularies and tokenizers: raw text in, raw text out."""

    def __init__(
        self, model: Seq2Seq, vocab_state: dict, device: str | torch.device = "cpu", unk_replace: bool = True
    ):
        self.unk_replace = unk_replace
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.src_vocab = Vocabulary.from_list(vocab_state["src_vocab"])
        self.tgt_vocab = Vocabulary.from_list(vocab_state["tgt_vocab"])
        self.src_tokenizer = tokenizer_from_state(vocab_state["src_tokenizer"])
        self.tgt_tokenizer = tokenizer_from_state(vocab_state["tgt_tokenizer"])
        self.max_len = int(vocab_state.get("max_len", 100))

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", unk_replace: bool = True) -> Translator:
        ckpt = load_checkpoint(path)
        vocab_state = seqcap_state(ckpt, path, "src_vocab", "translation model")
        model = build_from_hparams(Seq2Seq, ckpt, path, prefix="model.")
        return cls(model, vocab_state, resolve_device(device), unk_replace)

    def encode(self, sentence: str) -> tuple[list[int], list[str], bool]:
        """-> ids, tokens (both cut to max_len) and whether the sentence was truncated."""
        tokens = self.src_tokenizer.tokenize(sentence)
        cut = len(tokens) > self.max_len
        tokens = tokens[: self.max_len]
        return self.src_vocab.encode(tokens), tokens, cut

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
    ) -> list[list[Translation]]:
        """One list of n_best translations per sentence, in input order (empty in, empty out)."""
        encoded = [self.encode(s) for s in sentences]
        for i, (_, _, cut) in enumerate(encoded):
            if cut and warn is not None:
                warn(f"line {i + 1}: {len(self.src_tokenizer.tokenize(sentences[i]))} tokens, "
                     f"truncated to the model's maximum of {self.max_len}")
        results: list[list[Translation]] = [[Translation("", 0.0, [])] * n_best for _ in sentences]
        todo = sorted((i for i, (ids, _, _) in enumerate(encoded) if ids), key=lambda i: len(encoded[i][0]))
        batches = [todo[k : k + batch_size] for k in range(0, len(todo), batch_size)]
        for batch in tqdm(batches, desc="translating", unit="batch", disable=not progress, file=sys.stderr):
            src, lengths = pad_batch([encoded[i][0] for i in batch])
            hyps = self.model.translate(
                src.to(self.device), lengths.to(self.device), method="beam", beam_size=beam_size,
                alpha=alpha, n_best=n_best, return_attention=return_attention or self.unk_replace,
            )  # fmt: skip
            for i, options in zip(batch, hyps):
                results[i] = []
                for h in options:
                    tokens = self.tgt_vocab.decode(h.tokens)
                    if self.unk_replace:
                        tokens = replace_unknowns(tokens, h.attention, encoded[i][1])
                    text = self.tgt_tokenizer.detokenize(tokens)
                    results[i].append(Translation(text, h.score, tokens, h.attention))
        return results
