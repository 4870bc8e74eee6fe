"""ShowTell and ShowAttendTell on precomputed features: shapes, teacher forcing == stepping, where
the image enters, batched search == one image at a time, attention, tied weights, and learning a
tiny synthetic captioning task."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from captioning.captioner.network import ShowAttendTell, ShowTell
from data.core.vocab import BOS, EOS, PAD
from seq2seq.modules.rnn import RecurrentOptions
from seq2seq.search import SearchOptions
from tests.conftest import with_rnn

V, C, E, H, HW = 12, 10, 8, 16, 6


SMALL = RecurrentOptions(embed_dim=E, hidden_size=H, dropout=0.0)


def make_show_tell(seed: int = 0, **kw) -> ShowTell:
    torch.manual_seed(seed)
    return ShowTell(V, C, **with_rnn(SMALL, **kw)).eval()


def make_sat(seed: int = 0, **kw) -> ShowAttendTell:
    torch.manual_seed(seed)
    return ShowAttendTell(V, C, **with_rnn(SMALL, **kw)).eval()


def captions_batch(B: int, T: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    caps = torch.randint(4, V, (B, T), generator=g)
    caps[:, 0] = BOS
    if B > 1:
        caps[1, T - 2 :] = PAD  # a shorter caption, padded
    return caps


def global_features(B: int, seed: int = 2) -> torch.Tensor:
    return torch.randn(B, C, generator=torch.Generator().manual_seed(seed))


def grid_features(B: int, seed: int = 3) -> torch.Tensor:
    return torch.randn(B, HW, C, generator=torch.Generator().manual_seed(seed))


def stepped_logits(model, features, caps) -> torch.Tensor:
    state = model.init_state(features)
    out = []
    for t in range(caps.shape[1]):
        logits, state = model.step(caps[:, t], state)
        out.append(logits)
    return torch.stack(out, 1)


# -- shapes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_show_tell_shapes(cell, num_layers):
    model = make_show_tell(cell=cell, num_layers=num_layers)
    logits = model(global_features(3), captions_batch(3, 5))
    assert logits.shape == (3, 5, V)
    state = model.init_state(global_features(3))
    assert state["h"].shape == (3, num_layers, H)
    assert ("c" in state) == (cell == "lstm")


def _lstm_step(x, h, c, w_ih, w_hh, b_ih, b_hh):
    """torch.nn.LSTM's equations (gates i, f, g, o), one step, written out."""
    i, f, g, o = (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, -1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _gru_step(x, h, w_ih, w_hh, b_ih, b_hh):
    """torch.nn.GRU's equations (reset after the matmul, gates r, z, n), one step, written out."""
    ir, iz, in_ = (x @ w_ih.T + b_ih).chunk(3, -1)
    hr, hz, hn = (h @ w_hh.T + b_hh).chunk(3, -1)
    r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
    n = torch.tanh(in_ + r * hn)
    return (1 - z) * n + z * h


def _show_attend_tell_by_hand(model: ShowAttendTell, feats, caps, num_layers: int):
    """Show, Attend and Tell unrolled step by step from its parameters alone: h_0 (and c_0) =
    tanh(W mean_r a_r + b) per layer; Bahdanau: alpha = softmax_r v^T tanh(W_q h_{t-1} + U a_r),
    the RNN reads [E y_{t-1}; c_t], o_t = tanh(W_o [s_t; c_t; E y_{t-1}]); Luong general: the RNN
    reads [E y_{t-1}; o_{t-1}] (o_0 = 0), alpha = softmax_r s_t^T W_a a_r, o_t = tanh(W_c [s_t; c_t]);
    logits = W_out o_t + b. Returns logits (B, T, V) and attention (B, T, HW)."""
    p = {k.removeprefix("decoder."): v for k, v in model.state_dict().items()}
    lstm = "bridge.c.weight" in p
    B, T = caps.shape
    mean = feats.mean(1)
    h0 = torch.tanh(mean @ p["bridge.h.weight"].T + p["bridge.h.bias"]).view(B, num_layers, H)
    h = [h0[:, layer] for layer in range(num_layers)]
    if lstm:
        c0 = torch.tanh(mean @ p["bridge.c.weight"].T + p["bridge.c.bias"]).view(B, num_layers, H)
        c = [c0[:, layer] for layer in range(num_layers)]
    luong = "attention.query_layer.weight" not in p
    feed = torch.zeros(B, p["pre_output.weight"].shape[0])

    def recur(x):
        for layer in range(num_layers):
            w = [p[f"rnn.{name}_l{layer}"] for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            if lstm:
                h[layer], c[layer] = _lstm_step(x, h[layer], c[layer], *w)
            else:
                h[layer] = _gru_step(x, h[layer], *w)
            x = h[layer]
        return x

    logits, attention = [], []
    for t in range(T):
        e = p["embedding.weight"][caps[:, t]]
        if luong:
            s = recur(torch.cat([e, feed], -1))
            scores = ((feats @ p["attention.key_layer.weight"].T) * s[:, None]).sum(-1)
            alpha = torch.softmax(scores, -1)
            ctx = (alpha[:, :, None] * feats).sum(1)
            o = torch.tanh(torch.cat([s, ctx], -1) @ p["pre_output.weight"].T + p["pre_output.bias"])
            feed = o
        else:
            q = h[-1] @ p["attention.query_layer.weight"].T
            energy = torch.tanh(q[:, None] + feats @ p["attention.key_layer.weight"].T)
            alpha = torch.softmax((energy @ p["attention.energy_layer.weight"].T).squeeze(-1), -1)
            ctx = (alpha[:, :, None] * feats).sum(1)
            s = recur(torch.cat([e, ctx], -1))
            o = torch.tanh(torch.cat([s, ctx, e], -1) @ p["pre_output.weight"].T + p["pre_output.bias"])
        logits.append(o @ p["output.weight"].T + p["output.bias"])
        attention.append(alpha)
    return torch.stack(logits, 1), torch.stack(attention, 1)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("attention", ["bahdanau", "luong_general"])
def test_show_attend_tell_computes_the_written_out_equations(cell, attention):
    """Shapes, then values: the teacher-forced logits and attention are those of the model's
    equations unrolled by hand from its parameters (two layers, every step: the initial state from
    the mean feature, the attention's query, Luong's input feeding); the attention weights are
    distributions over the grid that move between steps and images; each image of a batch gets
    what it gets alone."""
    model = make_sat(cell=cell, attention=attention, num_layers=2)
    feats, caps = grid_features(3), captions_batch(3, 5)
    with torch.no_grad():
        logits, attn = model(feats, caps, return_attention=True)
        assert logits.shape == (3, 5, V) and attn.shape == (3, 5, HW)
        torch.testing.assert_close(model(feats, caps), logits, atol=0, rtol=0)  # attention or not

        by_hand_logits, by_hand_attn = _show_attend_tell_by_hand(model, feats, caps, num_layers=2)
        torch.testing.assert_close(logits, by_hand_logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(attn, by_hand_attn, atol=1e-6, rtol=1e-5)

        assert (attn >= 0).all()
        torch.testing.assert_close(attn.sum(-1), torch.ones(3, 5))
        # not a constant: the weights depend on the step (the state queries) and on the image
        assert (attn[:, 1:] - attn[:, :1]).abs().max() > 1e-3
        assert (attn[1:] - attn[:1]).abs().max() > 1e-3

        for b in range(3):
            alone_logits, alone_attn = model(feats[b : b + 1], caps[b : b + 1], return_attention=True)
            torch.testing.assert_close(alone_logits, logits[b : b + 1], atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(alone_attn, attn[b : b + 1], atol=1e-6, rtol=1e-5)


def test_bad_shapes_give_clear_errors():
    with pytest.raises(ValueError, match="ShowTell expects"):
        make_show_tell()(grid_features(2), captions_batch(2, 4))
    with pytest.raises(ValueError, match="ShowAttendTell expects"):
        make_sat()(global_features(2), captions_batch(2, 4))
    with pytest.raises(ValueError, match="captions_in"):
        make_show_tell()(global_features(2), captions_batch(3, 4))
    with pytest.raises(ValueError, match="method"):
        make_show_tell().caption(global_features(2), SearchOptions(beam_size=3, method="nope"))
    with pytest.raises(ValueError, match="attention"):
        ShowAttendTell(V, C, attention="luong_dot")


# -- teacher forcing == stepping ---------------------------------------------------------------
@pytest.mark.parametrize("image_every_step", [False, True])
@pytest.mark.parametrize("cell,num_layers,tie", [("lstm", 1, False), ("gru", 2, True), ("rnn", 2, False)])
def test_show_tell_teacher_forcing_equals_stepping(image_every_step, cell, num_layers, tie):
    model = make_show_tell(
        cell=cell, num_layers=num_layers, tie_embeddings=tie, image_every_step=image_every_step
    )
    feats, caps = global_features(3), captions_batch(3, 6)
    with torch.no_grad():
        torch.testing.assert_close(model(feats, caps), stepped_logits(model, feats, caps), atol=1e-5, rtol=0)


@pytest.mark.parametrize("attention", ["bahdanau", "luong_general"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_show_attend_tell_teacher_forcing_equals_stepping(attention, cell):
    model = make_sat(attention=attention, cell=cell)
    feats, caps = grid_features(3), captions_batch(3, 6)
    with torch.no_grad():
        torch.testing.assert_close(model(feats, caps), stepped_logits(model, feats, caps), atol=1e-5, rtol=0)


# -- where the image enters ------------------------------------------------------------------
def test_show_tell_output_depends_on_each_images_own_features():
    """The same image gives bit-identical logits; another image for row 0 changes row 0's logits by
    a clear margin (a tenth of their scale) and leaves row 1's untouched; a batch row's logits are
    those of its image alone; and the image enters only as W_I cnn(x) (eq. 8.50): a change of the
    features that W_I maps to zero changes nothing, one of the same size that W_I sees does."""
    model = make_show_tell()
    caps = captions_batch(2, 5)
    feats = global_features(2, seed=2)
    other = feats.clone()
    other[0] = global_features(1, seed=7)[0]
    with torch.no_grad():
        a = model(feats, caps)
        assert torch.equal(model(feats.clone(), caps), a)
        b = model(other, caps)
        torch.testing.assert_close(b[1], a[1], atol=1e-6, rtol=0)
        scale = a[0].abs().max()
        assert (b[0] - a[0]).abs().max() > 0.1 * scale, ((b[0] - a[0]).abs().max(), scale)
        for i in range(2):
            torch.testing.assert_close(
                model(feats[i : i + 1], caps[i : i + 1]), a[i : i + 1], atol=1e-6, rtol=0
            )

        W = model.image_proj.weight  # (E, C): C=10 > E=8, so W has a null space
        _, _, vh = torch.linalg.svd(W)
        unseen, seen = vh[-1], vh[0]  # W @ unseen ~ 0; seen is W's strongest input direction
        assert W.shape[1] > W.shape[0] and (W @ unseen).abs().max() < 1e-5
        step = 3.0 * feats.norm(dim=1, keepdim=True)
        torch.testing.assert_close(model(feats + step * unseen, caps), a, atol=1e-5, rtol=0)
        moved = model(feats + step * seen, caps)
        assert ((moved - a).abs().amax(dim=(1, 2)) > 0.1 * a.abs().amax(dim=(1, 2))).all()


def test_show_tell_image_only_at_the_first_step():
    """The RNN input width is embed_dim, and in stepping the word steps see E z only."""
    model = make_show_tell()
    assert model.rnn.input_size == E
    assert make_show_tell(image_every_step=True).rnn.input_size == 2 * E
    seen = []
    model.rnn.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    feats, caps = global_features(2), captions_batch(2, 4)
    with torch.no_grad():
        stepped_logits(model, feats, caps)
        image = model.image_proj(feats)
        torch.testing.assert_close(seen[0], image.unsqueeze(1))
        for t in range(caps.shape[1]):
            torch.testing.assert_close(seen[1 + t], model.embedding(caps[:, t]).unsqueeze(1))
        seen.clear()
        model(feats, caps)  # fused: one call over [image; words]
        assert len(seen) == 1
        torch.testing.assert_close(seen[0], torch.cat([image.unsqueeze(1), model.embedding(caps)], 1))


def test_show_tell_image_every_step_sees_the_image_at_every_step():
    model = make_show_tell(image_every_step=True)
    seen = []
    model.rnn.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    feats, caps = global_features(2), captions_batch(2, 4)
    with torch.no_grad():
        stepped_logits(model, feats, caps)
        image = model.image_proj(feats)
        for t in range(caps.shape[1]):
            expect = torch.cat([model.embedding(caps[:, t]), image], -1).unsqueeze(1)
            torch.testing.assert_close(seen[1 + t], expect)


# -- search ----------------------------------------------------------------------------------
def _models_and_features():
    return [
        (make_show_tell(cell="lstm", num_layers=2), global_features(4)),
        (make_show_tell(image_every_step=True, cell="gru"), global_features(4)),
        (make_sat(attention="bahdanau"), grid_features(4)),
        (make_sat(attention="luong_general", cell="gru"), grid_features(4)),
    ]


@pytest.mark.parametrize("index", range(4))
def test_batched_beam_equals_each_image_alone(index):
    model, feats = _models_and_features()[index]
    batched = model.caption(feats, SearchOptions(method="beam", beam_size=3, alpha=0.6, n_best=2, max_len=8))
    for b in range(feats.shape[0]):
        alone = model.caption(
            feats[b : b + 1], SearchOptions(method="beam", beam_size=3, alpha=0.6, n_best=2, max_len=8)
        )[0]
        assert [h.tokens for h in batched[b]] == [h.tokens for h in alone]
        for x, y in zip(batched[b], alone, strict=True):
            assert x.score == pytest.approx(y.score, abs=1e-5)


@pytest.mark.parametrize("index", range(4))
def test_beam_one_equals_greedy(index):
    model, feats = _models_and_features()[index]
    beam = model.caption(feats, SearchOptions(method="beam", beam_size=1, max_len=8))
    greedy = model.caption(feats, SearchOptions(method="greedy", max_len=8))
    assert [h[0].tokens for h in beam] == [h[0].tokens for h in greedy]
    for x, y in zip(beam, greedy, strict=True):
        assert x[0].score == pytest.approx(y[0].score, abs=1e-5)


def test_sampling_is_reproducible_with_a_generator():
    model, feats = make_show_tell(), global_features(4)
    a = model.caption(
        feats, SearchOptions(method="sample", max_len=8, top_k=4), generator=torch.Generator().manual_seed(5)
    )
    b = model.caption(
        feats, SearchOptions(method="sample", max_len=8, top_k=4), generator=torch.Generator().manual_seed(5)
    )
    assert [h[0].tokens for h in a] == [h[0].tokens for h in b]
    assert all(len(h) == 1 and len(h[0].tokens) <= 8 for h in a)
    c = model.caption(
        feats, SearchOptions(method="sample", max_len=8, top_k=4), generator=torch.Generator().manual_seed(6)
    )
    greedy = [h[0].tokens for h in model.caption(feats, SearchOptions(method="greedy", max_len=8))]
    assert [h[0].tokens for h in c] != [h[0].tokens for h in a]  # the seed decides the draw
    assert [h[0].tokens for h in a] != greedy  # and it is a draw
    top1 = model.caption(
        feats, SearchOptions(method="sample", max_len=8, top_k=1), generator=torch.Generator().manual_seed(5)
    )
    assert [h[0].tokens for h in top1] == greedy  # top_k is applied: one candidate is the argmax


# -- attention -------------------------------------------------------------------------------
@pytest.mark.parametrize("attention", ["bahdanau", "luong_general"])
def test_attention_rows_sum_to_one_over_the_grid(attention):
    model = make_sat(attention=attention)
    with torch.no_grad():
        _, attn = model(grid_features(3), captions_batch(3, 5), return_attention=True)
    torch.testing.assert_close(attn.sum(-1), torch.ones(3, 5))
    assert (attn >= 0).all()
    for method in ("beam", "greedy"):
        for hyps in model.caption(
            grid_features(3), SearchOptions(beam_size=3, method=method, max_len=6), return_attention=True
        ):
            h = hyps[0]
            assert h.attention.shape == (len(h.tokens), HW)
            torch.testing.assert_close(h.attention.sum(-1), torch.ones(len(h.tokens)))


# -- tied embeddings -------------------------------------------------------------------------
def test_tied_embeddings_share_one_tensor():
    st = make_show_tell(tie_embeddings=True)
    assert st.output.weight is st.embedding.weight
    sat = make_sat(tie_embeddings=True)
    assert sat.decoder.output.weight is sat.decoder.embedding.weight
    names = [n for n, _ in st.named_parameters()]
    assert "embedding.weight" in names and "output.weight" not in names  # one tensor, listed once


# -- learning --------------------------------------------------------------------------------
CAPTIONS = [[4, 5, 6], [7, 8, 9, 10], [11, 4, 7, 5, 9], [6, 6, 10, 8]]


def _caption_tensors():
    T = max(len(c) for c in CAPTIONS) + 1
    cin = torch.full((len(CAPTIONS), T), PAD)
    cout = torch.full((len(CAPTIONS), T), PAD)
    for i, c in enumerate(CAPTIONS):
        cin[i, : len(c) + 1] = torch.tensor([BOS, *c])
        cout[i, : len(c) + 1] = torch.tensor([*c, EOS])
    return cin, cout


def _train(model, feats, steps: int = 300) -> list[list[int]]:
    cin, cout = _caption_tensors()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(steps):
        logits = model(feats, cin)
        loss = F.cross_entropy(logits.reshape(-1, V), cout.reshape(-1), ignore_index=PAD)  # eq. 8.51
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return [h[0].tokens for h in model.caption(feats, SearchOptions(method="greedy", max_len=10))]


@pytest.mark.parametrize("seed,image_every_step", [(0, False), (1, False), (0, True)])
def test_show_tell_learns_tiny_captions(seed, image_every_step):
    """Reliable: 30 of 30 seeds reach the exact captions in 300 (also in 150) steps."""
    torch.manual_seed(seed)
    model = ShowTell(
        V,
        C,
        rnn=RecurrentOptions(embed_dim=16, hidden_size=32, dropout=0.1),
        image_every_step=image_every_step,
    )
    assert _train(model, torch.randn(4, C)) == CAPTIONS


@pytest.mark.parametrize("seed", [0, 1])
def test_show_attend_tell_learns_tiny_captions(seed):
    """Reliable: 30 of 30 seeds reach the exact captions in 300 (also in 150) steps."""
    torch.manual_seed(seed)
    model = ShowAttendTell(V, C, rnn=RecurrentOptions(embed_dim=16, hidden_size=32, dropout=0.1))
    assert _train(model, torch.randn(4, HW, C)) == CAPTIONS
