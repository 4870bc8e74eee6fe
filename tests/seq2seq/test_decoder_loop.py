"""modules/decoder_loop.py: the Bahdanau LSTM decoder's loop with its backward written out computes
the autograd loop's function: the same outputs (bit for bit: the same ops in the same order) and
the same gradients of every parameter and input, to float rounding; it is used only where it
applies."""

import pytest
import torch

from data.core.vocab import BOS, PAD
from seq2seq.modules import decoder_loop
from seq2seq.modules.rnn import RecurrentOptions
from seq2seq.translation.network import Seq2Seq, pad_batch


def _batch(seed: int, B: int = 5, S: int = 7, T: int = 6, vocab: int = 13):
    g = torch.Generator().manual_seed(seed)
    lengths = [S] + torch.randint(1, S + 1, (B - 1,), generator=g).tolist()  # padding in most rows
    src, src_lengths = pad_batch([torch.randint(4, vocab, (n,), generator=g).tolist() for n in lengths])
    tgt_in = torch.randint(4, vocab, (B, T), generator=g)
    tgt_in[:, 0] = BOS
    tgt_in[1:, T - 2 :] = PAD  # the decoder's padding positions still run; their loss would mask them
    return src, src_lengths, tgt_in


def _model(seed: int, bias: bool = True, dtype=torch.float64, **rnn) -> Seq2Seq:
    torch.manual_seed(seed)
    options = RecurrentOptions(**{"embed_dim": 6, "hidden_size": 8, "dropout": 0.0, **rnn})
    model = Seq2Seq(13, 13, rnn=options).to(dtype).train()
    if not bias:
        model.decoder.rnn.cells["l0"].bias_hh = None
    return model


def _run(model: Seq2Seq, batch, fused: bool, dtype=torch.float64):
    """features of the batch, and the gradients of a loss that reads every output (the attention
    too) with respect to every parameter and to the encoder's memory."""
    model.decoder.fused_loop = fused
    model.zero_grad(set_to_none=True)
    src, src_lengths, tgt_in = batch
    memory, mask, summary = model.encode(src, src_lengths)
    memory.retain_grad()
    o, attention = model.decoder.features(tgt_in, memory, mask, summary)
    g = torch.Generator().manual_seed(1)
    loss = (o * torch.randn(o.shape, generator=g, dtype=dtype)).sum()
    loss = loss + (attention * torch.randn(attention.shape, generator=g, dtype=dtype)).sum()
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    return o.detach(), attention.detach(), memory.grad, grads


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_loop_equals_the_autograd_loop(seed, bias):
    model, batch = _model(seed, bias), _batch(seed)
    calls = []
    original = decoder_loop.BahdanauLSTMLoop.apply
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(decoder_loop.BahdanauLSTMLoop, "apply", lambda *a: calls.append(1) or original(*a))
        o, attention, d_memory, grads = _run(model, batch, fused=True)
    assert calls == [1]  # the fused loop ran
    o_ref, attention_ref, d_memory_ref, grads_ref = _run(model, batch, fused=False)
    assert torch.equal(o, o_ref) and torch.equal(attention, attention_ref)
    padding = torch.arange(7)[None, :] >= batch[1][:, None]  # (B, S)
    assert padding.any() and attention.transpose(1, 2)[padding].eq(0).all()  # no weight on padding
    torch.testing.assert_close(d_memory, d_memory_ref, atol=1e-12, rtol=1e-10)
    assert grads.keys() == grads_ref.keys()
    assert "decoder.rnn.cells.l0.weight_hh" in grads and "decoder.attention.energy_layer.weight" in grads
    for name in grads_ref:
        torch.testing.assert_close(grads[name], grads_ref[name], atol=1e-12, rtol=1e-10, msg=name)


def test_fused_loop_in_float32_and_one_target_word():
    model, batch = _model(3, dtype=torch.float32), _batch(3, T=1)
    o, attention, d_memory, grads = _run(model, batch, fused=True, dtype=torch.float32)
    o_ref, attention_ref, d_memory_ref, grads_ref = _run(model, batch, fused=False, dtype=torch.float32)
    assert torch.equal(o, o_ref) and torch.equal(attention, attention_ref)
    torch.testing.assert_close(d_memory, d_memory_ref)
    for name in grads_ref:
        torch.testing.assert_close(grads[name], grads_ref[name], msg=name)


def test_the_training_loss_and_step_agree(tmp_path):
    """One training step of TranslationModule's loss (dropout on: the same masks either way) moves
    the weights the same."""
    from seq2seq.translation.module import TranslationModule

    src, src_lengths, tgt_in = _batch(4)
    tgt_out = torch.cat([tgt_in[:, 1:], torch.full((5, 1), PAD)], 1)
    batch = {"src": src, "src_lengths": src_lengths, "tgt_in": tgt_in, "tgt_out": tgt_out}
    results = []
    for fused in (True, False):
        torch.manual_seed(0)
        module = TranslationModule(13, 13, rnn=RecurrentOptions(embed_dim=6, hidden_size=8, dropout=0.3))
        module.model.decoder.fused_loop = fused
        loss, _ = module.eval_loss(batch)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in module.parameters()]))
    assert torch.equal(results[0][0], results[1][0])
    for got, want in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "change",
    ["no_grad", "eval", "two_layers", "gru", "peephole", "luong", "not_enabled"],
)
def test_the_autograd_loop_runs_where_the_fused_one_does_not_apply(change):
    rnn = {"two_layers": {"num_layers": 2}, "gru": {"cell": "gru"}, "peephole": {"peephole": True}}
    torch.manual_seed(0)
    options = RecurrentOptions(**{"embed_dim": 6, "hidden_size": 8, **rnn.get(change, {})})
    attention = "luong_general" if change == "luong" else "bahdanau"
    model = Seq2Seq(13, 13, rnn=options, attention=attention).train()
    if change == "eval":
        model.eval()
    if change == "not_enabled":
        model.decoder.fused_loop = False
    src, src_lengths, tgt_in = _batch(0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(decoder_loop.BahdanauLSTMLoop, "apply", lambda *a: pytest.fail("fused loop used"))
        with torch.set_grad_enabled(change != "no_grad"):
            model.features(src, src_lengths, tgt_in)


def test_it_applies_only_to_float32_and_float64():
    """In bf16 or fp16 (bf16-true, without autocast) the autograd loop runs: the written-out
    backward's products of local derivatives would round more often than autograd's."""
    model = _model(0, dtype=torch.float32)
    src, src_lengths, tgt_in = _batch(0)
    memory, mask, summary = model.encode(src, src_lengths)
    state = model.decoder.init_state(memory, mask, summary)
    assert decoder_loop.applies(model.decoder, state)
    for dtype in (torch.bfloat16, torch.float16):
        assert not decoder_loop.applies(model.decoder, {**state, "memory": state["memory"].to(dtype)})


def test_the_saved_tensors_are_freed_after_backward():
    """Every tensor the backward needs is saved with save_for_backward (none kept on the node
    otherwise), so backward frees them all."""
    model, batch = _model(0), _batch(0)
    o, attention = model.features(*batch)
    node = attention.grad_fn
    assert type(node).__name__ == "BahdanauLSTMLoopBackward" and len(node.saved_tensors) > 10
    assert not any(isinstance(v, (torch.Tensor, list, tuple)) for v in vars(node).values())
    (o.sum() + attention.sum()).backward()
    with pytest.raises(RuntimeError, match="freed"):
        _ = node.saved_tensors
