"""Image captioners on precomputed CNN features (seed 002 §8.5.3), built from seq2seq.modules.

ShowTell        Show and Tell (NIC, Vinyals et al. 2015), seed 002 eq. (8.50)-(8.51):
                z~_{-1} = W_I cnn(x)  (the "CNN top layer": the image into E's space),
                z~_t = E z_t (t = 0..T, z_0 = <bos>); the LSTM reads z~_{-1} first, then the words;
                y~_t = softmax(W_out h_t);  J = -Σ_t log y~_t(z_t).
                The image enters once, as the first input. `image_every_step=True` is the variant
                that also concatenates z~_{-1} to every word input (Vinyals et al. found it overfits).
ShowAttendTell  Show, Attend and Tell (Xu et al. 2015): the shared RecurrentDecoder with attention
                over the grid of CNN features (memory (B, HW, C)); its initial state comes from the
                mean feature through the decoder's Bridge.

Both take features, not images (see seq2seq/modules/vision.py), and expose the step-function API of
seq2seq.search: `init_state(features) -> dict` of batch-first tensors and
`step(prev (B,), state) -> (logits (B, V), state)`. Special ids: pad=0, unk=1, bos=2, eos=3.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from data.core.vocab import BOS, EOS, PAD
from seq2seq import search
from seq2seq.modules.decoder import RecurrentDecoder
from seq2seq.modules.rnn import RecurrentOptions
from seq2seq.search import SearchOptions

# the captioners' default sizes: a 512-unit LSTM over 256-wide embeddings, dropout 0.3
CAPTION_RNN = RecurrentOptions(embed_dim=256, hidden_size=512, dropout=0.3)
CAPTION_SEARCH = SearchOptions(method="beam", beam_size=3, max_len=20)

CaptionState = dict[str, Tensor]


def _check_features(features: Tensor, dims: int, feature_dim: int, what: str) -> None:
    if features.dim() != dims or features.shape[-1] != feature_dim:
        want = "(B, C)" if dims == 2 else "(B, HW, C)"
        raise ValueError(
            f"{what} expects {want} features with C={feature_dim}, got shape {tuple(features.shape)}"
        )


def _check_captions(captions_in: Tensor, batch: int) -> None:
    if captions_in.dim() != 2 or captions_in.shape[0] != batch:
        raise ValueError(
            f"captions_in must be (B, T) with B={batch} (the features' batch), "
            f"got shape {tuple(captions_in.shape)}"
        )


class _Captioner(nn.Module):
    """Shared decoding: `caption` runs seq2seq.search over `init_state` and `step`."""

    def init_state(self, features: Tensor) -> CaptionState:
        raise NotImplementedError

    def step(self, prev: Tensor, state: CaptionState) -> tuple[Tensor, CaptionState]:
        raise NotImplementedError

    @torch.no_grad()
    def caption(
        self,
        features: Tensor,
        search_options: SearchOptions = CAPTION_SEARCH,
        *,
        generator: torch.Generator | None = None,
        return_attention: bool = False,
    ) -> list[list[search.Hypothesis]]:
        """Captions a batch of images; returns per image a list of hypotheses (n_best for beam,
        one otherwise), each with token ids (no <bos>/<eos>), a score (sum of log-probabilities,
        divided by the length penalty for beam) and, with return_attention for a model that
        attends, attention (len(tokens), HW). `search_options.max_len` defaults to 20 words.
        Call `eval()` first to switch dropout off."""
        # <pad> and <bos> are never outputs: every word decoded is a word of the caption, so its
        # attention rows stay one per word
        return search.decode(
            self.step, self.init_state(features), features.shape[0], bos=BOS, eos=EOS, search=search_options,
            max_len=search_options.max_len or CAPTION_SEARCH.max_len, generator=generator,
            return_attention=return_attention, banned=(PAD, BOS),
        )  # fmt: skip


class ShowTell(_Captioner):
    """Show and Tell: a global image vector (B, feature_dim) is projected into the word-embedding
    space and fed as the FIRST input of the RNN; then <bos> and the words go through E.

    The output at the image step is not scored: `forward` returns the outputs at the word steps,
    so logits[:, t] predicts captions_out[:, t] (w_1 .. <eos> for captions_in = <bos> w_1 ..).
    With `tie_embeddings` the output layer shares E's weights (through a Linear(H, embed_dim)).
    With `image_every_step` every RNN input is [input; z~_{-1}] (width 2*embed_dim); the image
    step's input is then [z~_{-1}; z~_{-1}]. `rnn` holds the cell, sizes and cell variants
    (RecurrentOptions).
    """

    def __init__(
        self,
        vocab_size: int,
        feature_dim: int,
        rnn: RecurrentOptions = CAPTION_RNN,
        tie_embeddings: bool = False,
        image_every_step: bool = False,
    ):
        super().__init__()
        embed_dim, hidden_size = rnn.embed_dim, rnn.hidden_size
        self.vocab_size, self.feature_dim, self.embed_dim = vocab_size, feature_dim, embed_dim
        self.hidden_size, self.cell = hidden_size, rnn.cell
        self.image_every_step = image_every_step
        self.image_proj = nn.Linear(feature_dim, embed_dim)  # cnn(x) -> z~_{-1} in E's space
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)  # E
        self.dropout = nn.Dropout(rnn.dropout)
        self.rnn = rnn.layer(2 * embed_dim if image_every_step else embed_dim)
        if tie_embeddings:
            self.pre_output = nn.Linear(hidden_size, embed_dim)
            self.output = nn.Linear(embed_dim, vocab_size)
            self.output.weight = self.embedding.weight
        else:
            self.pre_output = None
            self.output = nn.Linear(hidden_size, vocab_size)

    # -- pieces -------------------------------------------------------------------------------
    def _image(self, features: Tensor) -> Tensor:
        _check_features(features, 2, self.feature_dim, "ShowTell")
        return self.dropout(self.image_proj(features))  # (B, E)

    def _inputs(self, x: Tensor, image: Tensor) -> Tensor:
        """x: (B, T, E) -> the RNN inputs (B, T, E) or, with image_every_step, (B, T, 2E)."""
        if self.image_every_step:
            return torch.cat([x, image.unsqueeze(1).expand(-1, x.shape[1], -1)], -1)
        return x

    def _logits(self, h: Tensor) -> Tensor:
        h = self.dropout(h)
        if self.pre_output is not None:
            h = self.pre_output(h)
        return self.output(h)

    @staticmethod
    def _store(rnn_state, image: Tensor | None) -> CaptionState:
        if isinstance(rnn_state, tuple):
            state = {"h": rnn_state[0].transpose(0, 1), "c": rnn_state[1].transpose(0, 1)}
        else:
            state = {"h": rnn_state.transpose(0, 1)}  # (B, L, H): batch first for search
        if image is not None:
            state["image"] = image
        return state

    @staticmethod
    def _rnn_state(state: CaptionState):
        h = state["h"].transpose(0, 1).contiguous()  # (L, B, H)
        return (h, state["c"].transpose(0, 1).contiguous()) if "c" in state else h

    # -- search API ---------------------------------------------------------------------------
    def init_state(self, features: Tensor) -> CaptionState:
        """features: (B, C) -> the state after the image step (x_{-1}), before <bos>:
        h, c: (B, L, H) [, image: (B, E) with image_every_step]."""
        image = self._image(features)
        _, rnn_state = self.rnn(self._inputs(image.unsqueeze(1), image))
        return self._store(rnn_state, image if self.image_every_step else None)

    def step(self, prev: Tensor, state: CaptionState) -> tuple[Tensor, CaptionState]:
        """prev: (B,) long, the previous word -> logits (B, V) and the next state."""
        x = self._inputs(self.dropout(self.embedding(prev)).unsqueeze(1), state.get("image"))
        out, rnn_state = self.rnn(x, state=self._rnn_state(state))
        return self._logits(out.squeeze(1)), self._store(rnn_state, state.get("image"))

    # -- teacher forcing ----------------------------------------------------------------------
    def forward(self, features: Tensor, captions_in: Tensor) -> Tensor:
        """features: (B, C), captions_in: (B, T) long (<bos> w_1 .. w_{n-1}, PAD after)
        -> logits (B, T, V). One RNN call over [z~_{-1}; E z_0; ...; E z_{T-1}]."""
        image = self._image(features)
        _check_captions(captions_in, image.shape[0])
        x = torch.cat([image.unsqueeze(1), self.dropout(self.embedding(captions_in))], 1)
        out, _ = self.rnn(self._inputs(x, image))  # (B, 1 + T, H)
        return self._logits(out[:, 1:])  # the image step's output is not scored


class ShowAttendTell(_Captioner):
    """Show, Attend and Tell: the shared RecurrentDecoder (context="attention") over the grid of
    features, memory (B, HW, C); the initial state is the Bridge of the mean feature.

    forward(features (B, HW, C), captions_in (B, T)) -> logits (B, T, V) [, attention (B, T, HW)].
    """

    def __init__(
        self,
        vocab_size: int,
        feature_dim: int,
        rnn: RecurrentOptions = CAPTION_RNN,
        attention: Literal["bahdanau", "luong_general"] = "bahdanau",
        tie_embeddings: bool = False,
    ):
        super().__init__()
        if attention not in ("bahdanau", "luong_general"):
            raise ValueError(f"attention must be 'bahdanau' or 'luong_general', got {attention!r}")
        self.vocab_size, self.feature_dim = vocab_size, feature_dim
        self.decoder = RecurrentDecoder(
            vocab_size, rnn, context="attention", attention=attention, memory_size=feature_dim,
            tie_embeddings=tie_embeddings, pad_id=PAD,
        )  # fmt: skip

    def init_state(self, features: Tensor) -> CaptionState:
        """features: (B, HW, C) -> the decoder state before <bos> (memory passes through)."""
        _check_features(features, 3, self.feature_dim, "ShowAttendTell")
        return self.decoder.init_state(features, None, features.mean(1))

    def step(self, prev: Tensor, state: CaptionState) -> tuple[Tensor, CaptionState]:
        """prev: (B,) long -> logits (B, V) and the next state (with "attention" (B, HW))."""
        return self.decoder.step(prev, state)

    def forward(
        self, features: Tensor, captions_in: Tensor, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """features: (B, HW, C), captions_in: (B, T) -> logits (B, T, V) [, attention (B, T, HW)]."""
        _check_features(features, 3, self.feature_dim, "ShowAttendTell")
        _check_captions(captions_in, features.shape[0])
        return self.decoder(captions_in, features, None, features.mean(1), return_attention=return_attention)
