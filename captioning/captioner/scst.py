"""Self-critical sequence training (SCST, Rennie et al. 2017) for the captioners of network.py.

For every image, k captions w^s are sampled from the model, w^s_t ~ p(w_t | w_<t, I), and scored
with CIDEr-D r(w^s) against the image's references (captioning/captioner/metrics.py, document frequencies of
the training captions). The gradient of the expected reward is estimated with a baseline b:

    ∇L = -(r(w^s) - b) ∇ log p(w^s | I),   L = -(1/N) Σ_s (r(w^s) - b_s) Σ_t log p(w^s_t | w^s_<t, I)

so a sample scoring above the baseline becomes more likely, one below it less. Baselines:
  "greedy"  the reward of the model's own greedy caption of the image (test-time inference; Rennie
            et al. 2017), one extra decode per image;
  "mean"    the mean reward of the image's other k - 1 samples ("new self-critical", Luo 2020:
            no greedy decode; needs k >= 2).

Sampling and the greedy baseline run without gradients; log p(w^s | I) then comes from one
teacher-forced pass over the samples (all time steps at once), with the same <pad>/<bos> ban as
the sampler, so it is exactly the probability the sample was drawn with when dropout is off (the
module switches it off for SCST steps).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from data.core.vocab import BOS, EOS, PAD

Baseline = Literal["greedy", "mean"]


def sample_batch(samples: list[list[int]], max_len: int, device=None) -> tuple[Tensor, Tensor]:
    """Sampled token ids (no specials) -> captions_in (N, T) = <bos> w, targets (N, T) = w <eos>
    (PAD after; a sample cut at max_len words has no <eos>: its targets are its max_len words)."""
    targets = [s + [EOS] if len(s) < max_len else s[:max_len] for s in samples]
    T = max(1, max(len(t) for t in targets))
    captions_in = torch.full((len(samples), T), PAD, dtype=torch.long)
    out = torch.full((len(samples), T), PAD, dtype=torch.long)
    for i, t in enumerate(targets):
        captions_in[i, : len(t)] = torch.tensor([BOS] + t[:-1], dtype=torch.long)
        out[i, : len(t)] = torch.tensor(t, dtype=torch.long)
    return captions_in.to(device), out.to(device)


def sequence_log_probs(logits: Tensor, targets: Tensor) -> Tensor:
    """logits (N, T, V) of a teacher-forced pass, targets (N, T) (PAD = not a position) ->
    (N,) Σ_t log p(target_t), with <pad> and <bos> banned as the sampler bans them."""
    banned = torch.tensor([PAD, BOS], device=logits.device)
    log_probs = torch.log_softmax(logits.float().index_fill(-1, banned, float("-inf")), -1)
    mask = targets != PAD
    picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(mask, picked, 0.0).sum(1)


def mean_of_others(rewards: Tensor) -> Tensor:
    """rewards (B, k), k >= 2 -> (B, k) baselines: each sample's the mean of its image's others."""
    k = rewards.shape[1]
    if k < 2:
        raise ValueError("baseline 'mean' needs at least 2 samples per image (scst_samples >= 2)")
    return (rewards.sum(1, keepdim=True) - rewards) / (k - 1)


def self_critical_loss(log_probs: Tensor, rewards: Tensor, baselines: Tensor) -> Tensor:
    """log_probs (N,) with gradients, rewards and baselines (N,) -> the scalar
    L = -mean_s (r_s - b_s) log p(w^s); its gradient raises the probability of every sample whose
    reward beats its baseline."""
    advantage = (rewards - baselines).to(log_probs.dtype).detach()
    return -(advantage * log_probs).mean()
