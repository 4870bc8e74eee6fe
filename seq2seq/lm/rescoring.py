"""A target-language model in decoding (seed 002 §8.5.1): a language model "picks, among the
candidate sentences a translator or a speech recogniser outputs, the one with the highest
probability".

    lm = LanguageModelScoring.from_checkpoint("lm.ckpt", weight=0.3, mode="rescore")
    translator.use_lm(lm)        # or captioner.use_lm(lm); the CLIs: --lm CKPT --lm-weight W

Two modes:
- "rescore": beam search runs as without the LM; its n-best list is reordered by
      (log P_tm(y | x) + W * log P_lm(y)) / lp(|y|)
  with lp the GNMT length penalty the beam normalised by (|y| counts <eos>). The LM reads the
  detokenized text with its own tokenizer and vocabulary, so any LM of the target language fits.
  W = 0 leaves the list as it was.
- "fusion" (shallow fusion, Gulcehre et al. 2015): every beam step scores
      log p_tm(y_t | y_<t, x) + W * log p_lm(y_t | y_<t)
  so the LM steers the search itself. The LM must tokenize as the translator's target side does
  (checked); its vocabulary is mapped onto the translator's by word (a word the LM lacks gets the
  LM's <unk> probability).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from data.core.vocab import UNK, Vocabulary
from seq2seq.lm.predictor import LanguageModelPredictor
from seq2seq.search import length_penalty
from seq2seq.training.checkpoint import CheckpointError

Mode = Literal["rescore", "fusion"]


@dataclass
class LanguageModelScoring:
    """A language model with its weight W and mode ("rescore" or "fusion"); `bind` ties it to a
    decoder's vocabulary before fusion."""

    lm: LanguageModelPredictor
    weight: float
    mode: Mode = "rescore"
    index: Tensor | None = field(default=None, repr=False)  # (V_decoder,) LM ids, after bind

    def __post_init__(self) -> None:
        if self.mode not in ("rescore", "fusion"):
            raise ValueError(f"the LM mode must be 'rescore' or 'fusion', got {self.mode!r}")

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, weight: float, mode: Mode = "rescore", device: str | torch.device = "cpu"
    ) -> LanguageModelScoring:
        """CheckpointError naming the file when it is not a language model's checkpoint."""
        return cls(LanguageModelPredictor.from_checkpoint(path, device), weight, mode)

    def bind(
        self, vocab: Vocabulary, tokenizer_state: dict, what: str = "the translator's target side"
    ) -> None:
        """Ties fusion to a decoder's vocabulary: each of its words -> the LM's id of the same word
        (<unk> where the LM lacks it). CheckpointError when the LM tokenizes differently
        (tokenizer_state None: any word-level LM)."""
        if self.mode != "fusion":
            return
        mine = self.lm.tokenizer.state()
        if tokenizer_state is None:  # words the decoder splits its own way (captions): word-level LMs fit
            tokenizer_state = {**mine, "type": "word"}
        if mine != tokenizer_state:
            raise CheckpointError(
                f"{self.lm.checkpoint}: shallow fusion needs the language model to tokenize as {what} "
                f"does ({mine} vs {tokenizer_state}); rescore instead (--lm-mode rescore)"
            )
        ids = [self.lm.vocab.stoi.get(word, UNK) for word in vocab.to_list()]
        self.index = torch.tensor(ids, dtype=torch.long, device=self.lm.device)

    def fusion_start(self, batch_size: int):
        """-> (step function, initial state) for combine.fuse: the LM's log-probabilities over the
        bound vocabulary, (N, V_decoder), from <bos> and a zero state."""
        if self.index is None:
            raise ValueError("bind() the language model to the decoder's vocabulary before fusion")
        index, model = self.index, self.lm.model

        def step(prev: Tensor, state: dict) -> tuple[Tensor, dict]:
            logits, state = model.step(index[prev], state, banned=())
            return torch.log_softmax(logits.float(), -1).index_select(-1, index), state

        return step, model.zero_state(batch_size, self.lm.device)

    def rescore(self, texts: list[str], scores: list[float], lengths: list[int], alpha: float) -> list[float]:
        """The beam's scores (sum of log P_tm / lp(length)) of hypotheses `texts` of `lengths` words
        (+1 for <eos>) -> (log P_tm + W * log P_lm) / lp(length)."""
        if self.weight == 0 or not texts:
            return list(scores)
        lm_scores = [lp for lp, _ in self.lm.score(texts)]
        return [
            s + self.weight * lm / length_penalty(n + 1, alpha)
            for s, lm, n in zip(scores, lm_scores, lengths)
        ]


def add_lm_arguments(parser) -> None:
    """--lm CKPT, --lm-weight W and --lm-mode on a decoding CLI (translate, evaluate, caption)."""
    parser.add_argument(
        "--lm", metavar="CKPT", help="a language model of the output language (seqcap fit -c configs/lm/...)"
    )
    parser.add_argument(
        "--lm-weight", type=float, default=0.3, metavar="W", help="its weight W (default 0.3)"
    )
    parser.add_argument(
        "--lm-mode", choices=("rescore", "fusion"), default="rescore",
        help="rescore the beam's n-best list (default), or shallow fusion inside the beam",
    )  # fmt: skip


def lm_from_args(args, device) -> LanguageModelScoring | None:
    """The LanguageModelScoring that --lm asks for, or None (CheckpointError naming a bad file)."""
    if not args.lm:
        return None
    return LanguageModelScoring.from_checkpoint(args.lm, args.lm_weight, args.lm_mode, device)
