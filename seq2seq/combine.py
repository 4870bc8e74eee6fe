"""Step functions combined into one, so that one search (seq2seq/search.py) decodes with them:
an ensemble of models over one vocabulary (the log of their mean probability) and shallow fusion
with a language model. The combined state is {"members": [state, ...]} with the first member's
"attention" (N, S) where it has one, so search collects and reorders it as for a single model."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from seq2seq.search import StepFn


def ensemble(starts: Sequence[tuple[StepFn, object]]) -> tuple[StepFn, object]:
    """One step function of M models over one vocabulary, from each model's (step_fn, initial
    state): log p(y | ...) = log (1/M Σ_m p_m(y | ...)), the log of the mean probability (as
    OpenNMT-py and fairseq combine an ensemble). The state is {"members": [state_m, ...]}, with the
    first model's "attention" (N, S) when it has one. One model is returned as it is."""
    if len(starts) == 1:
        return starts[0]
    step_fns = [step for step, _ in starts]
    log_m = math.log(len(starts))

    def step(prev: Tensor, state: dict) -> tuple[Tensor, dict]:
        outputs = [fn(prev, s) for fn, s in zip(step_fns, state["members"])]
        log_probs = torch.stack([torch.log_softmax(logits.float(), dim=-1) for logits, _ in outputs])
        return torch.logsumexp(log_probs, dim=0) - log_m, _with_attention([s for _, s in outputs])

    return step, _with_attention([state for _, state in starts])


def fuse(start: tuple[StepFn, object], lm_start: tuple[StepFn, object], weight: float):
    """Shallow fusion (Gulcehre et al. 2015): a translator's (or captioner's) step and a language
    model's over the same vocabulary, scored as log p_tm(y | ...) + weight * log p_lm(y | y_<t).
    The state is {"members": [state_tm, state_lm]} with the first's "attention"."""
    (step_tm, state_tm), (step_lm, state_lm) = start, lm_start

    def step(prev: Tensor, state: dict) -> tuple[Tensor, dict]:
        logits, s_tm = step_tm(prev, state["members"][0])
        lm_logits, s_lm = step_lm(prev, state["members"][1])
        scores = torch.log_softmax(logits.float(), -1) + weight * torch.log_softmax(lm_logits.float(), -1)
        return scores, _with_attention([s_tm, s_lm])

    return step, _with_attention([state_tm, state_lm])


def _with_attention(states: list) -> dict:
    """{"members": states}, plus the first state's "attention" where it has one."""
    out = {"members": states}
    if isinstance(states[0], dict) and "attention" in states[0]:
        out["attention"] = states[0]["attention"]
    return out
