"""Visual question answering networks on the shared modules (issue 15): one class, four kinds.

forward(question (B, T) long, lengths (B,), features (B, R, F) image grid) -> logits (B, K) over
the K most frequent training answers, and the attention weights of each hop ([(B, R)], empty for
the kinds without attention).

The question goes through :class:`seq2seq.modules.encoder.RecurrentEncoder` (bidirectional; its
final states are the question vector q), the image grid comes from the frozen CNN (R regions of
F features; the pooled image is their mean).

- ``lstm_q_norm_i`` (Antol et al. 2015, "deeper LSTM Q + norm I"): i = mean_r v_r / ||mean_r v_r||,
  u = tanh(W_q q) * tanh(W_i i) (element-wise), then the classifier;
- ``attention`` (Yang et al. 2016, stacked attention): u_0 = tanh(W_q q); hop k:
  p_k = softmax_r(w^T tanh(W_a u_{k-1} + U_a m_r)) over the regions m_r = tanh(W_i v_r + W_c c_r),
  with :class:`seq2seq.modules.attention.BahdanauAttention`; u_k = u_{k-1} + sum_r p_k,r m_r.
  c_r = (x_r, y_r) in [-1, 1] is region r's place on the (square) grid (``coords=True``, as the
  relation networks of Santoro et al. 2017 tag CNN cells): a frozen CNN's features say little of
  where a region is. From hop 2 on the regions also carry their offset from where the hop before
  looked, m_r = tanh(W_i v_r + W_c c_r + W_d (c_r - sum_r' p_{k-1},r' c_r')), so that "what is left
  of the star?" can be a direction from the place hop 1 found;
- ``blind``: u = tanh(W_q q), the image is never read;
- ``image_only``: u = tanh(W_i i), the question is never read.

Classifier (the same for all): Linear(J, J) -> ReLU -> Dropout -> Linear(J, K).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seq2seq.modules.attention import BahdanauAttention
from seq2seq.modules.encoder import RecurrentEncoder

__all__ = ["KINDS", "VQANet", "grid_coords"]

Kind = Literal["lstm_q_norm_i", "attention", "blind", "image_only"]
KINDS = ("lstm_q_norm_i", "attention", "blind", "image_only")


def grid_coords(R: int) -> Tensor:
    """(R, 2): (x, y) in [-1, 1] of each cell of the row-major sqrt(R) x sqrt(R) grid."""
    side = math.isqrt(R)
    if side * side != R:
        raise ValueError(f"coords need a square grid of regions, got R = {R}")
    steps = torch.linspace(-1.0, 1.0, side) if side > 1 else torch.zeros(1)
    y, x = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], dim=1)


class VQANet(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        num_answers: int,
        feature_size: int,
        kind: Kind = "attention",
        embed_dim: int = 128,
        hidden_size: int = 256,
        joint_size: int = 512,
        hops: int = 2,
        dropout: float = 0.3,
        cell: Literal["rnn", "lstm", "gru"] = "lstm",
        coords: bool = True,
    ):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"model kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if kind == "attention" and hops < 1:
            raise ValueError(f"hops must be >= 1 for the attention model, got {hops}")
        self.kind, self.hops = kind, hops
        self.encoder = RecurrentEncoder(vocab_size, embed_dim, hidden_size, cell, bidirectional=True)
        self.question = nn.Linear(self.encoder.output_size, joint_size)  # W_q
        self.image = nn.Linear(feature_size, joint_size)  # W_i
        located = kind == "attention" and coords
        self.coords = nn.Linear(2, joint_size, bias=False) if located else None  # W_c
        self.offsets = nn.Linear(2, joint_size, bias=False) if located and hops > 1 else None  # W_d
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
            content = self.image(features)  # W_i v_r: (B, R, J)
            c = grid_coords(features.shape[1]).to(content)  # c_r: (R, 2)
            if self.coords is not None:
                content = content + self.coords(c)
            regions = torch.tanh(content)  # m_r: (B, R, J)
            u = self.encode_question(question, lengths)
            for k, attend in enumerate(self.attention):
                if k > 0 and self.offsets is not None:  # where each region is from the last hop's place
                    place = torch.einsum("br,rd->bd", weights[-1], c)  # (B, 2)
                    regions = torch.tanh(content + self.offsets(c[None] - place[:, None]))
                context, p = attend(u, regions, keys=attend.project_keys(regions))  # sum_r p_r m_r
                u = u + context
                weights.append(p)  # p: (B, R)
        return self.classifier(u), weights
