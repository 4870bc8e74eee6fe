"""LanguageModel (seed 002 §8.5.1): P(z_t | z_<t) by a stacked RNN over the embedded tokens.

Special ids: pad=0, unk=1, bos=2, eos=3. Trained by seq2seq.lm.module.LanguageModule (truncated BPTT);
sampled with `sample_texts` (Algorithm 8-1) by the module and by `python -m seq2seq.lm.cli`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from data.core.vocab import BOS, EOS, PAD, UNK, Vocabulary
from seq2seq import search
from seq2seq.modules.rnn import RecurrentOptions


def detach_state(state):
    """The recurrent state without its history: the next chunk's gradients stop here."""
    return search.map_state(lambda t: t.detach(), state)


class LanguageModel(nn.Module):
    """Embedding E -> dropout -> stacked RNN -> dropout -> output layer (optionally tied to E).

    With ``tie_embeddings`` the output layer shares E's weights (Press & Wolf 2017); when
    ``hidden_size != embed_dim`` a linear projection maps the RNN output to ``embed_dim`` first.
    ``rnn`` holds the cell, sizes and cell variants (RecurrentOptions; here 2 layers and dropout
    0.3 by default). Special ids: pad=0, unk=1, bos=2, eos=3.
    """

    def __init__(
        self,
        vocab_size: int,
        rnn: RecurrentOptions = RecurrentOptions(num_layers=2, dropout=0.3),
        tie_embeddings: bool = True,
    ):
        super().__init__()
        embed_dim, hidden_size = rnn.embed_dim, rnn.hidden_size
        self.vocab_size, self.cell = vocab_size, rnn.cell
        self.num_layers, self.hidden_size = rnn.num_layers, hidden_size
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        self.rnn = rnn.layer(embed_dim)
        self.dropout = nn.Dropout(rnn.dropout)
        tied_projection = tie_embeddings and hidden_size != embed_dim
        self.projection = nn.Linear(hidden_size, embed_dim) if tied_projection else None
        self.output = nn.Linear(embed_dim if tie_embeddings else hidden_size, vocab_size)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        with torch.no_grad():
            self.embedding.weight[PAD].zero_()
        nn.init.zeros_(self.output.bias)
        if tie_embeddings:
            self.output.weight = self.embedding.weight
        else:
            nn.init.uniform_(self.output.weight, -0.1, 0.1)

    def forward(self, tokens: Tensor, state=None, lengths: Tensor | None = None) -> tuple[Tensor, object]:
        """tokens: (B, T) long, state: the RNN's ((L, B, H) [pair]) or None (zeros), lengths:
        (B,) or None (all T) -> logits (B, T, V), final state (at each row's own length)."""
        x = self.dropout(self.embedding(tokens))
        out, state = self.rnn(x, lengths, state)
        out = self.dropout(out)
        if self.projection is not None:
            out = self.projection(out)
        return self.output(out), state

    # -- single steps for seq2seq.search: the state is a dict of batch-first tensors ----------
    def to_search_state(self, state) -> dict:
        """RNN state (L, B, H) [pair] -> {"h": (B, L, H)[, "c": (B, L, H)]}."""
        if self.cell == "lstm":
            return {"h": state[0].transpose(0, 1), "c": state[1].transpose(0, 1)}
        return {"h": state.transpose(0, 1)}

    def from_search_state(self, state: dict):
        h = state["h"].transpose(0, 1).contiguous()
        return (h, state["c"].transpose(0, 1).contiguous()) if self.cell == "lstm" else h

    def zero_state(self, batch_size: int, device=None) -> dict:
        device = device or self.embedding.weight.device
        zeros = torch.zeros(batch_size, self.num_layers, self.hidden_size, device=device)
        return {"h": zeros, "c": zeros.clone()} if self.cell == "lstm" else {"h": zeros}

    def step(self, tokens: Tensor, state: dict, banned: tuple[int, ...] = (PAD, BOS)) -> tuple[Tensor, dict]:
        """tokens: (N,) -> next-token logits (N, V), next state. ``banned`` ids (never a
        target in training) get -inf, so no search picks them."""
        logits, rnn_state = self(tokens[:, None], self.from_search_state(state))
        logits = logits[:, 0]
        if banned:
            logits = logits.clone()
            logits[:, list(banned)] = float("-inf")
        return logits, self.to_search_state(rnn_state)

    def prime(self, prompt: list[int], batch_size: int = 1) -> tuple[int, dict]:
        """Runs ``<bos> prompt[:-1]`` through the model: -> the token to feed next (the last
        prompt token, or <bos> for an empty prompt) and the state, repeated batch_size times."""
        device = self.embedding.weight.device
        if not prompt:
            return BOS, self.zero_state(batch_size, device)
        seen = torch.tensor([[BOS] + prompt[:-1]], dtype=torch.long, device=device)
        _, state = self(seen)
        state = self.to_search_state(state)
        return prompt[-1], search.map_state(lambda t: t.expand(batch_size, -1, -1).contiguous(), state)

    @torch.no_grad()
    def log_prob(self, sentences: list[list[int]]) -> list[float]:
        """log P(z_1..z_T, <eos>) (natural log) of each sentence of ids, from <bos> and a zero state."""
        if not sentences:
            return []
        device = self.embedding.weight.device
        B, T = len(sentences), max(len(s) for s in sentences) + 1
        inputs = torch.full((B, T), PAD, dtype=torch.long)
        targets = torch.full((B, T), PAD, dtype=torch.long)
        for b, s in enumerate(sentences):
            inputs[b, : len(s) + 1] = torch.tensor([BOS] + s)
            targets[b, : len(s) + 1] = torch.tensor(s + [EOS])
        lengths = torch.tensor([len(s) + 1 for s in sentences])
        logits, _ = self(inputs.to(device), None, lengths)
        logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
        logp = torch.log_softmax(logits, -1).gather(-1, targets.to(device)[..., None]).squeeze(-1)
        return (logp * (targets != PAD).to(device)).sum(1).tolist()


def sample_texts(
    model: LanguageModel,
    vocab: Vocabulary,
    tokenizer,
    num: int = 1,
    prompt: str = "",
    max_len: int = 50,
    temperature: float = 1.0,
    top_k: int = 0,
    seed: int | None = 0,
    allow_unk: bool = True,
) -> list[str]:
    """Algorithm 8-1 through :func:`seq2seq.search.sample` (temperature 0: greedy): ``num``
    samples of at most ``max_len`` new tokens after ``prompt``, detokenized (prompt included)."""
    prompt_tokens = tokenizer.tokenize(prompt) if prompt else []
    start, state = model.prime(vocab.encode(prompt_tokens), num)
    banned = (PAD, BOS) if allow_unk else (PAD, BOS, UNK)
    device = model.embedding.weight.device
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(int(seed))

    def step(tokens: Tensor, state: dict) -> tuple[Tensor, dict]:
        return model.step(tokens, state, banned)

    hyps = search.sample(
        step,
        state,
        num,
        start,
        EOS,
        max_len=max_len,
        temperature=temperature,
        top_k=top_k,
        generator=generator,
    )
    return [tokenizer.detokenize(prompt_tokens + vocab.decode(h.tokens)) for h in hyps]
