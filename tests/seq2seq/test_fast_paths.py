"""The training step's fast paths compute the same function: RNN.step == the unrolled layer, the
output layer's cross-entropy in chunks == the one on all logits, fused Adam where it can run."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from data.core.vocab import BOS, PAD
from seq2seq.modules import output_loss
from seq2seq.modules.output_loss import linear_cross_entropy
from seq2seq.modules.rnn import RNN, RecurrentOptions
from seq2seq.translation.module import TranslationModule
from seq2seq.translation.network import Seq2Seq, pad_batch


@pytest.mark.parametrize("cell, opts", [("lstm", {}), ("gru", {"reset_after": False}), ("rnn", {})])
def test_rnn_step_equals_the_unrolled_layer(cell, opts):
    torch.manual_seed(0)
    rnn = RNN(cell, 5, 6, num_layers=3, dropout=0.4, impl="cells", **opts).eval()
    x = torch.randn(2, 4, 5)
    out, final = rnn(x)
    zero = torch.zeros(2, 6)
    state = [(zero, zero) if cell == "lstm" else zero] * 3
    for t in range(4):
        xp = rnn.cells["l0"].input_projection(x[:, t])
        h, state = rnn.step(xp, state)
        torch.testing.assert_close(h, out[:, t], atol=1e-6, rtol=0)
    final_h = final[0] if cell == "lstm" else final
    for k in range(3):
        torch.testing.assert_close(state[k][0] if cell == "lstm" else state[k], final_h[k], atol=1e-6, rtol=0)


def test_rnn_step_needs_the_cells_and_one_direction():
    for rnn in (RNN("lstm", 3, 4, impl="fused"), RNN("lstm", 3, 4, impl="cells", bidirectional=True)):
        with pytest.raises(ValueError, match="impl='cells' and one direction"):
            rnn.step(torch.zeros(1, 16), [(torch.zeros(1, 4), torch.zeros(1, 4))])


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_cross_entropy_in_chunks_equals_the_logits_path(smoothing, bias, monkeypatch):
    monkeypatch.setattr(output_loss, "CHUNK", 3)  # 7 positions: chunks of 3, 3 and 1
    torch.manual_seed(0)
    o = torch.randn(7, 5, requires_grad=True)
    layer = torch.nn.Linear(5, 11, bias=bias)
    y = torch.randint(0, 11, (7,))
    expected = F.cross_entropy(layer(o), y, label_smoothing=smoothing)
    expected.backward()
    reference = [o.grad.clone()] + [p.grad.clone() for p in layer.parameters()]
    o.grad = None
    layer.zero_grad()
    loss = linear_cross_entropy(o, layer.weight, layer.bias, y, label_smoothing=smoothing)
    (loss * 3).backward()  # backward scales by the incoming gradient
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=0)
    for got, want in zip([o.grad] + [p.grad for p in layer.parameters()], reference):
        torch.testing.assert_close(got, want * 3, atol=1e-6, rtol=0)
    with torch.no_grad():  # no gradients computed, same value
        torch.testing.assert_close(linear_cross_entropy(o, layer.weight, layer.bias, y, smoothing), expected)


def test_the_decoder_features_are_the_output_layers_input():
    torch.manual_seed(0)
    model = Seq2Seq(13, 11, RecurrentOptions(embed_dim=8, hidden_size=16)).eval()
    src, src_lengths = pad_batch([[4, 5, 6, 7], [8, 9]])
    tgt, _ = pad_batch([[BOS, 4, 5], [BOS]])
    o, attention = model.features(src, src_lengths, tgt)
    logits, attention_too = model(src, src_lengths, tgt, return_attention=True)
    torch.testing.assert_close(model.decoder.output(o), logits, atol=0, rtol=0)
    torch.testing.assert_close(attention, attention_too, atol=0, rtol=0)


def test_the_translation_loss_is_the_padded_cross_entropy():
    torch.manual_seed(0)
    module = TranslationModule(13, 11, rnn=RecurrentOptions(embed_dim=8, hidden_size=16)).eval()
    src, src_lengths = pad_batch([[4, 5, 6, 7], [8, 9]])
    tgt, _ = pad_batch([[BOS, 4, 5, 6], [BOS, 7]])
    out, _ = pad_batch([[4, 5, 6, 3], [7, 3]])
    batch = {"src": src, "src_lengths": src_lengths, "tgt_in": tgt, "tgt_out": out}
    loss, tokens = module.eval_loss(batch)
    logits = module.model(src, src_lengths, tgt)
    expected = F.cross_entropy(logits.flatten(0, 1), out.flatten(), ignore_index=PAD)
    assert tokens == 6
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "precision, fused", [("32-true", True), ("bf16-true", True), ("bf16-mixed", False), ("16-mixed", False)]
)
def test_adam_is_fused_except_under_mixed_precision(precision, fused):
    module = TranslationModule(13, 11, rnn=RecurrentOptions(embed_dim=8, hidden_size=16))
    module._trainer = SimpleNamespace(precision=precision)
    assert module.configure_optimizers().defaults["fused"] is fused
    module._trainer = None
    assert module.configure_optimizers().defaults["fused"] is True


@pytest.mark.parametrize("fusion", ["none", "doubly"])
def test_training_projects_the_memory_once_with_the_same_result_as_search(fusion):
    """In training mode the Bahdanau decoder weighs W_r h_j projected once per batch
    (state["memory_in"]); in eval mode (search) it projects c_t each step: one function."""
    torch.manual_seed(0)
    image = dict(fusion="doubly", image_size=6) if fusion == "doubly" else {}
    model = Seq2Seq(13, 11, RecurrentOptions(embed_dim=8, hidden_size=16, num_layers=2), **image)
    src, src_lengths = pad_batch([[4, 5, 6, 7], [8, 9]])
    tgt, _ = pad_batch([[BOS, 4, 5], [BOS]])
    kw = {"image": torch.randn(2, 3, 6)} if image else {}
    trained = model.train()(src, src_lengths, tgt, **kw)
    memory, mask, summary = model.encode(src, src_lengths)
    assert "memory_in" in model.decoder.init_state(memory, mask, summary, kw.get("image"))
    searched = model.eval()(src, src_lengths, tgt, **kw)
    assert "memory_in" not in model.decoder.init_state(memory, mask, summary, kw.get("image"))
    torch.testing.assert_close(trained, searched, atol=1e-5, rtol=0)
