"""The teacher-forced loop of the Bahdanau LSTM decoder, with its backward pass written out.

The decoder's loop (modules/decoder.py, `_advance`) makes about 40 small ops a target word, each
an autograd node, and its backward pays per step what could be paid once per batch: the
gradients of W_hh, W_q and of the projected memory are sums over time, taken step by step as
T small products. This autograd Function runs the same forward ops without recording a graph
and writes back-propagation through time (seed 002 eq. 8.10-8.24, here for the LSTM of eq.
8.40-8.45 and the attention) by hand: per step only what the recurrence needs, the sums over
time of W_hh's, W_q's and the memories' gradients as one product each after the loop. The
forward values are the decoder's own (same ops, same
order); the gradients equal autograd's to float rounding (tests/seq2seq/test_decoder_loop.py).

Forward, t = 1..T, from h_0, c_0 (the bridge) and per batch: memory h_j (B, S, M), keys U h_j
(B, S, A), the projected memory W_r h_j (B, S, G) (G = 4H), xe_t = W_e e_t + b_ih (B, T, G):

    z_tj = tanh(W_q s_{t-1} + U h_j)           α_t = softmax_j(v·z_tj)   (padding: α = 0)
    c_t = Σ_j α_tj h_j                          x_t = xe_t + Σ_j α_tj W_r h_j
    [i; f; g; o] = x_t + W_hh s_{t-1} + b_hh    (σ, σ, tanh, σ)
    c'_t = f ⊙ c'_{t-1} + i ⊙ g                 s_t = o ⊙ tanh(c'_t)

(c' is the LSTM's cell state.) Outputs: [s_t; c_t] (B, T, H + M) and α (B, T, S).

Backward, t = T..1, δs and δc' carried from step t+1 (zero after T):

    δs_t += ∂L/∂s_t                             δc'_t += δs_t ⊙ o ⊙ (1 - tanh² c'_t)
    δ[i; f; g; o] = [δc' ⊙ g ⊙ i(1-i); δc' ⊙ c'_{t-1} ⊙ f(1-f); δc' ⊙ i ⊙ (1-g²); δs ⊙ tanh c' ⊙ o(1-o)]
    δα_tj = h_j·∂L/∂c_t + W_r h_j·δx_t + ∂L/∂α_tj      δe_tj = α_tj (δα_tj - Σ_k α_tk δα_tk)
    δ(W_q s + U h_j) = δe_tj v ⊙ (1 - z_tj²), added into δ(U h_j);  δv += Σ_j δe_tj z_tj
    δs_{t-1} = W_hhᵀ δ[i; f; g; o] + W_qᵀ Σ_j δ(W_q s + U h_j)     δc'_{t-1} = δc'_t ⊙ f

After the loop, each at once: δW_hh = Σ_t δ[ifgo]_t s_{t-1}ᵀ, δb_hh = Σ_t δ[ifgo]_t, δW_q
likewise from δ(W_q s), δxe = δ[ifgo], δ(W_r h_j) = Σ_t α_tj δx_t and δh_j = Σ_t α_tj ∂L/∂c_t
(one batched product each); δh_0, δc'_0 are what is carried past t = 1.

`applies(decoder, state)` says when the decoder uses it: gradients on, the state of training
(`memory_in`), Bahdanau attention without an image, one LSTM layer without peepholes, float32 or
float64 without autocast (in bf16 or fp16 the products of P, Q, R below round more often than
autograd's sigmoid' and tanh'), not a quantized copy. Everything else keeps the autograd loop.
The loop reads the cell's and the attention's weights directly: hooks on those modules do not run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from seq2seq.modules.attention import BahdanauAttention
from seq2seq.modules.cells import LSTMCell


class BahdanauLSTMLoop(torch.autograd.Function):
    """forward(xe (B, T, G), memory (B, S, M), keys (B, S, A), memory_in (B, S, G), mask (B, S)
    bool, h0, c0 (B, H), w_hh (G, H), b_hh (G,) or None, w_q (A, H), v (1, A))
    -> out [s_t; c_t] (B, T, H + M), attention (B, T, S)."""

    @staticmethod
    def forward(ctx, xe, memory, keys, memory_in, mask, h0, c0, w_hh, b_hh, w_q, v):
        T = xe.shape[1]
        pad = ~mask
        hs, contexts, alphas, zs, acts, cs = [], [], [], [], [], []  # per step, kept for backward
        h, c = h0, c0
        for t in range(T):  # the decoder's own ops, in its order (modules/attention.py, cells.py)
            q = F.linear(h, w_q).unsqueeze(1)
            z = torch.tanh(q + keys)  # (B, S, A)
            scores = F.linear(z, v).squeeze(-1)
            alpha = torch.softmax(scores.masked_fill(pad, float("-inf")), dim=-1).masked_fill(pad, 0.0)
            weights = alpha.unsqueeze(1)
            context = torch.bmm(weights, memory).squeeze(1)
            xp = xe[:, t] + torch.bmm(weights, memory_in).squeeze(1)
            i, f, g, o = (xp + F.linear(h, w_hh, b_hh)).chunk(4, dim=-1)
            i, f, g = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g)
            c = f * c + i * g
            o = torch.sigmoid(o)
            h = o * torch.tanh(c)
            hs.append(h), contexts.append(context), alphas.append(alpha), zs.append(z)
            acts.append(torch.cat([i, f, g, o], -1)), cs.append(c)
        out = torch.cat([torch.stack(hs, 1), torch.stack(contexts, 1)], -1)  # (B, T, H + M)
        attention = torch.stack(alphas, 1)  # (B, T, S)
        h_prev = torch.stack([h0] + hs[:-1])  # s_{t-1}: (T, B, H)
        ctx.save_for_backward(
            memory, memory_in, h_prev, c0, torch.stack(cs), torch.stack(acts), attention, w_hh, w_q, v,
            *zs,  # each step's own (B, S, A), not copied into one tensor; freed after backward
        )  # fmt: skip
        ctx.has_bias = b_hh is not None
        return out, attention

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_attention):
        memory, memory_in, h_prev, c0, c_all, acts, attention, w_hh, w_q, v, *z_all = ctx.saved_tensors
        T, B, G = acts.shape
        H, M, A = G // 4, memory.shape[-1], w_q.shape[0]
        if d_out is None:
            d_out = acts.new_zeros(B, T, H + M)
        i, f, g, o = acts.split(H, dim=-1)  # (T, B, H) each
        c_prev = torch.cat([c0.unsqueeze(0), c_all[:-1]])  # c'_{t-1}
        # every step's local derivatives at once: δ[i; f; g] = δc' ⊙ P, δo = δs ⊙ Q, δc' += δs ⊙ R
        tanh_c = torch.tanh(c_all)
        P = torch.cat([g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g * g)], -1).view(T, B, 3, H)
        Q = tanh_c * o * (1 - o)
        R = o * (1 - tanh_c * tanh_c)
        # δ[c_t; x_t] side by side, so one product per step gives δα from both: h_j and W_r h_j
        keys_both = torch.cat([memory, memory_in], -1).transpose(1, 2)  # (B, M + G, S)
        d_both = acts.new_empty(T, B, M + G)
        d_both[..., :M] = d_out[..., H:].transpose(0, 1)
        d_gates = d_both[..., M:]  # δ[i; f; g; o]: (T, B, G)
        d_q = acts.new_empty(T, B, A)
        d_keys = torch.zeros_like(z_all[0])
        d_v = torch.zeros_like(v)
        d_h, d_c = torch.zeros_like(h_prev[0]), torch.zeros_like(c0)
        d_s = d_out[..., :H]
        for t in reversed(range(T)):
            d_h = d_h + d_s[:, t]
            d_c = torch.addcmul(d_c, d_h, R[t])
            torch.mul(P[t], d_c.unsqueeze(1), out=d_gates[t, :, : 3 * H].view(B, 3, H))
            torch.mul(d_h, Q[t], out=d_gates[t, :, 3 * H :])
            d_c = d_c * f[t]
            d_alpha = torch.bmm(d_both[t].unsqueeze(1), keys_both).squeeze(1)  # (B, S)
            if d_attention is not None:
                d_alpha = d_alpha + d_attention[:, t]
            alpha, z = attention[:, t], z_all[t]
            d_e = alpha * (d_alpha - (alpha * d_alpha).sum(-1, keepdim=True))  # softmax'
            d_v.addmm_(d_e.reshape(1, -1), z.reshape(-1, A))
            d_pre = (d_e.unsqueeze(-1) * v) * (1 - z * z)  # (B, S, A), tanh'
            d_keys += d_pre
            torch.sum(d_pre, 1, out=d_q[t])
            d_h = torch.mm(d_gates[t], w_hh).addmm_(d_q[t], w_q)
        d_gates_bt = d_gates.transpose(0, 1)  # (B, T, G)
        d_mem_both = torch.bmm(attention.transpose(1, 2), d_both.transpose(0, 1))  # (B, S, M + G)
        flat_h = h_prev.reshape(T * B, H)
        d_w_hh = d_gates.reshape(T * B, G).t().mm(flat_h)
        d_b_hh = d_gates.sum((0, 1)) if ctx.has_bias else None
        d_w_q = d_q.reshape(T * B, A).t().mm(flat_h)
        d_memory, d_memory_in = d_mem_both[..., :M], d_mem_both[..., M:]
        return d_gates_bt, d_memory, d_keys, d_memory_in, None, d_h, d_c, d_w_hh, d_b_hh, d_w_q, d_v


def applies(decoder, state: dict) -> bool:
    """Whether `decoder.features` may run its loop as BahdanauLSTMLoop (see the module's docstring)."""
    cell = decoder.rnn.cells["l0"]
    return (
        decoder.fused_loop
        and torch.is_grad_enabled()
        and "memory_in" in state
        and decoder.fusion == "none"
        and not decoder.luong
        and type(decoder.attention) is BahdanauAttention
        and type(cell) is LSTMCell
        and not cell.peephole
        and decoder.rnn.num_layers == 1
        and decoder.int8 is None
        and state["memory"].dtype in (torch.float32, torch.float64)
        and not torch.is_autocast_enabled(state["memory"].device.type)
    )


def run(decoder, xe: Tensor, state: dict) -> tuple[Tensor, Tensor]:
    """The loop of `decoder.features` for xe (B, T, G) from `state` (init_state's, training) ->
    [s_t; c_t] (B, T, H + M) and the attention (B, T, S)."""
    cell, attention = decoder.rnn.cells["l0"], decoder.attention
    return BahdanauLSTMLoop.apply(
        xe, state["memory"], state["keys"], state["memory_in"], state["mask"], state["h"][:, 0],
        state["c"][:, 0], cell.weight_hh, cell.bias_hh, attention.query_layer.weight,
        attention.energy_layer.weight,
    )  # fmt: skip
