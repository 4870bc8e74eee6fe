"""The experiments of seq2seq/experiments: the gradient measurement is exact (analytic and finite
differences), the vanishing-gradient claim holds at standard initialisation, truncated BPTT cuts
the gradient to the first symbol, and both command lines run end to end on tiny sizes."""

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from seq2seq.experiments import gradient_flow, long_dependency
from seq2seq.experiments.gradient_flow import measure_gradient_flow, state_gradient_norms
from seq2seq.experiments.long_dependency import (
    CHANCE,
    N_SYMBOLS,
    LongDependencyModel,
    make_batch,
    run_long_dependency,
)
from seq2seq.modules.cells import make_cell

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: torch on one thread


# -- gradient_flow: the measurement itself ------------------------------------------------------


def test_one_unit_rnn_matches_the_product_of_w_times_one_minus_h_squared():
    """h_i = tanh(w h_{i-1} + u x_i + b): ∂h_T/∂h_t = ∏_{i=t+1..T} w (1 − h_i²), by hand."""
    w, u, b, T = 1.3, 0.7, 0.1, 12
    cell = make_cell("rnn", 1, 1).double()
    with torch.no_grad():
        cell.weight_hh.fill_(w)
        cell.weight_ih.fill_(u)
        cell.bias_ih.fill_(b)
        cell.bias_hh.zero_()
    xs = [0.5 * math.sin(3.0 * i) + 0.2 for i in range(T)]
    hs = [0.0]
    for x in xs:
        hs.append(math.tanh(w * hs[-1] + u * x + b))
    expected = []  # by distance d = T - t: the product over i = t+1..T
    for d in range(T + 1):
        product = 1.0
        for i in range(T - d + 1, T + 1):
            product *= w * (1.0 - hs[i] ** 2)
        expected.append(abs(product))
    x = torch.tensor(xs, dtype=torch.float64).view(1, T, 1)
    norms, c_norms = state_gradient_norms(cell, x, torch.ones(1, 1, dtype=torch.float64))
    assert c_norms is None
    assert norms.shape == (1, T + 1)
    assert norms[0].tolist() == pytest.approx(expected, rel=1e-12, abs=0)
    assert expected[-1] < 0.05 * expected[1]  # the product does shrink here


def _shifted(state, part, t, delta):
    """The state at step t with h_t (c_t fixed) or c_t moved by delta; moving c_t (t >= 1) moves
    h_t = o_t ⊙ tanh(c_t) with it, o_t fixed, as autograd's total derivative does (h_0 and c_0
    are independent leaves)."""
    if not isinstance(state, tuple):
        return state + delta
    h, c = state
    if part == "h":
        return h + delta, c
    if t == 0:
        return h, c + delta
    o = h / torch.tanh(c)
    return o * torch.tanh(c + delta), c + delta


def _finite_difference_grads(cell, x, u, t, eps=1e-6):
    """∂(u·h_T)/∂h_t (and ∂/∂c_t for the LSTM) by central differences: rerun steps t+1..T from
    the perturbed state at step t."""
    B, T, _ = x.shape
    lstm = isinstance(cell.zeros(x[:, 0]), tuple)

    def loss(s):
        for i in range(t, T):
            s = cell(x[:, i], s)
        return (u * (s[0] if lstm else s)).sum(-1)  # (B,)

    grads = {}
    with torch.no_grad():
        state = cell.zeros(x[:, 0])
        for i in range(t):
            state = cell(x[:, i], state)
        for part in ["h", "c"] if lstm else ["h"]:
            g = torch.zeros(B, cell.hidden_size, dtype=x.dtype)
            for j in range(cell.hidden_size):
                e = torch.zeros_like(g)
                e[:, j] = eps
                g[:, j] = (loss(_shifted(state, part, t, e)) - loss(_shifted(state, part, t, -e))) / (2 * eps)
            grads[part] = g
    return grads


@pytest.mark.parametrize("cell_name", ["rnn", "lstm", "gru"])
def test_gradient_norms_match_finite_differences(cell_name):
    torch.manual_seed(3)
    opts = {"reset_after": True} if cell_name == "gru" else {}
    cell = make_cell(cell_name, 2, 3, **opts).double()
    T = 9
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, T, 2, generator=g, dtype=torch.float64)
    u = torch.randn(2, 3, generator=g, dtype=torch.float64)
    u = u / u.norm(dim=-1, keepdim=True)
    norms, c_norms = state_gradient_norms(cell, x, u)
    assert norms.shape == (2, T + 1)
    torch.testing.assert_close(norms[:, 0], torch.ones(2, dtype=torch.float64))  # d = 0: ‖u‖
    for t in (0, 3, 7, T):
        fd = _finite_difference_grads(cell, x, u, t)
        torch.testing.assert_close(norms[:, T - t], fd["h"].norm(dim=-1), rtol=1e-6, atol=1e-9)
        if cell_name == "lstm":
            torch.testing.assert_close(c_norms[:, T - t], fd["c"].norm(dim=-1), rtol=1e-6, atol=1e-9)


def test_vanishing_at_standard_init_rnn_far_worse_than_lstm():
    """T = 60, H = 64, 16 sequences x seeds 0..2. Measured: RNN d60/d1 ≈ 1e-19, LSTM ≈ 6e-12,
    GRU ≈ 1e-11; all vanish at standard init, the plain RNN by many more orders of magnitude."""
    T = 60
    mean = {}
    for cell in ("rnn", "lstm", "gru"):
        runs = [measure_gradient_flow(cell, T, 64, 16, seed) for seed in range(3)]
        assert all(len(r) == T + 1 for r in runs)
        mean[cell] = [sum(v) / len(v) for v in zip(*runs)]
    ratio = {cell: m[T] / m[1] for cell, m in mean.items()}
    assert ratio["rnn"] < 1e-2  # at least 100x smaller at the largest distance
    assert ratio["rnn"] < 1e-12  # in fact many orders of magnitude
    assert ratio["lstm"] > 1e3 * ratio["rnn"]  # much less severe for the LSTM
    assert ratio["gru"] > 1e3 * ratio["rnn"]
    assert ratio["lstm"] < 1e-6  # but it still vanishes at init (forget gate ≈ σ(0) = 1/2)
    for m in mean.values():  # monotone decay in log scale over the long range
        assert m[1] > m[10] > m[30] > m[T]


def test_measurement_is_deterministic_and_forget_bias_slows_the_lstm_decay():
    a = measure_gradient_flow("lstm", 30, 16, 4, seed=1)
    assert measure_gradient_flow("lstm", 30, 16, 4, seed=1) == a
    biased = measure_gradient_flow("lstm", 30, 16, 4, seed=1, forget_bias=2.0)
    assert biased[30] / biased[1] > 100 * a[30] / a[1]
    with pytest.raises(ValueError, match="only for the LSTM"):
        measure_gradient_flow("rnn", 30, 16, 4, state="c")


# -- long_dependency: truncated BPTT -------------------------------------------------------------


def _embedding_input_grad(model, tokens, targets, tbptt):
    captured = {}

    def hook(module, inputs, output):
        output.register_hook(lambda g: captured.__setitem__("grad", g))

    handle = model.embedding.register_forward_hook(hook)
    model.zero_grad(set_to_none=True)
    logits = model(tokens, tbptt=tbptt)
    F.cross_entropy(logits, targets).backward()
    handle.remove()
    return logits.detach(), captured["grad"].norm(dim=-1), model.embedding.weight.grad.clone()


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_tbptt_shorter_than_the_sequence_gives_the_first_symbol_no_gradient(cell):
    gap, k = 6, 3  # T = 8; chunks [0, 3) [3, 6) [6, 8): the loss reaches only positions 6, 7
    torch.manual_seed(0)
    model = LongDependencyModel(cell, 8)
    tokens, targets = make_batch(5, gap, torch.Generator().manual_seed(0))

    full_logits, full_x, full_w = _embedding_input_grad(model, tokens, targets, tbptt=0)
    assert (full_x > 0).all()  # full BPTT: every position, the first symbol included, gets gradient
    assert full_w[:N_SYMBOLS].abs().sum() > 0

    logits, x_grad, w_grad = _embedding_input_grad(model, tokens, targets, tbptt=k)
    torch.testing.assert_close(logits, full_logits)  # truncation changes gradients, not values
    assert (x_grad[:, :6] == 0).all() and (x_grad[:, 6:] > 0).all()
    assert (w_grad[:N_SYMBOLS] == 0).all()  # the symbols' embeddings learn nothing
    assert w_grad[N_SYMBOLS:].abs().sum() > 0

    _, same_x, same_w = _embedding_input_grad(model, tokens, targets, tbptt=gap + 2)  # k >= T
    torch.testing.assert_close(same_x, full_x)
    torch.testing.assert_close(same_w, full_w)


def test_lstm_learns_the_gap_with_full_bptt_but_not_truncated():
    """G = 8, k = 3: the last chunk is the query step alone. Measured: full 1.00, truncated 0.10.
    (Truncation does not always give chance: see the long_dependency docstring.)"""
    full = run_long_dependency("lstm", gap=8, seed=0, hidden=32, steps=400)
    cut = run_long_dependency("lstm", gap=8, seed=0, hidden=32, steps=400, tbptt=3)
    assert set(full) == {"cell", "gap", "tbptt", "seed", "accuracy", "final_loss"}
    assert full["accuracy"] > 0.9
    assert cut["accuracy"] < 2 * CHANCE and cut["final_loss"] > 0.9 * math.log(N_SYMBOLS)


def test_long_dependency_is_deterministic():
    a = run_long_dependency("gru", gap=3, seed=1, hidden=8, steps=30, test_size=100)
    assert run_long_dependency("gru", gap=3, seed=1, hidden=8, steps=30, test_size=100) == a


# -- command lines ----------------------------------------------------------------------------


def _run(module, *args):
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def _read_csv(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def _assert_png(path):
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_gradient_flow_cli(tmp_path, capsys):
    out = tmp_path / "gf"
    proc = _run("seq2seq.experiments.gradient_flow", "--out", str(out), "--length", "20", "--hidden", "8",
                "--seeds", "1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    columns, rows = _read_csv(out / "gradient_flow.csv")
    assert columns == ["cell", "seed", "distance", "grad_norm"]
    assert len(rows) == 3 * 21
    assert {r["cell"] for r in rows} == {"rnn", "lstm", "gru"}
    by_cell = {c: [float(r["grad_norm"]) for r in rows if r["cell"] == c] for c in ("rnn", "lstm")}
    assert by_cell["rnn"][0] == pytest.approx(1.0) and by_cell["rnn"][19] < by_cell["rnn"][1]
    _assert_png(out / "gradient_flow.png")
    assert json.loads((out / "config.json").read_text())["length"] == 20
    assert "d=10" in proc.stdout and "rnn" in proc.stdout
    # the results are not silently replaced
    before = (out / "gradient_flow.csv").read_bytes()
    with pytest.raises(SystemExit) as exc:
        gradient_flow.main(["--out", str(out), "--length", "20"])
    assert exc.value.code == 2 and "--overwrite" in capsys.readouterr().err
    assert (out / "gradient_flow.csv").read_bytes() == before


def test_long_dependency_cli_with_tbptt_rows(tmp_path):
    out = tmp_path / "ld"
    proc = _run("seq2seq.experiments.long_dependency", "--out", str(out), "--gaps", "2,4", "--steps", "50",
                "--hidden", "8", "--tbptt", "2", "--test-size", "200")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    columns, rows = _read_csv(out / "long_dependency.csv")
    assert columns == ["cell", "gap", "tbptt", "seed", "accuracy", "final_loss"]
    keys = {(r["cell"], int(r["gap"]), int(r["tbptt"])) for r in rows}
    assert keys == {(c, g, k) for c in ("rnn", "lstm", "gru") for g in (2, 4) for k in (0, 2)}
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)
    _assert_png(out / "long_dependency.png")
    config = json.loads((out / "config.json").read_text())
    assert config["gaps"] == [2, 4] and config["tbptt"] == [2]
    assert "G=4" in proc.stdout


@pytest.mark.parametrize(
    "module, args, message",
    [
        (gradient_flow, ["--cells", "rnn,tree"], "unknown cell 'tree'"),
        (gradient_flow, ["--length", "2"], "must be >= 3"),
        (long_dependency, ["--gaps", "5,0"], "every gap must be >= 1"),
        (long_dependency, ["--cells", "lstm,foo"], "unknown cell 'foo'"),
        (long_dependency, ["--tbptt", "-1"], "must be >= 0"),
        (long_dependency, ["--steps", "x"], "expected an integer"),
    ],
)
def test_bad_arguments_exit_with_a_message(tmp_path, capsys, module, args, message):
    with pytest.raises(SystemExit) as exc:
        module.main(["--out", str(tmp_path / "out"), *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
