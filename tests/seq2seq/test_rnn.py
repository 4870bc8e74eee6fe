"""The RNN layer: fused (torch.nn / cuDNN) and unrolled cells agree; padding is masked."""

import warnings

import pytest
import torch

from seq2seq.modules.cells import GRUCell
from seq2seq.modules.rnn import RNN, cell_options

VARIANTS = [("rnn", {}), ("lstm", {}), ("gru", {})]  # default options: fused and cells must agree


def pair(cell, opts, **kw):
    torch.manual_seed(0)
    fused = RNN(cell, 5, 6, impl="fused", **kw, **opts)
    cells = RNN(cell, 5, 6, impl="cells", **kw, **opts)
    cells.load_state_dict(fused.state_dict())
    return fused, cells


def assert_state_close(a, b):
    if isinstance(a, tuple):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=0)
    else:
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cell, opts", VARIANTS)
def test_fused_equals_cells_two_layers_bidirectional_ragged(cell, opts):
    fused, cells = pair(cell, opts, num_layers=2, bidirectional=True)
    x = torch.randn(4, 9, 5)
    lengths = torch.tensor([9, 4, 1, 6])
    out_f, state_f = fused(x, lengths)
    out_c, state_c = cells(x, lengths)
    assert out_f.shape == out_c.shape == (4, 9, 12)
    torch.testing.assert_close(out_c, out_f, atol=1e-5, rtol=0)
    assert_state_close(state_c, state_f)
    # without lengths, and from a given initial state
    h0 = torch.randn(4, 4, 6)
    s0 = (h0, torch.randn(4, 4, 6)) if cell == "lstm" else h0
    out_f, state_f = fused(x, None, s0)
    out_c, state_c = cells(x, None, s0)
    torch.testing.assert_close(out_c, out_f, atol=1e-5, rtol=0)
    assert_state_close(state_c, state_f)


CELLS_ONLY = [("lstm", {"peephole": True}), ("gru", {"reset_after": False})]
BOTH = [(impl, c, o) for impl in ("fused", "cells") for c, o in VARIANTS]


@pytest.mark.parametrize("impl, cell, opts", BOTH + [("cells", c, o) for c, o in CELLS_ONLY])
def test_padding_invariance_and_final_state_at_own_length(impl, cell, opts):
    torch.manual_seed(0)
    rnn = RNN(cell, 5, 6, num_layers=2, bidirectional=True, impl=impl, **opts)
    x = torch.randn(3, 8, 5)
    lengths = torch.tensor([8, 3, 5])
    out, state = rnn(x, lengths)
    h = state[0] if isinstance(state, tuple) else state
    for b, n in enumerate(lengths.tolist()):
        alone, s_alone = rnn(x[b : b + 1, :n])
        h_alone = s_alone[0] if isinstance(s_alone, tuple) else s_alone
        torch.testing.assert_close(out[b, :n], alone[0], atol=1e-5, rtol=0)
        assert (out[b, n:] == 0).all()  # padded steps give zero output
        torch.testing.assert_close(h[:, b], h_alone[:, 0], atol=1e-5, rtol=0)
    # the backward direction's final state is its output at the first token
    torch.testing.assert_close(h[-1], out[:, 0, 6:], atol=1e-6, rtol=0)
    # the forward direction's final state is its output at the last real token
    last = out[torch.arange(3), lengths - 1, :6]
    torch.testing.assert_close(h[-2], last, atol=1e-6, rtol=0)


def test_dropout_between_layers_only_in_training():
    torch.manual_seed(0)
    rnn = RNN("lstm", 4, 8, num_layers=2, dropout=0.5, impl="cells")
    x = torch.randn(2, 5, 4)
    rnn.eval()
    assert torch.equal(rnn(x)[0], rnn(x)[0])
    rnn.train()
    assert not torch.equal(rnn(x)[0], rnn(x)[0])
    single = RNN("lstm", 4, 8, num_layers=1, dropout=0.5, impl="cells").train()
    assert torch.equal(single(x)[0], single(x)[0])  # one layer: nothing between layers


def test_state_dict_names_are_torch_names_and_move_between_impls():
    fused = RNN("lstm", 3, 4, num_layers=2, bidirectional=True)
    reference = torch.nn.LSTM(3, 4, 2, bidirectional=True, batch_first=True)
    assert set(fused.state_dict()) == set(reference.state_dict())
    cells = RNN("lstm", 3, 4, num_layers=2, bidirectional=True, impl="cells")
    assert set(cells.state_dict()) == set(reference.state_dict())
    cells.load_state_dict(reference.state_dict())
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(cells(x)[0], reference(x)[0], atol=1e-5, rtol=0)
    peep = RNN("lstm", 3, 4, impl="cells", peephole=True)
    assert {"weight_ci_l0", "weight_cf_l0", "weight_co_l0"} <= set(peep.state_dict())
    with pytest.raises(RuntimeError, match="weight_ci_l0"):
        peep.load_state_dict(RNN("lstm", 3, 4).state_dict())  # strict: peepholes missing


def test_gradients_flow_through_both_impls():
    for impl in ("fused", "cells"):
        rnn = RNN("gru", 3, 4, bidirectional=True, impl=impl)
        x = torch.randn(2, 5, 3, requires_grad=True)
        rnn(x, torch.tensor([5, 2]))[0].sum().backward()
        assert x.grad[1, 2:].abs().sum() == 0  # padding gets no gradient
        assert x.grad[0].abs().sum() > 0


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_default_options_compute_one_function_in_both_impls(cell):
    """A fused checkpoint loaded into the cell path (and back) gives the same outputs, with
    nothing but the defaults: the GRU cell defaults to the fused GRU's reset_after=True."""
    torch.manual_seed(0)
    fused, cells = RNN(cell, 5, 6, impl="fused"), RNN(cell, 5, 6, impl="cells")
    cells.load_state_dict(fused.state_dict())
    x = torch.randn(2, 7, 5)
    torch.testing.assert_close(cells(x)[0], fused(x)[0], atol=1e-5, rtol=0)
    back = RNN(cell, 5, 6, impl="fused")
    back.load_state_dict(cells.state_dict())
    torch.testing.assert_close(back(x)[0], fused(x)[0], atol=1e-5, rtol=0)
    assert GRUCell(5, 6).reset_after is True


def test_auto_impl_takes_cells_only_where_the_fused_kernel_differs():
    assert RNN("lstm", 3, 4).impl == "fused" and RNN("gru", 3, 4).impl == "fused"
    assert RNN("lstm", 3, 4, peephole=True).impl == "cells"
    assert RNN("gru", 3, 4, reset_after=False).impl == "cells"
    seeds_gru = RNN("gru", 3, 4, reset_after=False)
    assert seeds_gru.cells["l0"].reset_after is False
    x = torch.randn(2, 5, 3)
    torch_gru = RNN("gru", 3, 4, impl="fused")
    torch_gru.load_state_dict(seeds_gru.state_dict())
    assert not torch.allclose(seeds_gru(x)[0], torch_gru(x)[0], atol=1e-4)  # a different function


def test_cell_options_map_typed_options_to_the_cell():
    assert cell_options("lstm", peephole=True) == {"peephole": True}
    assert cell_options("gru", gru_reset_after=False) == {"reset_after": False}
    assert cell_options("lstm") == cell_options("gru") == cell_options("rnn") == {}
    with pytest.raises(ValueError, match="peephole=True needs cell='lstm'"):
        cell_options("gru", peephole=True)
    with pytest.raises(ValueError, match="gru_reset_after=False needs cell='gru'"):
        cell_options("lstm", gru_reset_after=False)


def test_bad_arguments_give_clear_errors():
    with pytest.raises(ValueError, match="impl='cells'"):
        RNN("lstm", 3, 4, peephole=True, impl="fused")
    with pytest.raises(ValueError, match="reset_after"):
        RNN("gru", 3, 4, reset_after=False, impl="fused")
    with pytest.raises(ValueError, match="impl must be"):
        RNN("gru", 3, 4, impl="cudnn")
    with pytest.raises(ValueError, match="unknown cell"):
        RNN("transformer", 3, 4)
    with pytest.raises(ValueError, match=r"expected input \(B, T, 3\)"):
        RNN("rnn", 3, 4)(torch.randn(2, 5, 7))


@pytest.mark.parametrize(
    "layers, bidirectional, T, lengths, given_state",
    [
        (1, True, 9, [9, 7, 7, 3, 1], False),
        (2, True, 12, [5, 10, 10, 2, 8], True),  # T past the longest row
        (1, False, 6, [6, 6, 6], False),
        (3, True, 8, [4, 8, 1, 4], True),
    ],
)
def test_lstm_segments_on_the_cpu_equal_the_packed_path(
    layers, bidirectional, T, lengths, given_state, monkeypatch
):
    """rnn.py's `_forward_segments` (oneDNN calls between distinct lengths, the backward direction
    reversed within each row) computes the packed path's outputs, final states and gradients."""
    from seq2seq.modules import rnn as rnn_module

    torch.manual_seed(0)
    rnn = RNN("lstm", 5, 7, num_layers=layers, bidirectional=bidirectional, impl="fused")
    x = torch.randn(len(lengths), T, 5, requires_grad=True)
    D = 2 if bidirectional else 1
    state = tuple(torch.randn(layers * D, len(lengths), 7) for _ in range(2)) if given_state else None
    calls = []
    original = RNN._segments
    monkeypatch.setattr(RNN, "_segments", lambda self, *a: calls.append(1) or original(self, *a))
    results = []
    for segments in (True, False):
        x.grad = None
        rnn.zero_grad()
        if segments:
            out, (h, c) = rnn._forward_segments(x, torch.tensor(lengths), state)
        else:
            monkeypatch.setattr(rnn_module, "SEGMENTS", False)
            out, (h, c) = rnn(x, torch.tensor(lengths), state)
        g = torch.Generator().manual_seed(1)
        loss = sum((t * torch.randn(t.shape, generator=g)).sum() for t in (out, h, c))
        loss.backward()
        results.append([out.detach(), h.detach(), c.detach(), x.grad] + [p.grad for p in rnn.parameters()])
    assert calls  # the segments ran
    padded = torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None]
    assert results[0][0][padded].eq(0).all()
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_lstm_segments_are_used_for_batches_of_few_lengths(monkeypatch):
    used = []
    monkeypatch.setattr(RNN, "_forward_segments", lambda self, x, lengths, state: used.append(1) or (x, None))
    rnn = RNN("lstm", 3, 4, impl="fused", bidirectional=True)
    rnn(torch.randn(4, 9, 3), torch.tensor([9, 9, 8, 8]))  # 2 lengths in 9 steps
    assert used == [1]
    rnn(torch.randn(4, 9, 3), torch.tensor([9, 7, 4, 1]))  # 4 in 9: packing
    rnn(torch.randn(4, 9, 3), torch.tensor([9, 9, 9, 9]))  # one length: packing
    RNN("gru", 3, 4, impl="fused")(torch.randn(4, 9, 3), torch.tensor([9, 9, 8, 8]))  # an LSTM only
    assert used == [1]


def test_a_traced_lstm_packs_whatever_the_lengths(monkeypatch):
    """Tracing (the ONNX export) records the packed path, whose lengths ONNX's LSTM takes; the
    segments' Python loop over lengths would be frozen at the example's."""
    rnn = RNN("lstm", 3, 4, impl="fused", bidirectional=True).eval().requires_grad_(False)
    x, lengths = torch.randn(4, 9, 3), torch.tensor([9, 9, 8, 8])
    expected = rnn(x, lengths)[0]  # eagerly: the segments
    monkeypatch.setattr(RNN, "_forward_segments", lambda *a: pytest.fail("segments traced"))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(lambda x, n: rnn(x, n)[0], (x, lengths), check_trace=False)
        torch.testing.assert_close(traced(x, lengths), expected, atol=1e-6, rtol=1e-5)
