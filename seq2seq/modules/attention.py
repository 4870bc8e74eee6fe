"""Attention over encoder states: additive (Bahdanau et al. 2015) and multiplicative (Luong et al.
2015). Both project the keys once per batch (`project_keys`), not once per decoder step.

forward(query (B, Hq), memory (B, S, Hk), mask (B, S) bool, keys=None)
    -> context (B, Hk), weights (B, S); masked positions get exactly zero weight.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn


def masked_softmax(scores: Tensor, mask: Tensor | None) -> Tensor:
    """scores: (B, S), mask: (B, S) True where real -> weights summing to 1 over real positions."""
    if mask is None:
        return torch.softmax(scores, dim=-1)
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return weights.masked_fill(~mask, 0.0)  # exact zeros, also for a fully masked row


class _Attention(nn.Module):
    def project_keys(self, memory: Tensor) -> Tensor:
        """memory: (B, S, Hk) -> keys in the space the scores need; done once per batch."""
        return memory

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(
        self, query: Tensor, memory: Tensor, mask: Tensor | None = None, keys: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        if keys is None:
            keys = self.project_keys(memory)
        weights = masked_softmax(self.score(query, keys), mask)  # α_j, (B, S)
        context = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)  # c = Σ_j α_j h_j, (B, Hk)
        return context, weights


class BahdanauAttention(_Attention):
    """Additive attention: e_j = v^T tanh(W q + U k_j)."""

    def __init__(self, query_size: int, key_size: int, attention_size: int | None = None):
        super().__init__()
        attention_size = attention_size or query_size
        self.key_layer = nn.Linear(key_size, attention_size, bias=False)  # U
        self.query_layer = nn.Linear(query_size, attention_size, bias=False)  # W
        self.energy_layer = nn.Linear(attention_size, 1, bias=False)  # v

    def project_keys(self, memory: Tensor) -> Tensor:
        return self.key_layer(memory)  # U k_j for all j: (B, S, A)

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        q = self.query_layer(query).unsqueeze(1)  # (B, 1, A)
        return self.energy_layer(torch.tanh(q + keys)).squeeze(-1)  # (B, S)


class LuongAttention(_Attention):
    """Multiplicative attention: e_j = q^T k_j ("dot") or q^T W_a k_j ("general")."""

    def __init__(self, query_size: int, key_size: int, score: Literal["dot", "general"] = "general"):
        super().__init__()
        if score not in ("dot", "general"):
            raise ValueError(f"Luong score must be 'dot' or 'general', got {score!r}")
        if score == "dot" and query_size != key_size:
            raise ValueError(
                f"Luong 'dot' attention needs query size == key size, got {query_size} and "
                f"{key_size}; use score='general' or match the sizes"
            )
        self.score_type = score
        self.key_layer = nn.Linear(key_size, query_size, bias=False) if score == "general" else None

    def project_keys(self, memory: Tensor) -> Tensor:
        return memory if self.key_layer is None else self.key_layer(memory)  # W_a k_j: (B, S, Hq)

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        return torch.bmm(keys, query.unsqueeze(-1)).squeeze(-1)  # (B, S)
