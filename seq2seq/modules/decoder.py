"""Recurrent decoder with a fixed source vector or attention over all source states.

context="fixed"      seed 002 Fig. 8-21, Cho et al. 2014: one summary vector c of the source
                     initialises the decoder and enters every step with the previous word;
                     s_t = f(s_{t-1}, [e(y_{t-1}); c]),  o_t = tanh(W_o [s_t; c; e(y_{t-1})]).
context="attention"  seed 002 Fig. 8-22, Bahdanau et al. 2015: the previous state queries all
                     encoder states, c_t = Σ_j α_tj h_j;  s_t = f(s_{t-1}, [e(y_{t-1}); c_t]),
                     o_t = tanh(W_o [s_t; c_t; e(y_{t-1})]).
  attention="luong_*" Luong et al. 2015 order: s_t = f(s_{t-1}, [e(y_{t-1}); õ_{t-1}]) (the
                     bracketed input feeding optional), then c_t from s_t,
                     õ_t = tanh(W_c [s_t; c_t]).
p(y_t | y_<t, x) = softmax(W_out o_t + b).

With an image (multimodal translation, `fusion`; v_r are the image's grid vectors, r = 1..R):
  fusion="decinit"   Calixto et al. 2017 / Caglayan et al. 2017: the pooled image v = mean_r v_r
                     joins the source summary in the bridge, h_0 = tanh(W_h [s; v]).
  fusion="flat"      Libovický & Helcl 2017: the regions, projected into the source states' space
                     (W_v v_r), join them as R more positions of one attention, c_t = Σ_j α_tj h_j
                     over j in source + image, one distribution over both.
  fusion="doubly"    Calixto et al. 2017: a second attention with its own context over the
                     (projected) regions, gated by the state: z_t = σ(W_β s_{t-1}) Σ_r β_tr W_v v_r;
                     the RNN reads [e(y_{t-1}); c_t; z_t], o_t = tanh(W_o [s_t; c_t; z_t; e(y_{t-1})]).
                     (W_v before the sum costs nothing in expressiveness, W_o follows it, but makes
                     every step's matrices M wide instead of Di: about 1.6x faster for Di = 1280.)

Decoders whose recurrence reads the previous step's result (Bahdanau attention, Luong with input
feeding) loop over time on the cells (RNN.step; a fused kernel has nothing to fuse over one step)
and compute every step-invariant product once per batch: layer 0's input projection is split by
columns, W_ih [e; r] = W_e e + W_r r, and W_e e_t runs for all t in one matrix product; with
Bahdanau attention in training W_r c_t = Σ_j α_tj (W_r h_j), so W_r h_j is projected once per
source position (`memory_in`) and each step only weighs it (search, whose batch of beams shrinks
and reorders, computes W_r c_t each step instead: a (B, S, G*H) tensor would be copied at every
reorder); o_t = tanh(W_o [s_t; c_t; e_t]) runs for all t after the loop. In training, the
Bahdanau LSTM's loop runs as modules/decoder_loop.py (the same ops, its backward through time
written out) where that applies (one LSTM layer, no image, no autocast; `fused_loop = False`
turns it off). The others run the recurrence over all steps at once (`_features_parallel`). On a
copy quantized by modules/quantize.py, `int8` holds W_e and W_r as int8 products and `step` uses
them (None: float).

The decoder state is a dict of batch-first tensors, so search can reorder it by index:
  h, c: (B, L, H)   memory: (B, S, M)   keys: (B, S, A)   mask: (B, S)   context: (B, M)
  memory_in: (B, S, G*H) (Bahdanau, training: W_r h_j)   feed: (B, O) (Luong input feeding)
  attention: (B, S) (weights of the last step)
  with fusion="flat" memory, keys and mask are (B, S + R, .): the regions follow the source;
  with fusion="doubly": image: (B, R, M) (projected), image_keys: (B, R, A), image_in: (B, R, G*H),
  and attention is (B, S + R), the source's weights then the image's (each sums to 1)
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seq2seq.modules import decoder_loop
from seq2seq.modules.attention import BahdanauAttention, LuongAttention, masked_softmax
from seq2seq.modules.rnn import RNN, RecurrentOptions

DecoderState = dict[str, Tensor]


class Bridge(nn.Module):
    """Maps a summary vector (B, Ds) to an initial decoder state: h_0 = tanh(W_h s) for every
    layer, and c_0 = tanh(W_c s) for an LSTM. Returns h (and c) as (B, L, H)."""

    def __init__(self, summary_size: int, hidden_size: int, num_layers: int = 1, lstm: bool = True):
        super().__init__()
        self.num_layers, self.hidden_size = num_layers, hidden_size
        self.h = nn.Linear(summary_size, num_layers * hidden_size)
        self.c = nn.Linear(summary_size, num_layers * hidden_size) if lstm else None

    def forward(self, summary: Tensor) -> DecoderState:
        B = summary.shape[0]
        state = {"h": torch.tanh(self.h(summary)).view(B, self.num_layers, self.hidden_size)}
        if self.c is not None:
            state["c"] = torch.tanh(self.c(summary)).view(B, self.num_layers, self.hidden_size)
        return state


def check_fusion(fusion: str, image_size: int, context: str, attention: str) -> None:
    """ValueError for a fusion the decoder cannot do, saying what to change."""
    if fusion not in ("none", "decinit", "flat", "doubly"):
        raise ValueError(f"fusion must be 'none', 'decinit', 'flat' or 'doubly', got {fusion!r}")
    if fusion != "none" and image_size < 1:
        raise ValueError(f"fusion={fusion!r} needs image_size >= 1 (the image features' size)")
    if fusion in ("flat", "doubly") and context != "attention":
        raise ValueError(f"fusion={fusion!r} attends over the image: it needs context='attention'")
    if fusion == "doubly" and attention != "bahdanau":
        raise ValueError("fusion='doubly' is written for attention='bahdanau'; use fusion='flat' with Luong")


class RecurrentDecoder(nn.Module):
    """Teacher-forced `forward` for training and a single `step` for search.

    `memory_size` is the encoder's output size (D*H_enc); the summary vector has the same size.
    With `tie_embeddings` the output projection shares E's weights (its input is then embed_dim).
    `rnn` (RecurrentOptions) and `pad_id` as in RecurrentEncoder.
    """

    def __init__(
        self,
        vocab_size: int,
        rnn: RecurrentOptions = RecurrentOptions(),
        context: Literal["fixed", "attention"] = "attention",
        attention: Literal["bahdanau", "luong_dot", "luong_general"] = "bahdanau",
        input_feeding: bool = True,
        memory_size: int = 512,
        tie_embeddings: bool = False,
        pad_id: int = 0,
        fusion: Literal["none", "decinit", "flat", "doubly"] = "none",
        image_size: int = 0,
    ):
        super().__init__()
        check_fusion(fusion, image_size, context, attention)
        self.fusion = fusion
        if context not in ("fixed", "attention"):
            raise ValueError(f"context must be 'fixed' or 'attention', got {context!r}")
        if attention not in ("bahdanau", "luong_dot", "luong_general"):
            raise ValueError(
                f"attention must be 'bahdanau', 'luong_dot' or 'luong_general', got {attention!r}"
            )
        embed_dim, hidden_size = rnn.embed_dim, rnn.hidden_size
        self.context, self.cell, self.hidden_size = context, rnn.cell, hidden_size
        self.luong = context == "attention" and attention.startswith("luong")
        self.input_feeding = self.luong and input_feeding
        out_size = embed_dim if tie_embeddings else hidden_size
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.dropout = nn.Dropout(rnn.dropout)
        bridge_in = memory_size + (image_size if fusion == "decinit" else 0)
        self.bridge = Bridge(bridge_in, hidden_size, rnn.num_layers, lstm=rnn.cell == "lstm")
        attends = fusion in ("flat", "doubly")
        self.image_proj = nn.Linear(image_size, memory_size) if attends else None  # W_v
        image_ctx = memory_size if fusion == "doubly" else 0
        if fusion == "doubly":
            self.image_attention = BahdanauAttention(hidden_size, memory_size)
            self.image_gate = nn.Linear(hidden_size, 1)  # W_β

        if self.luong:
            rnn_in = embed_dim + (out_size if self.input_feeding else 0)
            self.attention = LuongAttention(hidden_size, memory_size, attention.split("_")[1])
            self.pre_output = nn.Linear(hidden_size + memory_size, out_size)  # W_c [s; c]
        else:
            rnn_in = embed_dim + memory_size + image_ctx
            self.attention = BahdanauAttention(hidden_size, memory_size) if context == "attention" else None
            self.pre_output = nn.Linear(hidden_size + memory_size + image_ctx + embed_dim, out_size)  # W_o
        # whether the teacher-forced forward loops over time (the RNN input needs the last step)
        self.loops = context == "attention" and (self.input_feeding or not self.luong)
        if self.loops and rnn.impl == "fused":  # it steps on the cells, but a refused option stays refused
            RNN._check_fusable(rnn.cell, rnn.cell_options())
        self.rnn = (replace(rnn, impl="cells") if self.loops else rnn).layer(rnn_in)
        self.output = nn.Linear(out_size, vocab_size)
        if tie_embeddings:
            self.output.weight = self.embedding.weight
        self.int8 = None  # layer 0's W_e, W_r as int8 products (modules/quantize.py), None: float
        self.fused_loop = True  # training's loop as modules/decoder_loop.py where it applies

    # -- state --------------------------------------------------------------------------------
    def init_state(
        self, memory: Tensor, src_mask: Tensor | None, summary: Tensor, image: Tensor | None = None
    ) -> DecoderState:
        """memory: (B, S, M), src_mask: (B, S) bool, summary: (B, M), image: (B, R, Di) grid
        features (fusion other than "none") -> the state before step 1."""
        if (image is None) != (self.fusion == "none"):
            need = "no image" if self.fusion == "none" else "image features (B, R, Di)"
            raise ValueError(f"fusion={self.fusion!r} takes {need}")
        state = self.bridge(torch.cat([summary, image.mean(1)], -1) if self.fusion == "decinit" else summary)
        if self.image_proj is not None:
            image = self.image_proj(image)  # W_v v_r: (B, R, M)
        if self.fusion == "flat":  # the image regions become R more positions of the memory
            if src_mask is None:
                src_mask = memory.new_ones(memory.shape[:2], dtype=torch.bool)
            memory = torch.cat([memory, image], 1)
            src_mask = torch.cat([src_mask, src_mask.new_ones(image.shape[:2])], 1)
        if self.fusion == "doubly":
            state.update(image=image, image_keys=self.image_attention.project_keys(image))
        if self.context == "fixed":
            state["context"] = summary  # the one vector c the decoder ever sees of the source
        else:
            if src_mask is None:
                src_mask = memory.new_ones(memory.shape[:2], dtype=torch.bool)
            state.update(memory=memory, keys=self.attention.project_keys(memory), mask=src_mask)
        if self.loops and not self.luong and self.training:  # W_r h_j for every source position, once
            w_rest = self._input_weights()[1]
            state["memory_in"] = F.linear(memory, w_rest[:, : memory.shape[-1]])
            if self.fusion == "doubly":
                state["image_in"] = F.linear(state["image"], w_rest[:, memory.shape[-1] :])
        if self.input_feeding:
            state["feed"] = memory.new_zeros(memory.shape[0], self.pre_output.out_features)
        return state

    def _rnn_state(self, state: DecoderState):
        h = state["h"].transpose(0, 1).contiguous()  # (L, B, H)
        return (h, state["c"].transpose(0, 1).contiguous()) if "c" in state else h

    @staticmethod
    def _store(state: DecoderState, rnn_state) -> DecoderState:
        new = dict(state)
        if isinstance(rnn_state, tuple):
            new["h"], new["c"] = (s.transpose(0, 1) for s in rnn_state)
        else:
            new["h"] = rnn_state.transpose(0, 1)
        return new

    @staticmethod
    def _layer_states(state: DecoderState) -> list:
        """The state as RNN.step takes it: per layer h (B, H) or (h, c)."""
        L = state["h"].shape[1]
        if "c" in state:
            return [(state["h"][:, k], state["c"][:, k]) for k in range(L)]
        return [state["h"][:, k] for k in range(L)]

    @staticmethod
    def _store_layers(state: DecoderState, layers: list) -> DecoderState:
        new = dict(state)
        if isinstance(layers[0], tuple):
            new["h"], new["c"] = (torch.stack(s, 1) for s in zip(*layers))
        else:
            new["h"] = torch.stack(layers, 1)
        return new

    def _input_weights(self) -> tuple[Tensor, Tensor]:
        """Layer 0's W_ih split by columns, [W_e | W_r]: the embedding's part (G*H, E) and the
        rest's (context, image context or fed-back output)."""
        w = self.rnn.cells["l0"].weight_ih
        E = self.embedding.embedding_dim
        return w[:, :E], w[:, E:]

    def _attend(self, query: Tensor, state: DecoderState) -> tuple[Tensor, Tensor]:
        return self.attention(query, state["memory"], state["mask"], state["keys"])

    # -- one step -----------------------------------------------------------------------------
    def step(self, prev: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """prev: (B,) long, the previous word -> logits (B, V) and the next state."""
        e = self.dropout(self.embedding(prev))
        if not self.loops:
            o, state = self._parallel_step(e, state)
        else:
            if self.int8 is None:
                w_e, w_rest = self._input_weights()
                xe = F.linear(e, w_e, self.rnn.cells["l0"].bias_ih)
            else:  # a quantized copy: W_e e + b_ih and W_r as int8 products
                xe, w_rest = self.int8.embedded(e), self.int8.rest
            out, state = self._advance(xe, state, w_rest)
            o = out if self.luong else torch.tanh(self.pre_output(torch.cat([out, e], -1)))
        return self.output(self.dropout(o)), state

    def _advance(
        self, xe: Tensor, state: DecoderState, w_rest: Tensor | nn.Module
    ) -> tuple[Tensor, DecoderState]:
        """One step of a looping decoder. xe: (B, G*H) = W_e e_t + b_ih, the embedding's share of
        layer 0's input projection; w_rest: W_r (G*H, R), or its int8 product r -> W_r r (a
        quantized copy) -> Bahdanau: [s_t; c_t] (B, H + M) (o_t needs e_t too: the caller's),
        Luong with input feeding: õ_t (B, O); and the next state."""
        layers = self._layer_states(state)
        if self.luong:  # s_t = f(s_{t-1}, [e_t; õ_{t-1}]), then attention from s_t
            feed = state["feed"]
            fed = F.linear(feed, w_rest) if isinstance(w_rest, Tensor) else w_rest(feed)  # W_r õ_{t-1}
            s, layers = self.rnn.step(xe + fed, layers)
            ctx, weights = self._attend(s, state)
            out = torch.tanh(self.pre_output(torch.cat([s, ctx], -1)))  # õ_t = tanh(W_c [s_t; c_t])
            new = self._store_layers(state, layers)
            new["feed"] = out
        else:  # Bahdanau: the previous top-layer state is the query; W_r c_t = Σ_j α_tj (W_r h_j)
            query = state["h"][:, -1]
            ctx, weights = self._attend(query, state)
            once = "memory_in" in state  # training: the W_r h_j projected once per batch
            if once:
                xp = xe + torch.bmm(weights.unsqueeze(1), state["memory_in"]).squeeze(1)
            if self.fusion == "doubly":  # the image context, gated: z_t = σ(W_β s_{t-1}) Σ_r β_r v_r
                gate = torch.sigmoid(self.image_gate(query))
                z, image_weights = self.image_attention(query, state["image"], None, state["image_keys"])
                if once:
                    xp = xp + gate * torch.bmm(image_weights.unsqueeze(1), state["image_in"]).squeeze(1)
                ctx = torch.cat([ctx, gate * z], -1)
                weights = torch.cat([weights, image_weights], -1)  # (B, S + R), as with "flat"
            if not once:  # search (a batch of beams that shrinks and reorders): W_r c_t each step
                xp = xe + (F.linear(ctx, w_rest) if isinstance(w_rest, Tensor) else w_rest(ctx))
            s, layers = self.rnn.step(xp, layers)
            out = torch.cat([s, ctx], -1)
            new = self._store_layers(state, layers)
        new["attention"] = weights
        return out, new

    def _parallel_step(self, e: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """One step of a decoder whose teacher-forced forward is `_features_parallel` (the fixed
        context, Luong without input feeding): e (B, E) -> o_t (B, O), the next state."""
        if self.luong:
            s, rnn_state = self.rnn(e.unsqueeze(1), state=self._rnn_state(state))
            s = s.squeeze(1)
            ctx, weights = self._attend(s, state)  # attention after the step
            o = torch.tanh(self.pre_output(torch.cat([s, ctx], -1)))  # õ_t = tanh(W_c [s_t; c_t])
        else:
            ctx, weights = state["context"], None
            s, rnn_state = self.rnn(torch.cat([e, ctx], -1).unsqueeze(1), state=self._rnn_state(state))
            o = torch.tanh(self.pre_output(torch.cat([s.squeeze(1), ctx, e], -1)))
        new = self._store(state, rnn_state)
        if weights is not None:
            new["attention"] = weights
        return o, new

    # -- teacher forcing ----------------------------------------------------------------------
    def forward(
        self,
        tgt_in: Tensor,
        memory: Tensor,
        src_mask: Tensor | None,
        init: Tensor,
        return_attention: bool = False,
        image: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """tgt_in: (B, T) long (<bos> y_1 ... y_{T-1}), memory: (B, S, M), src_mask: (B, S),
        init: the summary vector (B, M), image: (B, R, Di) or None -> logits (B, T, V)
        [, attention (B, T, S) (B, T, S + R with fusion="flat")]."""
        o, attention = self.features(tgt_in, memory, src_mask, init, image)
        logits = self.output(o)  # (B, T, V)
        if return_attention:
            return logits, attention
        return logits

    def features(
        self,
        tgt_in: Tensor,
        memory: Tensor,
        src_mask: Tensor | None,
        init: Tensor,
        image: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """The output layer's input o_t for all t, dropout applied, (B, T, O), and the attention
        (B, T, S) or None; `forward`'s arguments. Training takes the loss from it with
        modules/output_loss.py, which never holds all the logits.

        Embeddings, W_e e_t, W_o (Bahdanau) and the output layer run once over all steps; only the
        recurrence and the attention loop."""
        state = self.init_state(memory, src_mask, init, image)
        e = self.dropout(self.embedding(tgt_in))  # (B, T, E)
        if not self.loops:
            o, attention = self._features_parallel(e, state)
        else:
            w_e, w_rest = self._input_weights()
            xe = F.linear(e, w_e, self.rnn.cells["l0"].bias_ih)  # W_e e_t + b_ih for all t: (B, T, G*H)
            if decoder_loop.applies(self, state):  # the same loop, its backward written out
                o, attention = decoder_loop.run(self, xe, state)
            else:
                outs, attn = [], []
                for xe_t in xe.unbind(1):  # one backward node for all steps (xe[:, t] would make T)
                    out, state = self._advance(xe_t, state, w_rest)
                    outs.append(out)
                    attn.append(state["attention"])
                o, attention = torch.stack(outs, 1), torch.stack(attn, 1)
            if not self.luong:  # o_t = tanh(W_o [s_t; c_t; e_t]) for all t at once
                o = torch.tanh(self.pre_output(torch.cat([o, e], -1)))
        return self.dropout(o), attention

    def _features_parallel(self, e: Tensor, state: DecoderState) -> tuple[Tensor, Tensor | None]:
        """When the RNN input does not depend on the previous output, run it over all steps at
        once (one fused call: cuDNN on a GPU); the result equals stepping. e: (B, T, E)."""
        T = e.shape[1]
        if self.context == "fixed":
            ctx = state["context"].unsqueeze(1).expand(-1, T, -1)
            s, _ = self.rnn(torch.cat([e, ctx], -1), state=self._rnn_state(state))
            return torch.tanh(self.pre_output(torch.cat([s, ctx, e], -1))), None
        s, _ = self.rnn(e, state=self._rnn_state(state))  # Luong without input feeding
        scores = torch.bmm(s, state["keys"].transpose(1, 2))  # (B, T, S)
        weights = masked_softmax(scores, state["mask"].unsqueeze(1))
        ctx = torch.bmm(weights, state["memory"])  # (B, T, M)
        return torch.tanh(self.pre_output(torch.cat([s, ctx], -1))), weights
