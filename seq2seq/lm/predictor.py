"""LanguageModelPredictor: a language-model checkpoint with its vocabulary and tokenizer.

    lm = LanguageModelPredictor.from_checkpoint(CKPT, device="auto")   # or Predictor.from_checkpoint
    lm.generate(num=5, prompt="", max_len=50, temperature=1.0, top_k=0, seed=0) -> [text, ...]
    lm.score(["a sentence", ...]) -> [(log P(sentence <eos> | <bos>) in nats, tokens), ...]

Sampling is seed 002 Algorithm 8-1 (seq2seq.lm.network.sample_texts). The LanguageModel is rebuilt
from the checkpoint's hyperparameters, not through the training module.
"""

from __future__ import annotations

from pathlib import Path

import torch

from data.core.tokenizers import tokenizer_from_state
from data.core.vocab import Vocabulary
from seq2seq.lm.network import LanguageModel, sample_texts
from seq2seq.predictor import Predictor
from seq2seq.training.checkpoint import build_from_hparams, seqcap_state


class LanguageModelPredictor(Predictor):
    """A LanguageModel with its vocabulary and tokenizer: text in, text out."""

    task = "lm"

    def __init__(self, model: LanguageModel, vocab_state: dict, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.vocab = Vocabulary.from_list(vocab_state["vocab"])
        self.tokenizer = tokenizer_from_state(vocab_state["tokenizer"])

    @classmethod
    def from_loaded(
        cls, ckpt: dict, path: str | Path, device: torch.device, **options
    ) -> LanguageModelPredictor:
        vocab_state = seqcap_state(ckpt, path, "vocab", "language model")
        model = build_from_hparams(LanguageModel, ckpt, path, prefix="model.")
        return cls(model, vocab_state, device)

    def generate(
        self, num: int = 5, prompt: str = "", max_len: int = 50, temperature: float = 1.0,
        top_k: int = 0, seed: int | None = 0, allow_unk: bool = True,
    ) -> list[str]:  # fmt: skip
        """`num` samples continuing `prompt` (temperature 0: greedy; top_k 0: all tokens); the same
        seed gives the same samples."""
        with torch.no_grad():
            return sample_texts(
                self.model, self.vocab, self.tokenizer, num=num, prompt=prompt, max_len=max_len,
                temperature=temperature, top_k=top_k, seed=seed, allow_unk=allow_unk,
            )  # fmt: skip

    def score(self, sentences: list[str]) -> list[tuple[float, int]]:
        """(log P(sentence <eos> | <bos>) in nats, tokens counted with <eos>) per sentence."""
        ids = [self.vocab.encode(self.tokenizer.tokenize(s)) for s in sentences]
        return [(lp, len(s) + 1) for lp, s in zip(self.model.log_prob(ids), ids)]
