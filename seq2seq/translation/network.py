"""Seq2Seq: a recurrent encoder, a bridge and a recurrent decoder (seed 002 §8.5.2)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from data.core.vocab import BOS, EOS, PAD
from seq2seq import search
from seq2seq.modules.decoder import RecurrentDecoder
from seq2seq.modules.encoder import RecurrentEncoder
from seq2seq.modules.rnn import RecurrentOptions
from seq2seq.search import SearchOptions

BANNED = (PAD, BOS)  # never an output: no training target is <pad> or <bos>


class Seq2Seq(nn.Module):
    """Encoder-decoder translator. context="fixed" is Fig. 8-21 (one vector), "attention" is
    Fig. 8-22 (all encoder states). Special ids: pad=0, unk=1, bos=2, eos=3.

    `rnn` holds the cell, sizes and cell variants of both encoder and decoder (RecurrentOptions):
    `peephole` (LSTM, seed 002 §8.4.3) and `gru_reset_after=False` (the seeds' GRU) run on the
    cell path.

    Multimodal translation: with `fusion` "decinit", "flat" or "doubly" (see modules/decoder.py)
    forward and translate also take `image`, the (B, R, image_size) grid features of each
    sentence's image. fusion="none" is the text-only model, parameter for parameter."""

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        rnn: RecurrentOptions = RecurrentOptions(),
        bidirectional: bool = True,
        context: Literal["fixed", "attention"] = "attention",
        attention: Literal["bahdanau", "luong_dot", "luong_general"] = "bahdanau",
        input_feeding: bool = True,
        tie_embeddings: bool = False,
        fusion: Literal["none", "decinit", "flat", "doubly"] = "none",
        image_size: int = 0,
    ):
        super().__init__()
        self.encoder = RecurrentEncoder(src_vocab_size, rnn, bidirectional=bidirectional, pad_id=PAD)
        self.decoder = RecurrentDecoder(
            tgt_vocab_size, rnn, context=context, attention=attention, input_feeding=input_feeding,
            memory_size=self.encoder.output_size, tie_embeddings=tie_embeddings, pad_id=PAD,
            fusion=fusion, image_size=image_size,
        )  # fmt: skip

    def encode(self, src: Tensor, src_lengths: Tensor):
        """src: (B, S), src_lengths: (B,) -> memory (B, S, M), mask (B, S), summary (B, M)."""
        memory, final = self.encoder(src, src_lengths)
        S = src.shape[1]
        mask = torch.arange(S, device=src.device)[None, :] < src_lengths.to(src.device)[:, None]
        return memory, mask, self.encoder.summarize(final)

    def forward(
        self,
        src: Tensor,
        src_lengths: Tensor,
        tgt_in: Tensor,
        return_attention: bool = False,
        image: Tensor | None = None,
    ):
        """Teacher forcing: tgt_in (B, T) starts with <bos>, image (B, R, Di) or None -> logits
        (B, T, V_tgt)."""
        memory, mask, summary = self.encode(src, src_lengths)
        return self.decoder(tgt_in, memory, mask, summary, return_attention=return_attention, image=image)

    def features(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, image: Tensor | None = None):
        """Teacher forcing up to the output layer: its input (B, T, O) (dropout applied) and the
        attention (B, T, S) or None (RecurrentDecoder.features)."""
        memory, mask, summary = self.encode(src, src_lengths)
        return self.decoder.features(tgt_in, memory, mask, summary, image)

    def decoding_start(self, src: Tensor, src_lengths: Tensor, image: Tensor | None = None):
        """-> (step function, initial state) of this batch: what seq2seq.search decodes from, and
        what combine.ensemble and combine.fuse combine with other models'."""
        memory, mask, summary = self.encode(src, src_lengths)
        return self.decoder.step, self.decoder.init_state(memory, mask, summary, image)

    @staticmethod
    def max_len(src_lengths: Tensor, search_options: SearchOptions) -> int | Tensor:
        """The decoding limit: search_options.max_len, else 2 * source length + 10 per sentence."""
        return search_options.max_len or 2 * src_lengths + 10

    @torch.no_grad()
    def translate(
        self,
        src: Tensor,
        src_lengths: Tensor,
        search_options: SearchOptions = SearchOptions(),
        *,
        return_attention: bool = False,
        generator: torch.Generator | None = None,
        image: Tensor | None = None,
    ) -> list[list[search.Hypothesis]]:
        """Decodes a batch; returns, per sentence, a list of hypotheses (n_best for beam, one
        otherwise), each with token ids (no <bos>/<eos>, never <pad>), score and optional attention (T, S)
        ((T, S + R) with an image attended: its last R columns are the regions').
        `search_options.max_len` defaults to 2 * source length + 10 words per sentence."""
        step, state = self.decoding_start(src, src_lengths, image)
        return search.decode(
            step, state, src.shape[0], bos=BOS, eos=EOS, search=search_options,
            max_len=self.max_len(src_lengths.to(src.device), search_options), generator=generator,
            return_attention=return_attention, banned=BANNED,
        )  # fmt: skip


def pad_batch(seqs: list[list[int]], pad: int = PAD) -> tuple[Tensor, Tensor]:
    """A list of id lists -> (B, max_len) long padded with `pad`, lengths (B,)."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    out = torch.full((len(seqs), int(lengths.max()) if seqs else 0), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out, lengths
