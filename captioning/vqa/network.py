"""Visual question answering networks on the shared modules: one class, four kinds.

forward(question (B, T) long, lengths (B,), features (B, R, F) image grid) -> logits (B, K) over
the K most frequent training answers, and the attention weights of each hop ([(B, R)], empty for
the kinds without attention).

The question goes through :class:`seq2seq.modules.encoder.RecurrentEncoder` (bidirectional; its
final states are the question vector q), the image grid comes from the frozen CNN (R regions of
F features; the pooled image is their mean).

- ``lstm_q_norm_i`` (Antol et al. 2015, "deeper LSTM Q + norm I"): i = mean_r v_r / ||mean_r v_r||,
  u = tanh(W_q q) * tanh(W_i i) (element-wise), then the classifier;
- ``attention`` (Yang et al. 2016, stacked attention): u_0 = tanh(W_q q); hop k:
  p_k = softmax_r(w^T tanh(W_a u_{k-1} + U_a m_r)) over the regions m_r = tanh(W_i v_r), with
  :class:`seq2seq.modules.attention.BahdanauAttention`; u_k = u_{k-1} + sum_r p_k,r m_r;
- ``blind``: u = tanh(W_q q), the image is never read;
- ``image_only``: u = tanh(W_i i), the question is never read.

Classifier (the same for all): Linear(J, J) -> ReLU -> Dropout -> Linear(J, K).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seq2seq.modules.attention import BahdanauAttention
from seq2seq.modules.encoder import RecurrentEncoder
from seq2seq.modules.rnn import RecurrentOptions

__all__ = ["KINDS", "VQANet"]

Kind = Literal["lstm_q_norm_i", "attention", "blind", "image_only"]
KINDS = ("lstm_q_norm_i", "attention", "blind", "image_only")
QUESTION_RNN = RecurrentOptions(embed_dim=128, hidden_size=256)  # the question encoder: no dropout


class VQANet(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        num_answers: int,
        feature_size: int,
        kind: Kind = "attention",
        rnn: RecurrentOptions = QUESTION_RNN,
        joint_size: int = 512,
        hops: int = 2,
        dropout: float = 0.3,
    ):
        """`rnn`: the question encoder's options (its own dropout: none by default); `dropout`:
        the classifier's."""
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"model kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if kind == "attention" and hops < 1:
            raise ValueError(f"hops must be >= 1 for the attention model, got {hops}")
        self.kind, self.hops = kind, hops
        # only what the kind reads: an unused parameter would stop DDP (no gradient to reduce)
        self.encoder = self.question = self.image = None
        if kind != "image_only":
            self.encoder = RecurrentEncoder(vocab_size, rnn, bidirectional=True)
            self.question = nn.Linear(self.encoder.output_size, joint_size)  # W_q
        if kind != "blind":
            self.image = nn.Linear(feature_size, joint_size)  # W_i
        self.attention = nn.ModuleList(
            [BahdanauAttention(joint_size, joint_size) for _ in range(hops if kind == "attention" else 0)]
        )
        self.classifier = nn.Sequential(
            nn.Linear(joint_size, joint_size),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(joint_size, num_answers),
        )

    def encode_question(self, question: Tensor, lengths: Tensor) -> Tensor:
        """(B, T), (B,) -> tanh(W_q q): (B, J)."""
        _, state = self.encoder(question, lengths)
        return torch.tanh(self.question(self.encoder.summarize(state)))

    def forward(self, question: Tensor, lengths: Tensor, features: Tensor) -> tuple[Tensor, list[Tensor]]:
        weights: list[Tensor] = []
        if self.kind == "image_only":
            u = torch.tanh(self.image(F.normalize(features.mean(dim=1), dim=-1)))
        elif self.kind == "blind":
            u = self.encode_question(question, lengths)
        elif self.kind == "lstm_q_norm_i":
            i = F.normalize(features.mean(dim=1), dim=-1)  # the L2-normalised pooled image
            u = self.encode_question(question, lengths) * torch.tanh(self.image(i))
        else:
            regions = torch.tanh(self.image(features))  # m_r: (B, R, J)
            u = self.encode_question(question, lengths)
            for attend in self.attention:
                keys = attend.project_keys(regions)
                context, p = attend(u, regions, keys=keys)  # sum_r p_r m_r, p: (B, R)
                u = u + context
                weights.append(p)
        return self.classifier(u), weights
