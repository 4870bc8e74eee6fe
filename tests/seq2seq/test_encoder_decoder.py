"""Encoder and decoder: padding invariance, what the fixed context sees, parallel == stepping."""

import pytest
import torch

from data.core.vocab import BOS
from seq2seq.modules.encoder import RecurrentEncoder
from seq2seq.modules.rnn import RecurrentOptions
from seq2seq.translation.network import Seq2Seq, pad_batch
from tests.conftest import with_rnn

CONFIGS = [
    dict(context="fixed"),
    dict(context="attention", attention="bahdanau"),
    dict(context="attention", attention="luong_general", input_feeding=True),
    dict(context="attention", attention="luong_general", input_feeding=False),
    dict(context="attention", attention="luong_dot", input_feeding=True, bidirectional=False),
    dict(context="attention", attention="bahdanau", cell="gru", num_layers=2),
    dict(context="fixed", cell="rnn", num_layers=2, impl="cells"),
    dict(context="attention", attention="bahdanau", tie_embeddings=True),
]


def tiny(**kw):
    torch.manual_seed(0)
    kw.setdefault("embed_dim", 8)
    return Seq2Seq(13, 11, **with_rnn(RecurrentOptions(hidden_size=16), **kw)).eval()


def batch():
    g = torch.Generator().manual_seed(1)
    src = [torch.randint(4, 13, (n,), generator=g).tolist() for n in (6, 2, 4)]
    tgt = [[BOS] + torch.randint(4, 11, (n,), generator=g).tolist() for n in (3, 5, 1)]
    return src, tgt


def test_encoder_padding_invariance_and_summary():
    torch.manual_seed(0)
    enc = RecurrentEncoder(
        13, rnn=RecurrentOptions(cell="lstm", embed_dim=8, hidden_size=16, num_layers=2), bidirectional=True
    ).eval()
    src, _ = batch()
    s, lengths = pad_batch(src)
    memory, final = enc(s, lengths)
    summary = enc.summarize(final)
    assert memory.shape == (3, 6, 32) and summary.shape == (3, 32)
    for b, seq in enumerate(src):
        m1, f1 = enc(torch.tensor([seq]), torch.tensor([len(seq)]))
        torch.testing.assert_close(memory[b, : len(seq)], m1[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(summary[b], enc.summarize(f1)[0], atol=1e-5, rtol=0)
        assert (memory[b, len(seq) :] == 0).all()
        # summary = [forward state after the last word; backward state after the first word]
        torch.testing.assert_close(summary[b, :16], m1[0, -1, :16])
        torch.testing.assert_close(summary[b, 16:], m1[0, 0, 16:])


@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: "-".join(map(str, kw.values())))
def test_decoder_padding_invariance(kw):
    model = tiny(**kw)
    src, tgt = batch()
    s, sl = pad_batch(src)
    t, _ = pad_batch(tgt)
    logits = model(s, sl, t)
    assert logits.shape == (3, t.shape[1], 11)
    for b in range(3):
        alone = model(torch.tensor([src[b]]), torch.tensor([len(src[b])]), torch.tensor([tgt[b]]))
        torch.testing.assert_close(logits[b, : len(tgt[b])], alone[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: "-".join(map(str, kw.values())))
def test_teacher_forcing_equals_stepping(kw):
    model = tiny(**kw)
    src, tgt = batch()
    s, sl = pad_batch(src)
    t, _ = pad_batch(tgt)
    logits, attention = model(s, sl, t, return_attention=True)
    memory, mask, summary = model.encode(s, sl)
    state = model.decoder.init_state(memory, mask, summary)
    for step in range(t.shape[1]):
        step_logits, state = model.decoder.step(t[:, step], state)
        torch.testing.assert_close(step_logits, logits[:, step], atol=1e-5, rtol=0)
        if kw["context"] == "attention":
            torch.testing.assert_close(state["attention"], attention[:, step], atol=1e-6, rtol=0)
    if kw["context"] == "attention":
        assert attention.shape == (3, t.shape[1], 6)
        assert (attention[1, :, 2:] == 0).all()  # padded source positions get no weight
        torch.testing.assert_close(attention.sum(-1), torch.ones(3, t.shape[1]))
    else:
        assert attention is None


def test_fixed_context_sees_only_the_summary_vector():
    """Fig. 8-21: changing encoder states other than the summary leaves the output unchanged."""
    model = tiny(context="fixed")
    src, tgt = batch()
    s, sl = pad_batch(src)
    t, _ = pad_batch(tgt)
    memory, mask, summary = model.encode(s, sl)
    a = model.decoder(t, memory, mask, summary)
    b = model.decoder(t, torch.randn_like(memory), mask, summary)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    c = model.decoder(t, memory, mask, summary + 0.1)
    assert not torch.allclose(a, c)
    attn = tiny(context="attention")
    memory, mask, summary = attn.encode(s, sl)
    assert not torch.allclose(
        attn.decoder(t, memory, mask, summary), attn.decoder(t, memory + 0.1, mask, summary)
    )


def test_tied_embeddings_share_one_matrix():
    model = tiny(tie_embeddings=True)
    assert model.decoder.output.weight is model.decoder.embedding.weight


def test_bad_decoder_options():
    with pytest.raises(ValueError, match="context"):
        tiny(context="summary")
    with pytest.raises(ValueError, match="attention"):
        tiny(attention="dot")
    with pytest.raises(ValueError, match="'dot' attention needs query size == key size"):
        Seq2Seq(5, 5, rnn=RecurrentOptions(hidden_size=8), attention="luong_dot", bidirectional=True)
