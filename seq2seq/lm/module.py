"""Recurrent language model (seed 002 §8.5.1) trained with truncated BPTT.

Each unit of text (a line or a paragraph) is the pair of eq. (8.49): the input
``x = (<bos>, z_1, ..., z_T)`` and the target ``y = (z_1, ..., z_T, <eos>)``, the same text
shifted by one; the loss is the cross-entropy of every next token.
:class:`data.datamodules.text.TextDataModule`
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
``torch.load(weights_only=True)`` (the shared layer: seq2seq/training/module.py). The model itself,
:class:`LanguageModel`, and its sampling are in seq2seq/lm/network.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from data.core.tokenizers import tokenizer_from_state
from data.core.vocab import PAD, Vocabulary
from seq2seq import search
from seq2seq.lm.network import LanguageModel, detach_state, sample_texts
from seq2seq.modules.rnn import RecurrentOptions
from seq2seq.training.module import SeqCapModule, as_options, perplexity
from seq2seq.training.resume import gather, mine


class LanguageModule(SeqCapModule):
    """`rnn` (YAML `rnn:` under init_args) holds the cell, sizes and cell variants
    (RecurrentOptions: `peephole` and `gru_reset_after=False` select the seeds' variants, which
    run on the cell path)."""

    monitor_mode = "min"  # val_loss
    task = "lm"
    vocab_sizes = {"vocab": "vocab_size"}
    vocab_hint = "files, level and tokenizer options"

    def __init__(
        self,
        vocab_size: int,
        rnn: RecurrentOptions = RecurrentOptions(num_layers=2, dropout=0.3),
        tie_embeddings: bool = True,
        lr: float = 2e-3,
        weight_decay: float = 0.0,
        lr_patience: int = 1,
        lr_factor: float = 0.5,
        num_samples: int = 3,
        sample_len: int = 50,
    ):
        super().__init__()
        self.rnn = as_options(RecurrentOptions, rnn)
        self.save_options()
        self.model = LanguageModel(vocab_size, self.rnn, tie_embeddings=tie_embeddings)
        self._states: dict[str, object] = {}  # carried recurrent state per stage (detached)
        self._resume_tbptt: list | None = None  # every process's, from the checkpoint resumed
        self._sums: dict[str, list[Tensor]] = {}  # stage -> [sum of token losses, tokens]

    def use_vocab_state(self, state: dict) -> None:
        self.vocab = Vocabulary.from_list(state["vocab"])
        self.tokenizer = tokenizer_from_state(state["tokenizer"])

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

    # -- the carried state in checkpoints: a run resumed mid-epoch continues each stream -----
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        state = self._states.get("train")
        checkpoint["tbptt_state"] = gather(None if state is None else search.map_state(Tensor.cpu, state))

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self._resume_tbptt = checkpoint.get("tbptt_state")

    def on_train_start(self) -> None:
        super().on_train_start()
        saved, self._resume_tbptt = self._resume_tbptt, None
        state = mine(saved, "truncated-BPTT states") if saved else None
        if state is not None:
            self._states["train"] = search.map_state(lambda t: t.to(self.device), state)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss_sum, tokens = self.chunk_loss(batch, "train")
        self._accumulate("train", loss_sum, tokens)
        loss = loss_sum / tokens.clamp(min=1)
        n = max(int(tokens), 1)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("train_ppl", perplexity(loss.item()), on_step=True, on_epoch=False, batch_size=n)
        return loss

    def on_train_epoch_end(self) -> None:
        loss = self._epoch_loss("train")
        if loss is not None:
            self.log("train_epoch_ppl", perplexity(loss), rank_zero_only=True)

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
        self.log(f"{stage}_ppl", perplexity(loss), prog_bar=True)
        if stage == "val":
            self.plateau.step(self.trainer, loss)
        self.resolve_run_dir()  # all ranks: a broadcast
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
        self.write_samples("val", "\n".join(texts))
