"""Dynamic int8 quantisation of the networks' matrix products, for decoding on the CPU.

    model = quantize_int8(predictor.model)   # a quantized copy; predictor.model is left as it was

y = W x + b then runs as one call of torch.ops.quantized.linear_dynamic: W is stored as int8, one
scale per output row (symmetric, s_i = max_j |W_ij| / 127); x is quantised to 8 bits over its own
range at every call (dynamic: no calibration); the products accumulate in int32 and come back as
float32. Everything between the products stays float32.

What runs int8:
- every nn.Linear with at least MIN_OUT_FEATURES outputs: the output layers (also when tied to the
  embedding: the embedding keeps its float weights), W_o / W_c, the attention's query and key
  projections, the bridge, the VQA classifier; it becomes an `Int8Linear`;
- the cells' projections W_ih x + b_ih and W_hh h + b_hh (modules/cells.py), through the cell's
  `int8` attribute;
- the looping attention decoder's layer-0 input projection, which it computes in two column
  blocks, W_e e_t + b_ih and W_r r_t (modules/decoder.py), through the decoder's `int8` attribute;
- the fused recurrent layers (torch.nn.LSTM/GRU/RNN) of the networks that step one word at a time:
  the language model, Show and Tell, the decoders that do not loop (fixed context, Luong without
  input feeding) switch to the cell path of `RNN` (the same function, the same weights) with
  int8 cells; a fused kernel called for one step is slow (Show and Tell's beam search: 390 ms
  float, 227 ms with int8 linear layers only, 110 ms with int8 cells too).

What stays float: the encoders' recurrent layers (RecurrentEncoder: the translation source, the
VQA question), which read whole sentences once in one fused kernel, about 3% of beam decoding;
on the int8 cell path, which loops over time in Python, the quickstart's encoder took 2.5x as
long. The embeddings, layers with fewer than MIN_OUT_FEATURES outputs (Bahdanau's
energy v^T tanh(.), one output: int8 is 4x slower there, the activation's quantisation costs more
than the product), the attention's weighted sums and Luong's scores (batched products of two
activations), the gates' element-wise functions, the softmax and the search, and the seeds' GRU
(reset_after=False) recurrent product, which slices W_hh by rows. Vision CNNs are not touched.

Why not `torch.ao.quantization.quantize_dynamic`: in torch 2.14.1 it warns that torch.ao.quantization
is deprecated (to be replaced by torchao); and it only swaps nn.Linear / nn.LSTM / nn.GRU modules,
so it misses the cells, which call F.linear on their own Parameters, and the decoder's
column-split projection: the recurrent decoder's products would stay float. The kernel used here,
`quantized::linear_dynamic`, works in 2.14.1 without warnings; only building its packed weight
goes through a qint8 tensor, whose creation functions torch marks deprecated (pytorch issue
184982): `quantize_int8` silences that one warning for its own call. Without these kernels,
`torch.ops.onednn.qlinear_pointwise` on plain int8 tensors is the maintained replacement (here
13% slower for the 8k-word output layer of 320 rows, up to 2-3x for small products: the
activation's quantisation is then separate eager ops).

The quantized copy is for inference only (no gradients: its parameters have requires_grad False)
on the CPU, in float32, in eval mode; it refuses CUDA (ValueError), as do torch's kernels. Its
state_dict is not a checkpoint's: quantize after loading, each time (0.4 s for the quickstart's
translator). An activation's scale is that of its whole batch (padding, zeros, cannot change it),
so a sentence's int8 result can depend a little on the other sentences of its batch.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import Tensor, nn

from seq2seq.modules.cells import _Cell
from seq2seq.modules.decoder import RecurrentDecoder
from seq2seq.modules.encoder import RecurrentEncoder
from seq2seq.modules.rnn import RNN

__all__ = ["MIN_OUT_FEATURES", "Int8Linear", "quantize_int8", "quantized_engine"]

# nn.Linear layers with fewer outputs stay float (an energy v^T tanh(.) has one: int8 is slower)
MIN_OUT_FEATURES = 16
# the x86 engines of quantized::linear_dynamic, preferred first: oneDNN quantises activations to
# 8 bits (fbgemm and x86 to 7, see Int8Linear) and ran the quickstart's 8k-word output layer
# faster (64-320 rows: 1.3-1.7x fbgemm's speed; 5 rows: 0.7x); whole decoding: about the same
ENGINES = ("onednn", "x86", "fbgemm")


def _supported_engines() -> list[str]:
    return torch.backends.quantized.supported_engines


def quantized_engine(engine: str | None = None) -> str:
    """The quantized engine to pack weights for: `engine` ("onednn", "x86" or "fbgemm") if given,
    else the first of ENGINES this torch has. ValueError when it is not there (an ARM build of
    torch has only qnnpack) or `engine` is none of them."""
    if engine is not None and engine not in ENGINES:
        raise ValueError(f"int8 engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    supported = _supported_engines()
    for name in [engine] if engine else ENGINES:
        if name in supported:
            return name
    have = ", ".join(e for e in supported if e != "none") or "none"
    raise ValueError(
        f"int8 quantisation needs torch's quantized engine {engine or ' or '.join(ENGINES)} (x86 CPUs), "
        f"which this torch build lacks (it has: {have}); decode in float32 instead"
    )


class Int8Linear(nn.Module):
    """y = W x + b with W int8 (per output row) and x quantised at each call: x (..., in) ->
    (..., out) float32, through torch.ops.quantized.linear_dynamic. Built from a float weight
    (out, in) and bias (out,) or None; the float tensors are not kept."""

    def __init__(self, weight: Tensor, bias: Tensor | None, engine: str):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.engine = engine
        # fbgemm without VNNI adds u8 x s8 pairs in int16: 7-bit activations cannot saturate it
        # (torch's default for these engines); oneDNN accumulates in int32
        self.reduce_range = engine != "onednn"
        self.packed = _pack(weight.detach().float(), None if bias is None else bias.detach().float(), engine)

    @classmethod
    def from_linear(cls, linear: nn.Linear, engine: str) -> Int8Linear:
        return cls(linear.weight, linear.bias, engine)

    def forward(self, x: Tensor) -> Tensor:
        """x: (..., in) float32 on the CPU -> (..., out) float32."""
        if x.device.type != "cpu":
            raise ValueError(
                f"an int8 layer runs on the CPU only, got its input on {x.device}: keep a model that "
                "quantize_int8 converted on the CPU (it cannot move to a GPU)"
            )
        if x.dim() == 1:
            return torch.ops.quantized.linear_dynamic(x.unsqueeze(0), self.packed, self.reduce_range)[0]
        return torch.ops.quantized.linear_dynamic(x, self.packed, self.reduce_range)

    def unpacked(self) -> tuple[Tensor, Tensor | None]:
        """The stored weight as a qint8 tensor (out, in) (`.int_repr()`: its int8 values,
        `.q_per_channel_scales()`: one scale a row) and the float bias."""
        return torch.ops.quantized.linear_unpack(self.packed)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 ({self.engine})"


def _pack(weight: Tensor, bias: Tensor | None, engine: str):
    """The packed int8 weight (one symmetric scale per row) and float bias of linear_dynamic."""
    scales = (weight.abs().amax(dim=1) / 127).clamp_min(torch.finfo(torch.float32).eps).double()
    zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine  # a packed weight belongs to the engine it was packed for
    try:
        with warnings.catch_warnings():  # the qint8 tensor is only the packing's input (see above)
            warnings.filterwarnings(
                "ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel"
            )
            q = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
        return torch.ops.quantized.linear_prepack(q, bias)
    finally:
        torch.backends.quantized.engine = previous


class CellInt8(nn.Module):
    """A cell's two projections in int8: `ih` W_ih x + b_ih and `hh` W_hh h + b_hh (the seeds'
    GRU, reset_after=False, does not use `hh`: its recurrent product slices W_hh and stays float)."""

    def __init__(self, cell: _Cell, engine: str):
        super().__init__()
        self.ih = Int8Linear(cell.weight_ih, cell.bias_ih, engine)
        self.hh = Int8Linear(cell.weight_hh, cell.bias_hh, engine)


class DecoderInt8(nn.Module):
    """A looping RecurrentDecoder's layer-0 input projection in its two column blocks:
    `embedded` W_e e + b_ih (B, E) -> (B, G*H) and `rest` W_r r (context, image context or
    fed-back output) -> (B, G*H)."""

    def __init__(self, decoder: RecurrentDecoder, engine: str):
        super().__init__()
        w_e, w_rest = decoder._input_weights()
        self.embedded = Int8Linear(w_e, decoder.rnn.cells["l0"].bias_ih, engine)
        self.rest = Int8Linear(w_rest, None, engine)


def _on_cells(rnn: RNN) -> RNN:
    """A fused RNN as the cell path: the same parameters under the same public names (rnn.py),
    so the same function."""
    cells = RNN(
        rnn.cell, rnn.input_size, rnn.hidden_size, rnn.num_layers, rnn.num_directions == 2, rnn.dropout,
        "cells", **rnn.cell_options,
    )  # fmt: skip
    cells.load_state_dict(rnn.state_dict())
    return cells.train(rnn.training)


def _check(model: nn.Module) -> None:
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.device.type != "cpu":
            raise ValueError(
                f"int8 quantisation runs on the CPU only, but {name or 'a tensor'} is on {t.device}: "
                "quantize the model on the CPU (load the checkpoint with device='cpu') and decode there"
            )
        if t.is_floating_point() and t.dtype != torch.float32:
            raise ValueError(f"int8 quantisation starts from float32 weights, but {name} is {t.dtype}")


def quantize_int8(model: nn.Module, engine: str | None = None, inplace: bool = False) -> nn.Module:
    """A copy of `model` (Seq2Seq, LanguageModel, ShowTell, ShowAttendTell, VQANet or any module
    built from seq2seq.modules) whose matrix products run int8 on the CPU, in eval mode, without
    gradients; `model` itself is unchanged (inplace=True converts and returns it instead).
    `engine`: "onednn", "x86" or "fbgemm" (None: the first of those this torch has). What is
    quantized: the module docstring. ValueError for a model with tensors off the CPU (CUDA) or
    weights other than float32, and when torch has none of these engines."""
    engine = quantized_engine(engine)
    _check(model)
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    model.requires_grad_(False)
    for module in list(model.modules()):  # fused RNNs that step: the cell path, quantized below
        if isinstance(module, RecurrentEncoder):
            continue
        for name, child in list(module.named_children()):
            if isinstance(child, RNN) and child.impl == "fused":
                setattr(module, name, _on_cells(child))
    for module in list(model.modules()):
        if isinstance(module, _Cell):
            module.int8 = CellInt8(module, engine)
        elif isinstance(module, RecurrentDecoder) and module.loops:
            module.int8 = DecoderInt8(module, engine)
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear and child.out_features >= MIN_OUT_FEATURES:
                setattr(module, name, Int8Linear.from_linear(child, engine))
    return model
