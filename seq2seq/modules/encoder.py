"""Recurrent encoder: embeddings, then a (bidirectional) RNN over the source."""

from __future__ import annotations

from torch import Tensor, nn

from seq2seq.modules.cells import State
from seq2seq.modules.rnn import RecurrentOptions


class RecurrentEncoder(nn.Module):
    """src: (B, S) long -> memory (B, S, D*H) (zero at padding), final state (L*D, B, H) [pair].

    Seed 002 §8.2.4 / Fig. 8-22: the bidirectional encoder gives every source position a state
    that has seen the whole sentence, h_j = [h_j(forward); h_j(backward)]. `rnn` holds the cell,
    sizes and cell variants (RecurrentOptions); `pad_id` is the padding token's id, whose
    embedding stays zero.
    """

    def __init__(
        self,
        vocab_size: int,
        rnn: RecurrentOptions = RecurrentOptions(),
        bidirectional: bool = True,
        pad_id: int = 0,
    ):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, rnn.embed_dim, padding_idx=pad_id)
        self.dropout = nn.Dropout(rnn.dropout)
        self.rnn = rnn.layer(rnn.embed_dim, bidirectional)

    @property
    def output_size(self) -> int:
        return self.rnn.output_size

    def forward(self, src: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, State]:
        x = self.dropout(self.embedding(src))  # (B, S, E)
        return self.rnn(x, lengths)

    def summarize(self, final_state: State) -> Tensor:
        """The top layer's final hidden states, both directions concatenated: (B, D*H).

        This is the fixed-length feature vector h_Ts of seed 002 Fig. 8-21 (for the backward
        direction: its state after reading the first word).
        """
        h = final_state[0] if isinstance(final_state, tuple) else final_state  # (L*D, B, H)
        D = self.rnn.num_directions
        return h[-D:].transpose(0, 1).reshape(h.shape[1], D * self.rnn.hidden_size)
