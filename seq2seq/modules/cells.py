"""Recurrent cells written from the seed equations (no torch.nn cells inside).

Parameter names, shapes and gate order follow torch.nn (`weight_ih: (G*H, I)`,
`weight_hh: (G*H, H)`, `bias_ih`, `bias_hh: (G*H,)`; LSTM gates i,f,g,o; GRU gates r,z,n),
so `cell.load_state_dict(torch.nn.LSTMCell(I, H).state_dict())` works.

Every cell splits its work in two so a layer can batch the input side over all time steps:
  xp = cell.input_projection(x)        # W_ih x + b_ih, for (B, I) or (B, T, I)
  state = cell.recurrence(xp, state)   # the part that depends on the previous state
`cell(x, state)` does both for one step.

`cell.int8` is None (float); seq2seq/modules/quantize.py sets it on a quantized copy, and the two
projections then run its int8 products instead of F.linear.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

State = Tensor | tuple[Tensor, Tensor]


class _Cell(nn.Module):
    """Holds W_ih, W_hh, b_ih, b_hh for `gates` stacked gate blocks, initialised as torch.nn."""

    gates: int = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        G = self.gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(G, input_size))
        self.weight_hh = nn.Parameter(torch.empty(G, hidden_size))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(G))
            self.bias_hh = nn.Parameter(torch.empty(G))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.int8 = None  # int8 projections (modules/quantize.py: CellInt8), None: float
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def input_projection(self, x: Tensor) -> Tensor:
        """x: (..., I) -> (..., G*H): the input side W_ih x + b_ih."""
        if self.int8 is not None:
            return self.int8.ih(x)
        return F.linear(x, self.weight_ih, self.bias_ih)

    def hidden_projection(self, h: Tensor) -> Tensor:
        """h: (B, H) -> (B, G*H): the recurrent side W_hh h + b_hh."""
        if self.int8 is not None:
            return self.int8.hh(h)
        return F.linear(h, self.weight_hh, self.bias_hh)

    def zeros(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[0], self.hidden_size)

    def forward(self, x: Tensor, state: State | None = None) -> State:
        """x: (B, I), state: h (B, H) or (h, c), None for zeros -> the next state."""
        return self.recurrence(self.input_projection(x), state)

    def recurrence(self, xp: Tensor, state: State | None) -> State:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias_ih is not None}"


class RNNCell(_Cell):
    """Elman cell, seed 002 eq. 8.7 (U = W_ih, W = W_hh, b = b_ih + b_hh):

    h' = tanh(W_ih x + b_ih + W_hh h + b_hh)     (or relu)
    """

    gates = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: Literal["tanh", "relu"] = "tanh",
    ):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias)

    def recurrence(self, xp: Tensor, state: Tensor | None) -> Tensor:
        h = self.zeros(xp) if state is None else state
        a = xp + self.hidden_projection(h)  # eq. 8.7: a = W h + U x + b
        return torch.tanh(a) if self.nonlinearity == "tanh" else torch.relu(a)


class LSTMCell(_Cell):
    """LSTM with a forget gate, seed 002 eq. 8.40-8.45 (s is the cell state c here):

    i = σ(W_ii x + W_hi h + b_i [+ p_i ⊙ c])      input gate       (8.41)
    f = σ(W_if x + W_hf h + b_f [+ p_f ⊙ c])      forget gate      (8.43)
    g = tanh(W_ig x + W_hg h + b_g)               candidate input  (8.40)
    c' = f ⊙ c + i ⊙ g                                             (8.44)
    o = σ(W_io x + W_ho h + b_o [+ p_o ⊙ c'])     output gate      (8.42)
    h' = o ⊙ tanh(c')                                              (8.45)

    With `peephole=True` (§8.4.3) the bracketed terms are added: diagonal peephole weights
    `weight_ci`, `weight_cf`, `weight_co: (H,)`; i and f see c_{t-1}, o sees c_t.
    """

    gates = 4

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, peephole: bool = False):
        self.peephole = peephole
        super().__init__(input_size, hidden_size, bias)
        if peephole:
            self.weight_ci = nn.Parameter(torch.empty(hidden_size))
            self.weight_cf = nn.Parameter(torch.empty(hidden_size))
            self.weight_co = nn.Parameter(torch.empty(hidden_size))
            self.reset_parameters()

    def zeros(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = x.new_zeros(x.shape[0], self.hidden_size)
        return z, z

    def recurrence(self, xp: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
        h, c = self.zeros(xp) if state is None else state
        i, f, g, o = (xp + self.hidden_projection(h)).chunk(4, dim=-1)
        if self.peephole:
            i = i + self.weight_ci * c
            f = f + self.weight_cf * c
        i, f, g = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g)
        c = f * c + i * g  # eq. 8.44
        if self.peephole:
            o = o + self.weight_co * c
        h = torch.sigmoid(o) * torch.tanh(c)  # eq. 8.45
        return h, c

    def extra_repr(self) -> str:
        return super().extra_repr() + f", peephole={self.peephole}"


class GRUCell(_Cell):
    """Gated recurrent unit (seed 001), gates r, z, n:

    r = σ(W_ir x + b_ir + W_hr h + b_hr)                         reset gate
    z = σ(W_iz x + b_iz + W_hz h + b_hz)                         update gate
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))                reset_after=True (cuDNN, torch.nn)
    n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn)                reset_after=False (seeds, Cho 2014)
    h' = (1 - z) ⊙ n + z ⊙ h

    The default, reset_after=True, is the function torch.nn.GRU and cuDNN compute, so the cell path
    and the fused path of `RNN` agree on the same weights; reset_after=False is the seeds' GRU,
    which only the cell path has.

    The seeds write h' = (1 - z) h + z h' with the update gate the other way round; this cell
    keeps torch.nn's convention so weights move between the two (seed z = 1 - z here).
    """

    gates = 3

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, reset_after: bool = True):
        self.reset_after = reset_after
        super().__init__(input_size, hidden_size, bias)

    def recurrence(self, xp: Tensor, state: Tensor | None) -> Tensor:
        h = self.zeros(xp) if state is None else state
        H = self.hidden_size
        x_r, x_z, x_n = xp.chunk(3, dim=-1)
        if self.reset_after:
            h_r, h_z, h_n = self.hidden_projection(h).chunk(3, dim=-1)
            r = torch.sigmoid(x_r + h_r)
            z = torch.sigmoid(x_z + h_z)
            n = torch.tanh(x_n + r * h_n)
        else:
            b = self.bias_hh
            w_rz, w_n = self.weight_hh[: 2 * H], self.weight_hh[2 * H :]
            h_r, h_z = F.linear(h, w_rz, None if b is None else b[: 2 * H]).chunk(2, dim=-1)
            r = torch.sigmoid(x_r + h_r)
            z = torch.sigmoid(x_z + h_z)
            n = torch.tanh(x_n + F.linear(r * h, w_n, None if b is None else b[2 * H :]))
        return (1 - z) * n + z * h

    def extra_repr(self) -> str:
        return super().extra_repr() + f", reset_after={self.reset_after}"


CELLS: dict[str, type[_Cell]] = {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}


def make_cell(cell: str, input_size: int, hidden_size: int, **options) -> _Cell:
    """Builds a cell by name ("rnn", "lstm", "gru") with its own options."""
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; choose one of {sorted(CELLS)}")
    return CELLS[cell](input_size, hidden_size, **options)
