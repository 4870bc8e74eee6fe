"""Whole forward passes against numbers computed once and written down: Seq2Seq (fixed context
and attention) and the language model, built under torch.manual_seed(0) on fixed inputs.

The property tests (padding invariance, stepping == teacher forcing, fused == cells) pass for any
function that has the property; these fail when the function itself changes: an equation, the
parameter initialisation or its order, the order of inputs, the dropout, or the padding id (the
inputs hold <pad> = 0 and <unk> = 1, so moving the zero embedding row changes the outputs).
LSTM and Elman cells only, whose defaults have one meaning; every impl must give the same numbers.
If a change is meant to alter these numbers, recompute them with the builders below and say why.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from data.core.vocab import BOS, EOS, PAD, UNK
from seq2seq import search
from seq2seq.lm.network import LanguageModel
from seq2seq.modules.rnn import RecurrentOptions
from seq2seq.search import SearchOptions
from seq2seq.translation.network import Seq2Seq
from tests.conftest import with_rnn

ATOL = 1e-5  # float32; the values are O(1)

# Special ids: pad=0, unk=1, bos=2, eos=3; the words are 4..10.
SRC = torch.tensor([[4, 5, 6, 7, 8], [9, 10, 1, PAD, PAD]])  # row 1: three tokens, then padding
SRC_LENGTHS = torch.tensor([5, 3])
TGT_IN = torch.tensor([[BOS, 5, 6, 7, 1], [BOS, 8, 9, PAD, PAD]])
TGT_OUT = torch.tensor([[5, 6, 7, 1, EOS], [8, 9, EOS, PAD, PAD]])


def close(got, expected) -> None:
    torch.testing.assert_close(
        torch.as_tensor(got, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64),
        atol=ATOL, rtol=0,
    )  # fmt: skip


def summary(logits: torch.Tensor, targets: torch.Tensor) -> dict:
    """A few numbers that depend on every parameter: two logit slices (one of the padded row),
    the sum over all positions (padded ones included) and the loss ignoring <pad>."""
    return {
        "first": logits[0, 0, :4].tolist(),
        "padded_row": logits[1, 2, :4].tolist(),
        "sum": logits.sum().item(),
        "loss": F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=PAD).item(),
    }


def check(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for key in expected:
        if key == "greedy":
            assert got[key] == expected[key], key
        else:
            close(got[key], expected[key])


# -- Seq2Seq --------------------------------------------------------------------------------------
def build_seq2seq(dropout: float = 0.0, **kw) -> Seq2Seq:
    """torch.manual_seed(0), then Seq2Seq(11, 11, embed 4, hidden 5, bidirectional, one layer)."""
    torch.manual_seed(0)
    rnn = RecurrentOptions(embed_dim=4, hidden_size=5, num_layers=1, dropout=dropout)
    return Seq2Seq(11, 11, bidirectional=True, **with_rnn(rnn, **kw))


def seq2seq_values(**kw) -> dict:
    """Eval mode: teacher-forced logits of (SRC, SRC_LENGTHS, TGT_IN) against TGT_OUT, and the
    greedy translation (max_len 6) of both source rows: token ids and scores."""
    model = build_seq2seq(**kw).eval()
    with torch.no_grad():
        values = summary(model(SRC, SRC_LENGTHS, TGT_IN), TGT_OUT)
    hyps = [h[0] for h in model.translate(SRC, SRC_LENGTHS, SearchOptions(method="greedy", max_len=6))]
    values["greedy"] = [h.tokens for h in hyps]
    values["greedy_score"] = [h.score for h in hyps]
    return values


def seq2seq_train_values(**kw) -> dict:
    """Train mode with dropout 0.5: torch.manual_seed(1) right before the forward pass, so the
    dropout masks are fixed; the same summary of the logits."""
    model = build_seq2seq(dropout=0.5, **kw).train()
    torch.manual_seed(1)
    with torch.no_grad():
        return summary(model(SRC, SRC_LENGTHS, TGT_IN), TGT_OUT)


SEQ2SEQ_CONFIGS = {
    "lstm-fixed": dict(cell="lstm", context="fixed"),
    "lstm-attention": dict(cell="lstm", context="attention", attention="bahdanau"),
    "lstm-luong_general": dict(
        cell="lstm", context="attention", attention="luong_general", input_feeding=True
    ),
    "rnn-attention": dict(cell="rnn", context="attention", attention="bahdanau"),
}

# Computed once, by seq2seq_values(impl="fused", **SEQ2SEQ_CONFIGS[name]): torch.manual_seed(0),
# Seq2Seq(11, 11, embed_dim=4, hidden_size=5, bidirectional, 1 layer, dropout 0), eval mode,
# logits of model(SRC, SRC_LENGTHS, TGT_IN), loss against TGT_OUT, greedy translate(max_len=6).
# impl="cells" agrees to 1e-6. The greedy top-2 logit gap is >= 6e-3 at every step. translate never
# outputs <pad> or <bos> (their logits are -inf), so the scores are log-probabilities over the rest.
SEQ2SEQ_EXPECTED = {
    "lstm-fixed": dict(
        first=[-0.4786843, -0.3642730, -0.3868141, 0.5041001],
        padded_row=[-0.5341194, -0.3255990, 0.0177730, 0.5746629],
        sum=7.5442915,
        loss=2.3475723,
        greedy=[[], []],  # <eos> first: the fixed context's untrained decoder
        greedy_score=[-1.8356390, -1.8226054],
    ),
    "lstm-attention": dict(
        first=[0.3428209, 0.0742702, -0.3571320, -0.2538705],
        padded_row=[0.1435821, -0.0973717, -0.0736840, 0.0181129],
        sum=-7.0485845,
        loss=2.3960872,
        greedy=[[8, 8, 8, 8, 8, 8], [8, 8, 8, 8, 8, 8]],
        greedy_score=[-11.4203138, -11.3168945],
    ),
    # Luong order (attention after the step) with input feeding
    "lstm-luong_general": dict(
        first=[0.1684580, 0.2369249, -0.0241911, -0.0650625],
        padded_row=[0.0570539, 0.1531699, 0.0267256, -0.0920341],
        sum=-6.8511639,
        loss=2.4004049,
        greedy=[[7, 7, 7, 7, 7, 7], [7, 7, 7, 7, 7, 7]],
        greedy_score=[-10.3178501, -10.3096609],
    ),
    # the Elman cell: a Bridge without c, h' = tanh(W_ih x + b_ih + W_hh h + b_hh)
    "rnn-attention": dict(
        first=[-0.7772264, 0.2854012, 0.1350083, -0.1597075],
        padded_row=[-0.7740452, 0.2888485, 0.1506695, -0.1283913],
        sum=-1.4430918,
        loss=2.3586159,
        greedy=[[5, 8, 5, 1, 8, 5], [5, 8, 5, 1, 8, 5]],
        greedy_score=[-10.7213373, -10.9967747],
    ),
}

# Computed once, by seq2seq_train_values(impl="fused", **SEQ2SEQ_CONFIGS[name]): the same model
# with dropout 0.5 in train mode, torch.manual_seed(1) right before model(SRC, SRC_LENGTHS, TGT_IN).
SEQ2SEQ_TRAIN_EXPECTED = {
    "lstm-fixed": dict(
        first=[-0.6496958, -0.2211894, -0.8623865, 0.9050601],
        padded_row=[-0.8068513, -0.3423456, -0.1611595, 0.2052385],
        sum=-0.0641165,
        loss=2.4048126,
    ),
    "lstm-attention": dict(
        first=[0.6812037, 0.2535766, -0.7911987, -0.5857596],
        padded_row=[0.4452825, -0.0379376, 0.1224027, 0.1221938],
        sum=-5.1265116,
        loss=2.5629165,
    ),
}


@pytest.mark.parametrize("impl", ["fused", "cells"])
@pytest.mark.parametrize("name", list(SEQ2SEQ_CONFIGS))
def test_seq2seq_forward_and_greedy_match_recorded_values(name, impl):
    check(seq2seq_values(impl=impl, **SEQ2SEQ_CONFIGS[name]), SEQ2SEQ_EXPECTED[name])


@pytest.mark.parametrize("impl", ["fused", "cells"])
@pytest.mark.parametrize("name", list(SEQ2SEQ_TRAIN_EXPECTED))
def test_seq2seq_dropout_matches_recorded_values(name, impl):
    check(seq2seq_train_values(impl=impl, **SEQ2SEQ_CONFIGS[name]), SEQ2SEQ_TRAIN_EXPECTED[name])


# -- LanguageModel -------------------------------------------------------------------------------
LM_TOKENS = TGT_IN  # <bos> w .. and a padded row
LM_LENGTHS = torch.tensor([5, 3])
LM_TARGETS = torch.tensor([[5, 6, 7, 1, EOS], [8, 9, EOS, PAD, PAD]])


def build_lm(**kw) -> LanguageModel:
    """torch.manual_seed(0), then LanguageModel(11, embed 4, hidden 5, two LSTM layers, dropout
    0.3, tied embeddings: the output layer reads Linear(5, 4) of the RNN output)."""
    torch.manual_seed(0)
    rnn = RecurrentOptions(num_layers=2, dropout=0.3, cell="lstm", embed_dim=4, hidden_size=5)
    return LanguageModel(11, tie_embeddings=True, **with_rnn(rnn, **kw))


def lm_values(**kw) -> dict:
    """Eval mode: logits of (LM_TOKENS, lengths LM_LENGTHS) against LM_TARGETS, the top layer's
    final h of the padded row (taken at its length 3), the loss's gradient on two rows of E,
    log_prob of [5, 6, 7] and [8], and the greedy continuation of <bos> (max_len 6)."""
    model = build_lm(**kw).eval()
    logits, (h, _) = model(LM_TOKENS, None, LM_LENGTHS)
    values = summary(logits, LM_TARGETS)
    values["final_h"] = h[-1, 1].tolist()
    # E's rows <pad>, <unk> after backward of the loss: the lookup gives <pad> no gradient
    # (padding_idx; the tied output layer does), <unk> gets both
    F.cross_entropy(logits.flatten(0, 1), LM_TARGETS.flatten(), ignore_index=PAD).backward()
    values["pad_grad"], values["unk_grad"] = model.embedding.weight.grad[[PAD, UNK]].tolist()
    values["log_prob"] = model.log_prob([[5, 6, 7], [8]])
    with torch.no_grad():
        (hyp,) = search.greedy(model.step, model.zero_state(1), 1, BOS, EOS, max_len=6)
    values["greedy"] = hyp.tokens
    values["greedy_score"] = hyp.score
    return values


def lm_train_values() -> dict:
    """Train mode (dropout 0.3, fused): torch.manual_seed(1) right before the forward pass."""
    model = build_lm(impl="fused").train()
    torch.manual_seed(1)
    with torch.no_grad():
        logits, _ = model(LM_TOKENS, None, LM_LENGTHS)
    return summary(logits, LM_TARGETS)


# Computed once, by lm_values(impl="fused"): torch.manual_seed(0), LanguageModel(11, embed 4,
# hidden 5, 2 LSTM layers, dropout 0.3, tied), eval mode, on LM_TOKENS / LM_LENGTHS / LM_TARGETS.
# impl="cells" agrees to 1e-6.
LM_EXPECTED = dict(
    first=[0.0, -0.0298769, 0.0078545, 0.0208145],  # logit 0 is 0: the tied <pad> row is zero, b = 0
    padded_row=[0.0, -0.0259493, 0.0058015, 0.0170756],
    sum=-0.6486246,
    loss=2.3937914,
    final_h=[-0.0462137, 0.0447121, 0.0087582, -0.3798087, 0.2084399],
    pad_grad=[-0.0168685, 0.0076805, -0.0046553, -0.0143698],  # from the output layer only
    unk_grad=[0.0045368, -0.0026555, -0.0004072, 0.0033080],
    log_prob=[-9.5803938, -4.7761631],
    greedy=[9],  # then <eos>; the top-2 logit gap is >= 6e-5 at every step
    greedy_score=-4.3370781,
)
# Computed once, by lm_train_values(): the same model in train mode (dropout 0.3), with
# torch.manual_seed(1) right before model(LM_TOKENS, None, LM_LENGTHS).
LM_TRAIN_EXPECTED = dict(
    first=[0.0, -0.0294357, 0.0018865, 0.0151961],
    padded_row=[0.0, -0.0187079, 0.0051612, 0.0115404],
    sum=-0.6448624,
    loss=2.3947752,
)


@pytest.mark.parametrize("impl", ["fused", "cells"])
def test_language_model_matches_recorded_values(impl):
    check(lm_values(impl=impl), LM_EXPECTED)


def test_language_model_dropout_matches_recorded_values():
    check(lm_train_values(), LM_TRAIN_EXPECTED)
