"""Cells: seed 002 Example 8-1, torch.nn equivalence, gradients of the variants torch lacks."""

import pytest
import torch

from seq2seq.modules.cells import GRUCell, LSTMCell, RNNCell, make_cell


def test_example_8_1_known_answer():
    """Seed 002 Example 8-1: U, W, b in the cell, V, c in a softmax output layer."""
    U = torch.tensor([[0.1, 0.1], [0.0, 0.0], [0.0, -0.1]])
    W = torch.tensor([[0.1, 0.1, 0.0], [0.0, 0.0, 0.0], [0.2, -0.1, -0.1]])
    V = torch.tensor([[0.0, 0.1, 0.0], [-0.2, 0.0, 0.0]])
    b = torch.tensor([0.0, 0.0, 0.2])
    c = torch.tensor([0.2, 0.1])
    xs = torch.tensor([[0.0, 1.0], [0.0, 0.1], [0.1, -0.2], [0.5, 0.0]])
    expected = [(0.5299, 0.4701), (0.5260, 0.4740), (0.5246, 0.4754), (0.5274, 0.4726)]

    cell = RNNCell(2, 3)
    with torch.no_grad():
        cell.weight_ih.copy_(U)
        cell.weight_hh.copy_(W)
        cell.bias_ih.copy_(b)
        cell.bias_hh.zero_()
    h = None
    for x, y_expected in zip(xs, expected):
        h = cell(x[None], h)  # eq. 8.7
        y = torch.softmax(h @ V.T + c, dim=-1)[0]  # eq. 8.8-8.9
        assert y.tolist() == pytest.approx(y_expected, abs=5e-5)


@pytest.mark.parametrize(
    "ours, ref",
    [
        (lambda: RNNCell(5, 7), lambda: torch.nn.RNNCell(5, 7)),
        (lambda: RNNCell(5, 7, nonlinearity="relu"), lambda: torch.nn.RNNCell(5, 7, nonlinearity="relu")),
        (lambda: LSTMCell(5, 7), lambda: torch.nn.LSTMCell(5, 7)),
        (lambda: GRUCell(5, 7, reset_after=True), lambda: torch.nn.GRUCell(5, 7)),
        (lambda: RNNCell(5, 7, bias=False), lambda: torch.nn.RNNCell(5, 7, bias=False)),
    ],
)
def test_equals_torch_nn_after_state_dict_swap(ours, ref):
    torch.manual_seed(0)
    ref, ours = ref(), ours()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(4, 5)
    for state in (None, "random"):
        if isinstance(ref, torch.nn.LSTMCell):
            s = None if state is None else (torch.randn(4, 7), torch.randn(4, 7))
            (h1, c1), (h2, c2) = ref(x, s), ours(x, s)
            torch.testing.assert_close(h2, h1, atol=1e-5, rtol=0)
            torch.testing.assert_close(c2, c1, atol=1e-5, rtol=0)
        else:
            s = None if state is None else torch.randn(4, 7)
            torch.testing.assert_close(ours(x, s), ref(x, s), atol=1e-5, rtol=0)


def test_parameter_layout_matches_torch():
    for ours, ref in [(LSTMCell(3, 4), torch.nn.LSTMCell(3, 4)), (GRUCell(3, 4), torch.nn.GRUCell(3, 4))]:
        assert {k: v.shape for k, v in ours.state_dict().items()} == {
            k: v.shape for k, v in ref.state_dict().items()
        }


def test_gradcheck_peephole_lstm():
    torch.manual_seed(0)
    cell = LSTMCell(3, 4, peephole=True).double()
    x = torch.randn(2, 3, dtype=torch.double, requires_grad=True)
    h = torch.randn(2, 4, dtype=torch.double, requires_grad=True)
    c = torch.randn(2, 4, dtype=torch.double, requires_grad=True)
    params = (cell.weight_ci, cell.weight_cf, cell.weight_co)

    def f(x, h, c, *peep):
        return cell(x, (h, c))

    assert torch.autograd.gradcheck(f, (x, h, c, *params))


def test_gradcheck_seed_gru():
    torch.manual_seed(0)
    cell = GRUCell(3, 4, reset_after=False).double()
    x = torch.randn(2, 3, dtype=torch.double, requires_grad=True)
    h = torch.randn(2, 4, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, h, *w: cell(x, h), (x, h, cell.weight_hh, cell.bias_hh))


def test_peephole_lstm_equations():
    """Peepholes: i and f see c_{t-1}, o sees c_t (seed 002 §8.4.3), written out by hand."""
    torch.manual_seed(1)
    cell = LSTMCell(3, 2, peephole=True)
    x, h, c = torch.randn(1, 3), torch.randn(1, 2), torch.randn(1, 2)
    pre = x @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh
    i, f, g, o = pre.chunk(4, -1)
    i = torch.sigmoid(i + cell.weight_ci * c)
    f = torch.sigmoid(f + cell.weight_cf * c)
    c_new = f * c + i * torch.tanh(g)
    h_new = torch.sigmoid(o + cell.weight_co * c_new) * torch.tanh(c_new)
    h2, c2 = cell(x, (h, c))
    torch.testing.assert_close(c2, c_new)
    torch.testing.assert_close(h2, h_new)
    with torch.no_grad():  # zero peepholes: a plain LSTM
        for p in (cell.weight_ci, cell.weight_cf, cell.weight_co):
            p.zero_()
    plain = torch.nn.LSTMCell(3, 2)
    plain.load_state_dict({k: v for k, v in cell.state_dict().items() if "_c" not in k[-4:]})
    torch.testing.assert_close(cell(x, (h, c))[0], plain(x, (h, c))[0])


def test_seed_gru_resets_before_the_matrix_product():
    """reset_after=False: n = tanh(W_in x + b_in + W_hn (r*h) + b_hn), seed 001 / Cho 2014."""
    torch.manual_seed(2)
    cell = GRUCell(3, 2, reset_after=False)
    x, h = torch.randn(1, 3), torch.randn(1, 2)
    W_ir, W_iz, W_in = cell.weight_ih.chunk(3)
    W_hr, W_hz, W_hn = cell.weight_hh.chunk(3)
    b_ir, b_iz, b_in = cell.bias_ih.chunk(3)
    b_hr, b_hz, b_hn = cell.bias_hh.chunk(3)
    r = torch.sigmoid(x @ W_ir.T + b_ir + h @ W_hr.T + b_hr)
    z = torch.sigmoid(x @ W_iz.T + b_iz + h @ W_hz.T + b_hz)
    n = torch.tanh(x @ W_in.T + b_in + (r * h) @ W_hn.T + b_hn)
    torch.testing.assert_close(cell(x, h), (1 - z) * n + z * h)
    after = GRUCell(3, 2, reset_after=True)
    after.load_state_dict(cell.state_dict())
    assert not torch.allclose(after(x, h), cell(x, h))  # the two forms really differ


def test_make_cell_rejects_unknown():
    with pytest.raises(ValueError, match="unknown cell 'lstn'"):
        make_cell("lstn", 2, 2)
    with pytest.raises(ValueError, match="nonlinearity"):
        RNNCell(2, 2, nonlinearity="sigmoid")
