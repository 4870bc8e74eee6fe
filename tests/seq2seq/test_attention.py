"""Attention over encoder states: masking, normalisation, padding invariance, precomputed keys."""

from __future__ import annotations

import pytest
import torch

from data.core.vocab import BOS, PAD
from seq2seq.modules.attention import BahdanauAttention, LuongAttention, masked_softmax
from seq2seq.modules.rnn import RecurrentOptions
from seq2seq.search import SearchOptions
from seq2seq.translation.network import Seq2Seq, pad_batch

B, S, HQ, HK = 3, 7, 5, 6


pytestmark = pytest.mark.usefixtures("one_thread_per_module")  # conftest: torch on one thread


LENGTHS = [7, 4, 1]


def _inputs(query_size: int = HQ, key_size: int = HK):
    g = torch.Generator().manual_seed(1)
    query = torch.randn(B, query_size, generator=g)
    memory = torch.randn(B, S, key_size, generator=g)  # random also at padded positions
    mask = torch.arange(S)[None, :] < torch.tensor(LENGTHS)[:, None]
    return query, memory, mask


def _make(kind: str):
    torch.manual_seed(0)
    if kind == "bahdanau":
        return BahdanauAttention(HQ, HK, attention_size=4), HQ
    if kind == "luong_dot":
        return LuongAttention(HK, HK, "dot"), HK
    if kind == "luong_general":
        return LuongAttention(HQ, HK, "general"), HQ
    raise AssertionError(kind)


KINDS = ["bahdanau", "luong_dot", "luong_general"]


@pytest.mark.parametrize("kind", KINDS)
def test_masked_positions_get_exactly_zero_weight(kind):
    attn, hq = _make(kind)
    query, memory, mask = _inputs(hq)
    context, weights = attn(query, memory, mask)
    assert context.shape == (B, HK) and weights.shape == (B, S)
    for b, n in enumerate(LENGTHS):
        assert (weights[b, n:] == 0.0).all()
        assert (weights[b, :n] > 0.0).all()
    assert torch.isfinite(weights).all() and torch.isfinite(context).all()


@pytest.mark.parametrize("kind", KINDS)
def test_weights_sum_to_one(kind):
    attn, hq = _make(kind)
    query, memory, mask = _inputs(hq)
    _, weights = attn(query, memory, mask)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B), atol=1e-6, rtol=0)
    # a one-word sentence puts all its weight on that word
    assert weights[2, 0].item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_context_is_weighted_sum_of_memory(kind):
    attn, hq = _make(kind)
    query, memory, mask = _inputs(hq)
    context, weights = attn(query, memory, mask)
    expected = torch.einsum("bs,bsh->bh", weights, memory)
    torch.testing.assert_close(context, expected, atol=1e-6, rtol=1e-6)
    # the one-word sentence's context is exactly its single memory vector
    torch.testing.assert_close(context[2], memory[2, 0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_padding_invariance(kind):
    attn, hq = _make(kind)
    query, memory, mask = _inputs(hq)
    context, weights = attn(query, memory, mask)
    for b, n in enumerate(LENGTHS):
        ctx_b, w_b = attn(query[b : b + 1], memory[b : b + 1, :n])  # cut, no mask
        assert w_b.shape == (1, n)
        torch.testing.assert_close(w_b[0], weights[b, :n], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(ctx_b[0], context[b], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_padding_content_does_not_matter(kind):
    attn, hq = _make(kind)
    query, memory, mask = _inputs(hq)
    context, weights = attn(query, memory, mask)
    other = memory.masked_fill(~mask[..., None], 1e3)  # huge values at padded positions
    context2, weights2 = attn(query, other, mask)
    torch.testing.assert_close(weights2, weights, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(context2, context, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_precomputed_keys_give_the_same_result(kind):
    attn, hq = _make(kind)
    query, memory, mask = _inputs(hq)
    context, weights = attn(query, memory, mask)
    keys = attn.project_keys(memory)
    context_k, weights_k = attn(query, memory, mask, keys=keys)
    assert torch.equal(weights_k, weights)
    assert torch.equal(context_k, context)
    _, other = attn(query, memory, mask, keys=2 * keys)
    assert not torch.allclose(other, weights)  # the keys given are the ones used


def test_project_keys_shapes():
    query, memory, _ = _inputs()
    bahdanau, _ = _make("bahdanau")
    assert bahdanau.project_keys(memory).shape == (B, S, 4)
    general, _ = _make("luong_general")
    assert general.project_keys(memory).shape == (B, S, HQ)
    dot, _ = _make("luong_dot")
    assert dot.project_keys(memory) is memory


def test_luong_scores_by_hand():
    torch.manual_seed(0)
    query, memory, _ = _inputs(HK)
    dot = LuongAttention(HK, HK, "dot")
    _, w = dot(query, memory)
    torch.testing.assert_close(w, torch.softmax(torch.einsum("bh,bsh->bs", query, memory), -1))
    q5, _, _ = _inputs(HQ)
    general = LuongAttention(HQ, HK, "general")
    wa = general.key_layer.weight  # (HQ, HK)
    _, w = general(q5, memory)
    torch.testing.assert_close(w, torch.softmax(torch.einsum("bq,qk,bsk->bs", q5, wa, memory), -1))


def test_bahdanau_score_by_hand():
    attn, _ = _make("bahdanau")
    query, memory, _ = _inputs()
    W, U = attn.query_layer.weight, attn.key_layer.weight
    v = attn.energy_layer.weight[0]
    e = torch.tanh((query @ W.T)[:, None, :] + memory @ U.T) @ v  # (B, S)
    _, w = attn(query, memory)
    torch.testing.assert_close(w, torch.softmax(e, -1))


def test_luong_dot_with_mismatched_sizes_raises():
    with pytest.raises(ValueError):
        LuongAttention(5, 6, "dot")
    with pytest.raises(ValueError):
        LuongAttention(6, 6, "concat")
    LuongAttention(5, 6, "general")  # fine


def test_masked_softmax_fully_masked_row_is_zero():
    scores = torch.randn(2, 4)
    mask = torch.tensor([[True, True, False, False], [False, False, False, False]])
    w = masked_softmax(scores, mask)
    assert (w[1] == 0.0).all() and (w[0, 2:] == 0.0).all()
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w[0, :2], torch.softmax(scores[0, :2], -1))
    full = torch.ones(2, 4, dtype=torch.bool)
    torch.testing.assert_close(masked_softmax(scores, full), masked_softmax(scores, None))


# -- the decoder projects the keys once per batch ----------------------------------------------
def _count_project_keys(monkeypatch, attention_module):
    calls = []
    original = attention_module.project_keys

    def counted(memory):
        calls.append(tuple(memory.shape))
        return original(memory)

    monkeypatch.setattr(attention_module, "project_keys", counted)
    return calls


def _batch():
    src, lengths = pad_batch([[4, 5, 6, 7, 8], [9, 10, 11], [12, 13]])
    g = torch.Generator().manual_seed(3)
    tgt_in = torch.randint(4, 15, (3, 6), generator=g)  # T = 6 target steps
    tgt_in[:, 0] = BOS
    tgt_in[2, 4:] = PAD
    return src, lengths, tgt_in


@pytest.mark.parametrize("attention", ["bahdanau", "luong_general"])
def test_project_keys_called_once_per_batch_in_teacher_forcing(monkeypatch, attention):
    torch.manual_seed(0)
    model = Seq2Seq(
        15, 15, rnn=RecurrentOptions(embed_dim=8, hidden_size=16), context="attention", attention=attention
    )
    model.eval()
    src, lengths, tgt_in = _batch()
    with torch.no_grad():
        reference = model(src, lengths, tgt_in)
    if attention == "bahdanau":
        assert isinstance(model.decoder.attention, BahdanauAttention)
    calls = _count_project_keys(monkeypatch, model.decoder.attention)
    with torch.no_grad():
        logits, attn = model(src, lengths, tgt_in, return_attention=True)
    assert calls == [(3, 5, 32)]  # once, on the whole (B, S, M) memory
    assert logits.shape == (3, 6, 15) and attn.shape == (3, 6, 5)
    torch.testing.assert_close(logits, reference)


def test_project_keys_called_once_per_batch_in_search(monkeypatch):
    torch.manual_seed(0)
    model = Seq2Seq(
        15, 15, rnn=RecurrentOptions(embed_dim=8, hidden_size=16), context="attention", attention="bahdanau"
    )
    model.eval()
    src, lengths, _ = _batch()
    calls = _count_project_keys(monkeypatch, model.decoder.attention)
    model.translate(src, lengths, SearchOptions(method="beam", beam_size=3, max_len=6))
    model.translate(src, lengths, SearchOptions(method="greedy", max_len=6))
    assert len(calls) == 2


# -- the decoder's attention: teacher forcing equals stepping ------------------------------------
@pytest.mark.parametrize(
    "attention, input_feeding, bidirectional",
    [
        ("bahdanau", True, True),
        ("luong_general", True, True),
        ("luong_general", False, True),  # the parallel path: all steps in one RNN call
        ("luong_dot", False, False),
    ],
)
def test_decoder_teacher_forcing_equals_stepping(attention, input_feeding, bidirectional):
    torch.manual_seed(0)
    model = Seq2Seq(
        15, 15, rnn=RecurrentOptions(embed_dim=8, hidden_size=16), context="attention", attention=attention,
        input_feeding=input_feeding, bidirectional=bidirectional,
    ).eval()  # fmt: skip
    src, lengths, tgt_in = _batch()
    with torch.no_grad():
        logits, attn = model(src, lengths, tgt_in, return_attention=True)
        memory, mask, summary = model.encode(src, lengths)
        state = model.decoder.init_state(memory, mask, summary)
        for t in range(tgt_in.shape[1]):
            step_logits, state = model.decoder.step(tgt_in[:, t], state)
            torch.testing.assert_close(step_logits, logits[:, t], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(state["attention"], attn[:, t], atol=1e-6, rtol=1e-5)
    assert (attn.masked_select(~mask[:, None, :].expand_as(attn)) == 0.0).all()
    torch.testing.assert_close(attn.sum(-1), torch.ones(3, 6), atol=1e-6, rtol=0)


def test_decoder_luong_dot_needs_matching_sizes():
    with pytest.raises(ValueError):  # bidirectional memory 32 vs decoder state 16
        Seq2Seq(
            15,
            15,
            rnn=RecurrentOptions(embed_dim=8, hidden_size=16),
            attention="luong_dot",
            bidirectional=True,
        )
