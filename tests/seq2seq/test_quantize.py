"""int8 quantisation (seq2seq/modules/quantize.py): a quantized copy decodes like the float model,
its products are int8 ones, the float model is left as it was, and it refuses what it cannot run."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch
from torch import nn

import seq2seq.modules.quantize as quantize
from captioning.captioner.network import ShowAttendTell, ShowTell
from captioning.vqa.network import VQANet
from data.core.vocab import BOS
from seq2seq.lm.network import LanguageModel
from seq2seq.modules.quantize import Int8Linear, quantize_int8
from seq2seq.modules.rnn import RecurrentOptions
from seq2seq.search import SearchOptions
from seq2seq.translation.network import Seq2Seq, pad_batch
from seq2seq.translation.predictor import Translator

pytestmark = pytest.mark.usefixtures("one_thread_per_module")  # conftest: torch on one thread


def log_probs_of_steps(step, state, tokens: torch.Tensor, steps: int = 4) -> torch.Tensor:
    """Log-probabilities (steps, B, V) of a step function fed `tokens` (B,) at every step."""
    out = []
    for _ in range(steps):
        logits, state = step(tokens, state)
        out.append(torch.log_softmax(logits, -1))
    return torch.stack(out)


def assert_close_distributions(fp32: torch.Tensor, int8: torch.Tensor, tol: float = 0.2) -> None:
    """Log-probabilities within `tol` of each other (here: at most 0.08 apart; wrong weights
    would put them whole nats apart)."""
    assert (fp32 - int8).abs().max() < tol


@pytest.fixture(scope="module")
def seq2seq_model() -> Seq2Seq:
    torch.manual_seed(0)
    return Seq2Seq(40, 50, RecurrentOptions(embed_dim=16, hidden_size=32)).eval()


def source_batch():
    g = torch.Generator().manual_seed(1)
    return pad_batch([torch.randint(4, 40, (n,), generator=g).tolist() for n in (6, 3, 9, 5)])


# -- the trained translator ----------------------------------------------------------------------
def test_int8_translations_agree_with_fp32_on_the_trained_translator(trained_run):
    translator = Translator.from_checkpoint(trained_run.last_ckpt, "cpu")
    lines = (trained_run.data_dir / "test.src").read_text(encoding="utf-8").splitlines()
    fp32 = translator.translate(lines, beam_size=5, alpha=0.6)
    translator.model = quantize_int8(translator.model)
    int8 = translator.translate(lines, beam_size=5, alpha=0.6)
    same = [a[0].text == b[0].text for a, b in zip(fp32, int8)]
    assert sum(same) >= 0.8 * len(lines), f"{sum(same)} of {len(lines)} translations identical"
    for a, b, s in zip(fp32, int8, same):
        if s:
            assert b[0].score == pytest.approx(a[0].score, abs=0.05)


# -- what is quantized, what is not ----------------------------------------------------------------
def test_the_decoders_products_are_int8_and_the_rest_stays_float(seq2seq_model):
    q = quantize_int8(seq2seq_model)
    dec = q.decoder
    for layer in (
        dec.output,
        dec.pre_output,
        dec.attention.query_layer,
        dec.attention.key_layer,
        dec.bridge.h,
    ):
        assert isinstance(layer, Int8Linear)
    weight, bias = dec.output.unpacked()
    assert weight.dtype == torch.qint8 and weight.int_repr().dtype == torch.int8
    assert weight.q_per_channel_scales().shape == (50,)  # one scale per output row
    assert torch.equal(bias, seq2seq_model.decoder.output.bias)
    # dequantized, the int8 weight is the float one to within half a step of its row's scale
    step = weight.q_per_channel_scales().float()[:, None]
    assert ((weight.dequantize() - seq2seq_model.decoder.output.weight).abs() <= step / 2 + 1e-7).all()
    cell = dec.rnn.cells["l0"]
    assert isinstance(cell.int8.ih, Int8Linear) and isinstance(cell.int8.hh, Int8Linear)
    assert isinstance(dec.int8.embedded, Int8Linear) and isinstance(dec.int8.rest, Int8Linear)
    assert "decoder.output.weight" not in dict(q.named_parameters())  # the float copy is gone
    # float: the embeddings, the energy v (one output), the encoder's fused LSTM
    assert type(dec.embedding) is nn.Embedding and dec.embedding.weight.dtype == torch.float32
    assert type(dec.attention.energy_layer) is nn.Linear
    assert q.encoder.rnn.impl == "fused" and type(q.encoder.rnn.fused) is nn.LSTM
    assert not any(p.requires_grad for p in q.parameters())


def test_quantizing_a_copy_leaves_the_float_model_as_it_was(seq2seq_model):
    before = copy.deepcopy(seq2seq_model.state_dict())
    src, lengths = source_batch()
    translated = seq2seq_model.translate(src, lengths, SearchOptions(beam_size=3))
    q = quantize_int8(seq2seq_model)
    assert q is not seq2seq_model
    after = seq2seq_model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    dec = seq2seq_model.decoder
    assert type(dec.output) is nn.Linear and dec.int8 is None and dec.rnn.cells["l0"].int8 is None
    assert not any(isinstance(m, Int8Linear) for m in seq2seq_model.modules())
    again = seq2seq_model.translate(src, lengths, SearchOptions(beam_size=3))
    assert [[h.tokens for h in hs] for hs in again] == [[h.tokens for h in hs] for hs in translated]
    assert quantize_int8(seq2seq_model, inplace=True) is seq2seq_model
    assert isinstance(seq2seq_model.decoder.output, Int8Linear)


@pytest.mark.parametrize(
    "options",
    [
        dict(context="attention", attention="luong_general"),  # the fed-back output through W_r
        dict(context="fixed"),  # a decoder that does not loop: its fused LSTM steps on int8 cells
        dict(tie_embeddings=True),
        dict(fusion="doubly", image_size=24),  # W_r over [c_t; z_t], the image context gated
    ],
    ids=["luong", "fixed", "tied", "doubly"],
)
def test_other_decoders_step_like_fp32(options):
    torch.manual_seed(0)
    model = Seq2Seq(40, 50, RecurrentOptions(embed_dim=32, hidden_size=32), **options).eval()
    q = quantize_int8(model)
    if options.get("context") == "fixed":
        assert q.decoder.rnn.impl == "cells" and q.decoder.int8 is None
    if options.get("tie_embeddings"):
        assert isinstance(q.decoder.output, Int8Linear) and type(q.decoder.embedding) is nn.Embedding
    src, lengths = source_batch()
    prev = torch.full((4,), BOS)
    image = torch.randn(4, 5, 24) if "fusion" in options else None
    with torch.no_grad():
        states = [m.decoder.init_state(*m.encode(src, lengths), image) for m in (model, q)]
        fp32, int8 = (log_probs_of_steps(m.decoder.step, s, prev) for m, s in zip((model, q), states))
    assert_close_distributions(fp32, int8)


# -- the other networks -------------------------------------------------------------------------
def test_language_model_scores_and_steps_like_fp32():
    torch.manual_seed(0)
    lm = LanguageModel(60, RecurrentOptions(embed_dim=32, hidden_size=48, num_layers=2)).eval()
    q = quantize_int8(lm)
    assert q.rnn.impl == "cells" and isinstance(q.rnn.cells["l1"].int8.hh, Int8Linear)
    assert isinstance(q.output, Int8Linear)
    sentences = [[5, 9, 11, 30, 7], [4, 4, 20], [50, 12, 13, 14, 15, 16, 17]]
    fp32, int8 = lm.log_prob(sentences), q.log_prob(sentences)
    assert int8 == pytest.approx(fp32, rel=0.02)
    with torch.no_grad():
        tokens = torch.tensor([5, 9, 11])
        steps = [log_probs_of_steps(partial(m.step, banned=()), m.zero_state(3), tokens) for m in (lm, q)]
    assert_close_distributions(*steps)


@pytest.mark.parametrize("kind", ["showtell", "attention"])
def test_captioners_step_like_fp32(kind):
    torch.manual_seed(0)
    rnn = RecurrentOptions(embed_dim=32, hidden_size=48)
    if kind == "showtell":
        model, features = ShowTell(60, 24, rnn).eval(), torch.randn(3, 24)
    else:
        model, features = ShowAttendTell(60, 24, rnn).eval(), torch.randn(3, 5, 24)
    q = quantize_int8(model)
    decoder = q if kind == "showtell" else q.decoder
    assert isinstance(decoder.output, Int8Linear) and decoder.rnn.cells["l0"].int8 is not None
    with torch.no_grad():
        fp32, int8 = (
            log_probs_of_steps(m.step, m.init_state(features), torch.full((3,), BOS)) for m in (model, q)
        )
        assert_close_distributions(fp32, int8)
        beams = [m.caption(features, SearchOptions(beam_size=3, max_len=8)) for m in (model, q)]
    assert all(len(hs) == 1 for hs in beams[1])


def test_vqa_answers_like_fp32():
    torch.manual_seed(0)
    model = VQANet(
        30, 20, 24, "attention", RecurrentOptions(embed_dim=16, hidden_size=32), joint_size=32
    ).eval()
    q = quantize_int8(model)
    assert isinstance(q.classifier[0], Int8Linear) and isinstance(q.classifier[3], Int8Linear)
    assert q.encoder.rnn.impl == "fused"  # the question encoder stays float
    question, lengths = pad_batch([[4, 5, 6], [7, 8, 9, 10, 11]])
    features = torch.randn(2, 6, 24)
    with torch.no_grad():
        fp32, int8 = (torch.log_softmax(m(question, lengths, features)[0], -1) for m in (model, q))
    assert_close_distributions(fp32, int8)


def test_padding_stays_masked_but_the_batch_sets_the_activations_scale(seq2seq_model):
    """A sentence padded alone decodes as it does unpadded (padding is zeros: it cannot widen an
    activation's range). In a batch, each product's activations share one scale, set by the
    largest of the batch: a sentence's int8 result can depend a little on the others."""
    q = quantize_int8(seq2seq_model)
    src, lengths = source_batch()
    options = SearchOptions(beam_size=3, max_len=12)
    batched = q.translate(src, lengths, options)
    for b in range(4):
        n = int(lengths[b])
        alone = q.translate(src[b : b + 1, :n], lengths[b : b + 1], options)[0][0]
        padded = q.translate(src[b : b + 1], lengths[b : b + 1], options)[0][0]
        assert padded.tokens == alone.tokens and padded.score == alone.score
        assert batched[b][0].score == pytest.approx(alone.score, abs=0.05)


# -- refusals ---------------------------------------------------------------------------------------
@pytest.mark.cuda
def test_a_model_on_cuda_is_refused(seq2seq_model):
    with pytest.raises(ValueError, match="CPU only.*cuda"):
        quantize_int8(copy.deepcopy(seq2seq_model).cuda())
    q = quantize_int8(seq2seq_model)
    with pytest.raises(ValueError, match="CPU only"):
        q.decoder.output(torch.zeros(2, q.decoder.output.in_features, device="cuda"))


def test_without_an_x86_engine_it_says_so(seq2seq_model, monkeypatch):
    monkeypatch.setattr(quantize, "_supported_engines", lambda: ["qnnpack", "none"])
    with pytest.raises(ValueError, match="quantized engine onednn or x86 or fbgemm.*it has: qnnpack"):
        quantize_int8(seq2seq_model)
    with pytest.raises(ValueError, match="must be one of"):
        quantize.quantized_engine("qnnpack")


def test_weights_other_than_float32_are_refused(seq2seq_model):
    with pytest.raises(ValueError, match="float32 weights.*torch.float64"):
        quantize_int8(copy.deepcopy(seq2seq_model).double())


# -- the benchmark --------------------------------------------------------------------------------
def test_the_benchmark_prints_speed_bleu_and_agreement(trained_run, capsys):
    from seq2seq import bench_int8

    data = trained_run.data_dir
    args = ["--checkpoint", str(trained_run.last_ckpt), "--src", str(data / "test.src")]
    bench_int8.main([*args, "--ref", str(data / "test.tgt"), "--speed-sentences", "8", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "| sentences/s, first 8 sentences, best of 1 |" in out and "| sacreBLEU, all 50 sentences |" in out
    r = bench_int8.measure(trained_run.last_ckpt, data / "test.src", data / "test.tgt", 8, 1)
    assert r["fp32"]["bleu"] > 50 and abs(r["int8"]["bleu"] - r["fp32"]["bleu"]) < 5
    assert r["identical"] >= 40 and r["sentences"] == 50 and r["speed_sentences"] == 8
