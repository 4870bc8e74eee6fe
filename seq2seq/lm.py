"""Recurrent language model (seed 002 §8.5.1) trained with truncated BPTT.

Each unit of text (a line or a paragraph) is the pair of eq. (8.49): the input
``x = (<bos>, z_1, ..., z_T)`` and the target ``y = (z_1, ..., z_T, <eos>)``, the same text
shifted by one; the loss is the cross-entropy of every next token. :class:`data.text.TextDataModule`
lays the units end to end in B parallel streams and hands them over in chunks of k columns, in
order. :class:`LanguageModule` keeps the recurrent state of the last chunk (``self._states``, one
per stage: train, val, test), feeds it into the next chunk and detaches it after each step, so
the state carries across chunk boundaries while gradients stop there (truncated BPTT, k steps).
The state is reset at the start of every epoch (and at chunk 0), so evaluating a split chunk by
chunk gives exactly the loss of one pass over each stream.

Perplexity is ``exp(sum of token losses / number of tokens)`` over the whole split (the chunks
are summed by token counts, not averaged per batch); ``<bos>`` targets (nothing to predict) and
padding are not counted. Logged: ``train_loss`` (per step and token-weighted per epoch),
``train_ppl`` (per step), ``train_epoch_ppl``, ``val_loss``, ``val_ppl``, ``test_loss``, ``test_ppl``.
Adam with ReduceLROnPlateau on ``val_loss`` (stepped by the module, see plateau.py); gradient
clipping is the Trainer's (``gradient_clip_val``). The vocabulary and tokenizer travel inside
the checkpoint as plain types (``checkpoint["seqcap"]``), so it loads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from data.text import text_tokenizer_from_state
from data.vocab import BOS, EOS, PAD, UNK, Vocabulary

from . import search
from .modules.rnn import RNN
from .plateau import Plateau


def detach_state(state):
    """The recurrent state without its history: the next chunk's gradients stop here."""
    return search.map_state(lambda t: t.detach(), state)


class LanguageModel(nn.Module):
    """Embedding E -> dropout -> stacked RNN -> dropout -> output layer (optionally tied to E).

    With ``tie_embeddings`` the output layer shares E's weights (Press & Wolf 2017); when
    ``hidden_size != embed_dim`` a linear projection maps the RNN output to ``embed_dim`` first.
    Special ids: pad=0, unk=1, bos=2, eos=3.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 256,
        hidden_size: int = 256,
        cell: Literal["rnn", "lstm", "gru"] = "lstm",
        num_layers: int = 2,
        dropout: float = 0.3,
        tie_embeddings: bool = True,
        impl: Literal["fused", "cells"] = "fused",
    ):
        super().__init__()
        self.vocab_size, self.cell = vocab_size, cell
        self.num_layers, self.hidden_size = num_layers, hidden_size
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        self.rnn = RNN(cell, embed_dim, hidden_size, num_layers, False, dropout, impl)
        self.dropout = nn.Dropout(dropout)
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


class LanguageModule(pl.LightningModule):
    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 256,
        hidden_size: int = 256,
        cell: Literal["rnn", "lstm", "gru"] = "lstm",
        num_layers: int = 2,
        dropout: float = 0.3,
        tie_embeddings: bool = True,
        impl: Literal["fused", "cells"] = "fused",
        lr: float = 2e-3,
        weight_decay: float = 0.0,
        lr_patience: int = 1,
        lr_factor: float = 0.5,
        num_samples: int = 3,
        sample_len: int = 50,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model = LanguageModel(
            vocab_size, embed_dim, hidden_size, cell, num_layers, dropout, tie_embeddings, impl
        )
        self.vocab_state: dict | None = None
        self.plateau = Plateau("min", lr_factor, lr_patience)
        self._states: dict[str, object] = {}  # carried recurrent state per stage (detached)
        self._sums: dict[str, list[Tensor]] = {}  # stage -> [sum of token losses, tokens]

    # -- vocabulary and tokenizer: from the datamodule, then from the checkpoint --------------
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "vocab_state"):
            self._set_vocab_state(dm.vocab_state())

    def _set_vocab_state(self, state: dict) -> None:
        if self.vocab_state is not None and self.vocab_state["vocab"] != state["vocab"]:
            raise ValueError(
                "the data's vocabulary differs from the checkpoint's: use the files, level and "
                "tokenizer options the checkpoint was trained with"
            )
        if len(state["vocab"]) != self.hparams.vocab_size:
            raise ValueError(
                f"the vocabulary has {len(state['vocab'])} entries but the model was built for "
                f"vocab_size={self.hparams.vocab_size}"
            )
        self.vocab_state = state
        self.vocab = Vocabulary.from_list(state["vocab"])
        self.tokenizer = text_tokenizer_from_state(state["tokenizer"])

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["seqcap"] = self.vocab_state
        self.plateau.save(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if checkpoint.get("seqcap"):
            self._set_vocab_state(checkpoint["seqcap"])
        self.plateau.load(checkpoint)

    # -- truncated BPTT -----------------------------------------------------------------------
    def reset_state(self, stage: str) -> None:
        self._states.pop(stage, None)

    def chunk_loss(self, batch: dict, stage: str) -> tuple[Tensor, Tensor]:
        """-> (sum of the token losses, number of scored tokens) of one batch.

        A stream chunk ({"input", "target"} (B, k), "chunk": i) starts from the state the
        previous chunk of this stage left (none at chunk 0) and leaves its own, detached. A batch
        of padded units ("lengths" present) starts from zeros and leaves nothing."""
        inputs, targets, lengths = batch["input"], batch["target"], batch.get("lengths")
        state = None
        if lengths is None and int(batch.get("chunk", 1)) != 0:
            state = self._states.get(stage)
            h = state[0] if isinstance(state, tuple) else state
            if h is not None and h.shape[1] != inputs.shape[0]:  # another layout: start afresh
                state = None
        logits, new_state = self.model(inputs, state, lengths)
        if lengths is None:
            self._states[stage] = detach_state(new_state)
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        loss_sum = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=PAD, reduction="sum")
        return loss_sum, (targets != PAD).sum()

    def _accumulate(self, stage: str, loss_sum: Tensor, tokens: Tensor) -> None:
        sums = self._sums.setdefault(stage, [loss_sum.new_zeros(()), tokens.new_zeros(())])
        sums[0] = sums[0] + loss_sum.detach()
        sums[1] = sums[1] + tokens

    def _epoch_loss(self, stage: str) -> float | None:
        """Mean token loss of the stage's epoch over every process, or None without tokens."""
        sums = self._sums.pop(stage, None)
        if sums is None:
            return None
        total = torch.stack([sums[0].double(), sums[1].double()])
        if self.trainer.world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.all_reduce(total)
        loss, tokens = total.tolist()
        return loss / tokens if tokens else None

    def on_train_epoch_start(self) -> None:
        self.reset_state("train")
        self._sums.pop("train", None)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss_sum, tokens = self.chunk_loss(batch, "train")
        self._accumulate("train", loss_sum, tokens)
        loss = loss_sum / tokens.clamp(min=1)
        n = max(int(tokens), 1)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("train_ppl", math.exp(min(loss.item(), 50.0)), on_step=True, on_epoch=False, batch_size=n)
        return loss

    def on_train_epoch_end(self) -> None:
        loss = self._epoch_loss("train")
        if loss is not None:
            self.log("train_epoch_ppl", math.exp(min(loss, 50.0)), rank_zero_only=True)

    # -- validation and test: perplexity over the whole split ---------------------------------
    def on_validation_epoch_start(self) -> None:
        self.reset_state("val")
        self._sums.pop("val", None)

    def on_test_epoch_start(self) -> None:
        self.reset_state("test")
        self._sums.pop("test", None)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._accumulate("val", *self.chunk_loss(batch, "val"))

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._accumulate("test", *self.chunk_loss(batch, "test"))

    def _eval_epoch_end(self, stage: str) -> None:
        loss = self._epoch_loss(stage)
        if loss is None:
            return
        self.log(f"{stage}_loss", loss, prog_bar=stage == "val")
        self.log(f"{stage}_ppl", math.exp(min(loss, 50.0)), prog_bar=True)
        if stage == "val":
            self.plateau.step(self.trainer, loss)
        if stage == "val" and self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self._write_samples()

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    # -- samples (Algorithm 8-1) --------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        num: int = 1,
        prompt: str = "",
        max_len: int = 50,
        temperature: float = 1.0,
        top_k: int = 0,
        seed: int | None = 0,
    ) -> list[str]:
        """Detokenized samples, each continuing ``prompt`` (from <bos> when empty)."""
        if self.vocab_state is None:
            raise RuntimeError("no vocabulary yet: train with a TextDataModule or load a checkpoint")
        return sample_texts(self.model, self.vocab, self.tokenizer, num, prompt, max_len, temperature,
                            top_k, seed)  # fmt: skip

    def _write_samples(self) -> None:
        hp = self.hparams
        if self.vocab_state is None or hp.num_samples < 1 or not self.trainer.loggers:
            return  # samples go beside the logs: no logger, no samples (nothing lands in the cwd)
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            texts = self.generate(hp.num_samples, max_len=hp.sample_len, seed=self.current_epoch)
        self.model.train(was_training)
        out = Path(self.trainer.log_dir or self.trainer.default_root_dir) / "samples"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"val_epoch{self.current_epoch:03d}.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")

    # -- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        self.plateau.attach(optimizer)  # on val_loss, stepped by this module (seq2seq/plateau.py)
        return optimizer


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

    hyps = search.sample(step, state, num, start, EOS, max_len, temperature, top_k, generator)
    return [tokenizer.detokenize(prompt_tokens + vocab.decode(h.tokens)) for h in hyps]
