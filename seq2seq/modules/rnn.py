"""A stacked, optionally bidirectional recurrent layer with two interchangeable implementations.

impl="fused": torch.nn.RNN/LSTM/GRU on packed sequences (cuDNN on a GPU; on the CPU an LSTM over
              a batch of a few distinct lengths runs in oneDNN segments, `_forward_segments`).
impl="cells": the cells of cells.py unrolled step by step (peepholes, the seeds' GRU).
impl="auto":  fused where it computes the same function, cells otherwise (peepholes, the seeds' GRU).

Both take `x: (B, T, I)` batch first, optional `lengths: (B,)`, and a state laid out as torch.nn:
`h: (L*D, B, H)` or `(h, c)`. Padded steps give zero outputs; each sequence's final state is
taken at its own length (for the backward direction: the state after its first token).
Parameters carry the same names in both (`weight_ih_l0`, `bias_hh_l1_reverse`, ...), so a
state dict saved by one loads into the other and computes the same function, with the default
cell options (GRUCell's default is reset_after=True, the fused GRU's function).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seq2seq.modules.cells import State, make_cell

FUSED = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
SEGMENTS = torch.backends.mkldnn.is_available()  # the fused LSTM on the CPU without packing (oneDNN)


def fusable(cell: str, options: dict) -> bool:
    """Whether torch.nn's kernel computes this cell: no peepholes, the GRU with reset_after."""
    return not options.get("peephole", False) and options.get("reset_after", True)


def cell_options(cell: str, peephole: bool = False, gru_reset_after: bool = True) -> dict:
    """The typed model options as the cell's own: `peephole` for an LSTM (seed 002 §8.4.3),
    `reset_after` for a GRU (False: the seeds' GRU). Asking one of another cell is a ValueError."""
    if peephole and cell != "lstm":
        raise ValueError(f"peephole=True needs cell='lstm', got cell={cell!r}")
    if not gru_reset_after and cell != "gru":
        raise ValueError(f"gru_reset_after=False needs cell='gru', got cell={cell!r}")
    if cell == "lstm":
        return {"peephole": peephole} if peephole else {}
    if cell == "gru":
        return {} if gru_reset_after else {"reset_after": False}
    return {}


@dataclass(frozen=True)
class RecurrentOptions:
    """The options of a recurrent network that travel together, as one object: from YAML (`rnn:`
    under a model's init_args, built by LightningCLI) through the LightningModule to every
    network and layer. `cell` is seed 001/002's vanilla RNN, LSTM or GRU; `peephole` (LSTM, seed
    002 §8.4.3) and `gru_reset_after=False` (the seeds' GRU) are cell variants that run on the
    cell path (impl="auto" picks it; impl="fused" with them is a ValueError). `embed_dim` is the
    size of the input embedding E, `dropout` the rate between layers and on the embeddings."""

    cell: Literal["rnn", "lstm", "gru"] = "lstm"
    embed_dim: int = 256
    hidden_size: int = 256
    num_layers: int = 1
    dropout: float = 0.0
    impl: Literal["auto", "fused", "cells"] = "auto"
    peephole: bool = False
    gru_reset_after: bool = True

    def __post_init__(self) -> None:
        if self.cell not in FUSED:
            raise ValueError(f"rnn.cell must be one of {', '.join(FUSED)}, got {self.cell!r}")
        if self.impl not in ("auto", "fused", "cells"):
            raise ValueError(f"rnn.impl must be 'auto', 'fused' or 'cells', got {self.impl!r}")
        for name in ("embed_dim", "hidden_size", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"rnn.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"rnn.dropout must be in [0, 1), got {self.dropout}")
        self.cell_options()  # a variant of another cell is a ValueError now, not at the first layer

    def cell_options(self) -> dict:
        """The cell's own options (see `cell_options`)."""
        return cell_options(self.cell, self.peephole, self.gru_reset_after)

    def layer(self, input_size: int, bidirectional: bool = False) -> RNN:
        """The stacked RNN these options describe over inputs of `input_size`."""
        return RNN(
            self.cell, input_size, self.hidden_size, self.num_layers, bidirectional, self.dropout,
            self.impl, **self.cell_options(),
        )  # fmt: skip


class RNN(nn.Module):
    """Stacked (num_layers) and bidirectional recurrent layer, batch first.

    `cell_options` go to the cell: `nonlinearity` (rnn), `peephole` (lstm), `reset_after` (gru).
    The fused path exists for rnn, lstm without peepholes and gru with `reset_after=True` (the
    default); impl="fused" with another option is a ValueError, impl="auto" takes the cells then.
    """

    def __init__(
        self,
        cell: Literal["rnn", "lstm", "gru"],
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        impl: Literal["auto", "fused", "cells"] = "auto",
        **cell_options,
    ):
        super().__init__()
        if cell not in FUSED:
            raise ValueError(f"unknown cell {cell!r}; choose one of {sorted(FUSED)}")
        if impl not in ("auto", "fused", "cells"):
            raise ValueError(f"impl must be 'auto', 'fused' or 'cells', got {impl!r}")
        if impl == "auto":
            impl = "fused" if fusable(cell, cell_options) else "cells"
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.cell, self.impl = cell, impl
        self.input_size, self.hidden_size = input_size, hidden_size
        self.num_layers, self.num_directions = num_layers, 2 if bidirectional else 1
        self.dropout = dropout
        self.cell_options = dict(cell_options)
        if impl == "fused":
            self._check_fusable(cell, cell_options)
            extra = {"nonlinearity": cell_options["nonlinearity"]} if "nonlinearity" in cell_options else {}
            bias = cell_options.get("bias", True)
            self.fused = FUSED[cell](
                input_size, hidden_size, num_layers, bias=bias, batch_first=True,
                dropout=dropout if num_layers > 1 else 0.0, bidirectional=bidirectional, **extra,
            )  # fmt: skip
        else:
            self.cells = nn.ModuleDict()
            for layer in range(num_layers):
                in_size = input_size if layer == 0 else hidden_size * self.num_directions
                for d in range(self.num_directions):
                    self.cells[self._suffix(layer, d)] = make_cell(cell, in_size, hidden_size, **cell_options)
        self._hook_init()

    @staticmethod
    def _check_fusable(cell: str, options: dict) -> None:
        if cell == "lstm" and options.get("peephole", False):
            raise ValueError("peephole LSTM has no fused kernel: use impl='cells' (or 'auto')")
        if cell == "gru" and not options.get("reset_after", True):
            raise ValueError(
                "the fused GRU applies the reset gate after the matrix product "
                "(reset_after=True); for the seeds' GRU (reset_after=False) use impl='cells' (or 'auto')"
            )
        unknown = set(options) - {"peephole", "reset_after", "nonlinearity", "bias"}
        if unknown:
            raise ValueError(f"unknown cell options {sorted(unknown)} for {cell!r}")

    @staticmethod
    def _suffix(layer: int, direction: int) -> str:
        return f"l{layer}" + ("_reverse" if direction else "")

    @property
    def output_size(self) -> int:
        return self.hidden_size * self.num_directions

    # -- state dicts: the same names for both implementations ---------------------------------
    # Internally the parameters live in `fused.weight_ih_l0` or `cells.l0.weight_ih`; the state
    # dict shows both as `weight_ih_l0`, so checkpoints move between implementations.
    _INTERNAL = re.compile(r"(?P<pre>^|\.)cells\.(?P<suffix>l\d+(?:_reverse)?)\.(?P<param>\w+)$")
    _PUBLIC = re.compile(r"^(?P<param>.+)_(?P<suffix>l\d+(?:_reverse)?)$")

    def _hook_init(self) -> None:
        self._register_state_dict_hook(RNN._to_public)
        self._register_load_state_dict_pre_hook(self._to_internal)
        self.register_load_state_dict_post_hook(RNN._report_public)

    @staticmethod
    def _to_public(module, state_dict, prefix, local_metadata):
        for key in [k for k in state_dict if k.startswith(prefix)]:
            rest = key[len(prefix) :]
            if rest.startswith("fused."):
                state_dict[prefix + rest[len("fused.") :]] = state_dict.pop(key)
            elif rest.startswith("cells."):
                suffix, param = rest[len("cells.") :].split(".", 1)
                state_dict[f"{prefix}{param}_{suffix}"] = state_dict.pop(key)
        return state_dict

    @staticmethod
    def _report_public(module, incompatible_keys):
        """Missing or unexpected keys are reported by their public names."""
        for keys in (incompatible_keys.missing_keys, incompatible_keys.unexpected_keys):
            keys[:] = [RNN._INTERNAL.sub(r"\g<pre>\g<param>_\g<suffix>", k) for k in keys]
            keys[:] = [k.replace("fused.", "") for k in keys]

    def _to_internal(self, state_dict, prefix, *args):
        for key in [k for k in state_dict if k.startswith(prefix)]:
            match = self._PUBLIC.match(key[len(prefix) :])
            if match is None or "." in key[len(prefix) :]:
                continue
            if self.impl == "fused":
                state_dict[f"{prefix}fused.{key[len(prefix) :]}"] = state_dict.pop(key)
            else:
                state_dict[f"{prefix}cells.{match['suffix']}.{match['param']}"] = state_dict.pop(key)

    # -- forward ------------------------------------------------------------------------------
    def forward(
        self, x: Tensor, lengths: Tensor | None = None, state: State | None = None
    ) -> tuple[Tensor, State]:
        """x: (B, T, I), lengths: (B,) or None (all T), state: (L*D, B, H) [pair] or None
        -> outputs (B, T, D*H) (zero at padded steps), final state (L*D, B, H) [pair]."""
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"expected input (B, T, {self.input_size}), got {tuple(x.shape)}")
        if self.impl == "fused":
            return self._forward_fused(x, lengths, state)
        return self._forward_cells(x, lengths, state)

    def _forward_fused(self, x, lengths, state):
        if lengths is None:
            return self.fused(x, state)
        T = x.shape[1]
        traced = torch.jit.is_tracing() or torch.compiler.is_compiling()  # export: ONNX's LSTM with lengths
        cpu_lstm = self.cell == "lstm" and x.device.type == "cpu" and x.dtype == torch.float32 and SEGMENTS
        if cpu_lstm and not traced:
            rows = lengths.tolist()
            if 1 <= min(rows) and max(rows) <= T and 2 <= len(set(rows)) <= T // 3:  # else packing
                return self._forward_segments(x, lengths, state)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, final = self.fused(packed, state)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
        return out, final

    def _forward_segments(self, x, lengths, state):
        """The fused LSTM over ragged lengths on the CPU without packing: a packed batch runs a
        product per time step, oneDNN's LSTM one per call. The rows, sorted by length (longest
        first), run in segments between consecutive distinct lengths, each segment one call over the
        rows still going, so each row's final state is taken at its own length; the backward
        direction reads each row reversed within its length. Same function as the packed path.
        Used when the batch has 2 to T/3 distinct lengths, as batches sorted by length do: each
        call costs a fixed setup, and rows of one length are fastest packed. A 64 x 256 BiLSTM's
        forward and backward against packing: 2 lengths in 9 steps 1.21x as fast, 3 in 9 1.10x,
        6 in 9 0.89x, 2 to 6 in 15 1.13-1.33x, 2 to 6 in 27 1.40-1.74x; one length 0.73-0.91x."""
        B, T, _ = x.shape
        L, D, H = self.num_layers, self.num_directions, self.hidden_size
        lengths = lengths.to(x.device)
        order = torch.argsort(lengths, descending=True, stable=True)
        lengths = lengths[order]
        steps = torch.arange(T, device=x.device)[None, :]
        valid = steps < lengths[:, None]  # (B, T)
        rev = torch.where(valid, lengths[:, None] - 1 - steps, steps)[:, :, None]  # an involution
        ends = sorted(set(lengths.tolist()))  # the distinct lengths, ascending
        alive = [int((lengths >= end).sum()) for end in ends]  # rows still going in each segment
        if state is None:
            h0 = c0 = x.new_zeros(L * D, B, H)
        else:
            h0, c0 = (s.index_select(1, order) for s in state)
        weights = self.fused._flat_weights
        per_direction = len(weights) // (L * D)
        layer_in, finals_h, finals_c = x.index_select(0, order), [], []
        for layer in range(L):
            outs = []
            for d in range(D):
                k = layer * D + d
                w = weights[k * per_direction : (k + 1) * per_direction]
                inp = layer_in if d == 0 else layer_in.gather(1, rev.expand_as(layer_in))
                out, h, c = self._segments(inp, ends, alive, (h0[k], c0[k]), w)
                outs.append(out if d == 0 else out.gather(1, rev.expand_as(out)))
                finals_h.append(h)
                finals_c.append(c)
            layer_in = torch.cat(outs, -1).masked_fill(~valid[:, :, None], 0.0)
            if self.dropout and layer < L - 1:
                layer_in = F.dropout(layer_in, self.dropout, self.training)
        unsort = torch.argsort(order)
        final = (
            torch.stack(finals_h, 0).index_select(1, unsort),
            torch.stack(finals_c, 0).index_select(1, unsort),
        )
        return layer_in.index_select(0, unsort), final

    def _segments(self, x, ends, alive, state, weights):
        """One direction of one layer over rows sorted by length, longest first: x (B, T, I) ->
        outputs (B, T, H) (anything at padded steps), each row's final h and c (B, H)."""
        B = x.shape[0]
        h, c = state
        pieces, finals, start = [], [], 0
        for s, (end, n) in enumerate(zip(ends, alive)):
            out, h, c = torch._VF.lstm(
                x[:n, start:end], (h[None, :n], c[None, :n]), weights, self.fused.bias, 1, 0.0,
                self.training, False, True,
            )  # fmt: skip
            h, c = h[0], c[0]
            pieces.append(F.pad(out, (0, 0, 0, 0, 0, B - n)))  # rows already done: zeros
            done = alive[s + 1] if s + 1 < len(alive) else 0
            finals.append((h[done:], c[done:]))  # the rows whose length is `end`
            start = end
        if start < x.shape[1]:  # steps past the longest row
            pieces.append(x.new_zeros(B, x.shape[1] - start, pieces[0].shape[-1]))
        finals.reverse()  # from the shortest rows (the tail) to the longest: back to row order
        return torch.cat(pieces, 1), torch.cat([f[0] for f in finals]), torch.cat([f[1] for f in finals])

    def _forward_cells(self, x, lengths, state):
        B, T, _ = x.shape
        L, D = self.num_layers, self.num_directions
        lstm = self.cell == "lstm"
        if lengths is None:
            mask = None
        else:
            mask = torch.arange(T, device=x.device)[None, :] < lengths.to(x.device)[:, None]
        h0, c0 = (state if lstm else (state, None)) if state is not None else (None, None)
        finals_h, finals_c = [], []
        layer_in = x
        for layer in range(L):
            outs = []
            for d in range(D):
                k = layer * D + d
                cell = self.cells[self._suffix(layer, d)]
                if h0 is None:
                    s = cell.zeros(layer_in)
                else:
                    s = (h0[k], c0[k]) if lstm else h0[k]
                xp = cell.input_projection(layer_in)  # (B, T, G*H): all steps at once
                steps = range(T - 1, -1, -1) if d else range(T)
                out = [None] * T
                for t in steps:
                    new = cell.recurrence(xp[:, t], s)
                    if mask is not None:  # padded steps keep the state: each ends at its own length
                        m = mask[:, t, None]
                        new = (
                            (torch.where(m, new[0], s[0]), torch.where(m, new[1], s[1]))
                            if lstm else torch.where(m, new, s)
                        )  # fmt: skip
                    s = new
                    h = s[0] if lstm else s
                    out[t] = h if mask is None else h * mask[:, t, None]
                outs.append(torch.stack(out, dim=1))
                finals_h.append(s[0] if lstm else s)
                if lstm:
                    finals_c.append(s[1])
            layer_in = torch.cat(outs, dim=-1) if D == 2 else outs[0]
            if layer < L - 1 and self.dropout > 0:
                layer_in = F.dropout(layer_in, self.dropout, self.training)
        h_n = torch.stack(finals_h)
        return layer_in, ((h_n, torch.stack(finals_c)) if lstm else h_n)

    def step(self, xp: Tensor, state: list[State]) -> tuple[Tensor, list[State]]:
        """One time step of a unidirectional stack on the cell path, for decoders that feed each
        step's result back. xp: (B, G*H), layer 0's input projection W_ih x + b_ih (a caller may
        build it from parts computed once per sequence); state: one entry per layer, h (B, H) or
        (h, c) -> the top layer's h (B, H) and the new states. Dropout between layers as forward."""
        if self.impl != "cells" or self.num_directions != 1:
            raise ValueError("RNN.step needs impl='cells' and one direction")
        new, h = [], None
        for layer, s in enumerate(state):
            cell = self.cells[self._suffix(layer, 0)]
            if h is not None:  # the layer below's output
                xp = cell.input_projection(F.dropout(h, self.dropout, self.training) if self.dropout else h)
            s = cell.recurrence(xp, s)
            h = s[0] if isinstance(s, tuple) else s
            new.append(s)
        return h, new

    def extra_repr(self) -> str:
        return (
            f"{self.cell}, {self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
            f"bidirectional={self.num_directions == 2}, impl={self.impl}"
        )
