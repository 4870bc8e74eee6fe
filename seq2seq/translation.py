"""TranslationModule: Seq2Seq trained with cross-entropy, validated with real decoding and BLEU.

Logs train loss/ppl, val loss/ppl and val BLEU (sacreBLEU on detokenized output against the raw
references), a table of sample translations and attention heatmaps (PNG) of a few dev sentences.
Adam with ReduceLROnPlateau on val BLEU; gradient clipping is the Trainer's
(`gradient_clip_val`, seed 004). The vocabularies and tokenizers travel inside the checkpoint.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import WandbLogger
from torch import Tensor

from data.tokenizers import Tokenizer, tokenizer_from_state
from data.vocab import PAD, Vocabulary

from .metrics import sacre_bleu
from .model import Seq2Seq
from .plateau import Plateau
from .plots import attention_heatmap
from .translate import replace_unknowns


class TranslationModule(pl.LightningModule):
    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        embed_dim: int = 256,
        hidden_size: int = 256,
        cell: Literal["rnn", "lstm", "gru"] = "lstm",
        num_layers: int = 1,
        bidirectional: bool = True,
        context: Literal["fixed", "attention"] = "attention",
        attention: Literal["bahdanau", "luong_dot", "luong_general"] = "bahdanau",
        input_feeding: bool = True,
        dropout: float = 0.2,
        impl: Literal["fused", "cells"] = "fused",
        tie_embeddings: bool = False,
        label_smoothing: float = 0.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_patience: int = 2,  # validations without a better val BLEU before the LR is cut
        lr_factor: float = 0.5,
        val_decode: Literal["greedy", "beam"] = "greedy",
        beam_size: int = 5,
        alpha: float = 0.6,
        num_samples: int = 5,
        unk_replace: bool = True,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model = Seq2Seq(
            src_vocab_size, tgt_vocab_size, embed_dim, hidden_size, cell, num_layers, bidirectional,
            context, attention, input_feeding, dropout, impl, tie_embeddings,
        )  # fmt: skip
        self.vocab_state: dict | None = None
        self.plateau = Plateau("max", lr_factor, lr_patience)
        self._outputs: list[dict] = []

    # -- vocabularies and tokenizers: from the datamodule, then from the checkpoint -----------
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "vocab_state"):
            self._set_vocab_state(dm.vocab_state())

    def _set_vocab_state(self, state: dict) -> None:
        if self.vocab_state is not None:
            for side in ("src_vocab", "tgt_vocab"):
                if self.vocab_state[side] != state[side]:
                    raise ValueError(
                        f"the data's {side.replace('_', ' ')}ulary differs from the checkpoint's: "
                        "use the data_dir and tokenizer options the checkpoint was trained with"
                    )
        self.vocab_state = state
        self.src_vocab = Vocabulary.from_list(state["src_vocab"])
        self.tgt_vocab = Vocabulary.from_list(state["tgt_vocab"])
        self.src_tokenizer: Tokenizer = tokenizer_from_state(state["src_tokenizer"])
        self.tgt_tokenizer: Tokenizer = tokenizer_from_state(state["tgt_tokenizer"])

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["seqcap"] = self.vocab_state
        self.plateau.save(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if checkpoint.get("seqcap"):
            self._set_vocab_state(checkpoint["seqcap"])
        self.plateau.load(checkpoint)

    # -- training -----------------------------------------------------------------------------
    def _loss(self, batch: dict, label_smoothing: float) -> tuple[Tensor, int]:
        logits = self.model(batch["src"], batch["src_lengths"], batch["tgt_in"])  # (B, T, V)
        loss = F.cross_entropy(
            logits.flatten(0, 1).float(), batch["tgt_out"].flatten(), ignore_index=PAD,
            label_smoothing=label_smoothing,
        )  # fmt: skip
        return loss, int((batch["tgt_out"] != PAD).sum())

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss, tokens = self._loss(batch, self.hparams.label_smoothing)
        B = batch["src"].shape[0]
        self.log("train_loss", loss, prog_bar=True, batch_size=B)
        self.log("train_ppl", math.exp(min(loss.item(), 50.0)), batch_size=B)
        self.log("train_tokens", float(tokens), reduce_fx="sum", batch_size=B)
        return loss

    # -- validation and test: real decoding ---------------------------------------------------
    def decode_batch(self, batch: dict, method: str, return_attention: bool = False):
        hyps = self.model.translate(
            batch["src"], batch["src_lengths"], method=method, beam_size=self.hparams.beam_size,
            alpha=self.hparams.alpha, return_attention=return_attention,
        )  # fmt: skip
        return [h[0] for h in hyps]

    def _eval_step(self, batch: dict, prefix: str, method: str) -> None:
        loss, tokens = self._loss(batch, 0.0)
        self.log(f"{prefix}_loss", loss, batch_size=tokens, sync_dist=True)
        hyps = self.decode_batch(batch, method, return_attention=prefix == "val" or self.hparams.unk_replace)
        for b, h in enumerate(hyps):
            tokens_out = self.tgt_vocab.decode(h.tokens)
            if self.hparams.unk_replace:
                src_tokens = self.src_tokenizer.tokenize(batch["src_text"][b])
                tokens_out = replace_unknowns(tokens_out, h.attention, src_tokens)
            self._outputs.append(
                {
                    "index": batch["index"][b],
                    "src": batch["src_text"][b],
                    "ref": batch["tgt_text"][b],
                    "hyp": self.tgt_tokenizer.detokenize(tokens_out),
                    "hyp_tokens": tokens_out,
                    "src_tokens": self.src_vocab.decode(batch["src"][b, : batch["src_lengths"][b]].tolist()),
                    "attention": None if h.attention is None else h.attention.cpu(),
                }
            )

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val", self.hparams.val_decode)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test", "beam")

    def _gather(self) -> list[dict]:
        outputs, self._outputs = self._outputs, []
        if self.trainer.world_size > 1 and torch.distributed.is_initialized():
            light = [{k: v for k, v in o.items() if k != "attention"} for o in outputs]
            everything: list = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(everything, light)
            outputs = [o for part in everything for o in part]
        return sorted(outputs, key=lambda o: o["index"])

    def _eval_epoch_end(self, prefix: str) -> None:
        local = sorted(self._outputs, key=lambda o: o["index"])  # this process's, with attention
        outputs = self._gather()
        if not outputs:
            return
        hyps, refs = [o["hyp"] for o in outputs], [o["ref"] for o in outputs]
        bleu, signature = sacre_bleu(hyps, refs)
        self.bleu_signature = signature
        self.log(f"{prefix}_bleu", bleu, prog_bar=True)  # every rank has all outputs: same BLEU
        if prefix == "val":
            self.plateau.step(self.trainer, bleu)
        if prefix == "val":
            loss = self.trainer.callback_metrics.get("val_loss")
            if loss is not None:
                self.log("val_ppl", math.exp(min(float(loss), 50.0)), rank_zero_only=True)
        else:
            copy, _ = sacre_bleu([o["src"] for o in outputs], refs)
            self.log("test_copy_bleu", copy, rank_zero_only=True)
        out_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)  # all ranks: a broadcast
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            header = f"{prefix} BLEU {bleu:.2f} on {len(outputs)} sentences; sacreBLEU {signature}"
            self._log_samples(prefix, local[: self.hparams.num_samples], out_dir, header)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def _log_samples(self, prefix: str, samples: list[dict], out_dir: Path, header: str) -> None:
        epoch = self.current_epoch
        rows = [[o["src"], o["hyp"], o["ref"]] for o in samples]
        text = "\n\n".join([header] + [f"SRC {s}\nHYP {h}\nREF {r}" for s, h, r in rows])
        (out_dir / "samples").mkdir(parents=True, exist_ok=True)
        (out_dir / "samples" / f"{prefix}_epoch{epoch:03d}.txt").write_text(text + "\n", encoding="utf-8")
        plots = []
        for i, o in enumerate(samples[:3]):
            if o["attention"] is not None and o["hyp_tokens"]:
                path = out_dir / "attention" / f"{prefix}_epoch{epoch:03d}_{i}.png"
                plots.append(attention_heatmap(o["attention"], o["src_tokens"], o["hyp_tokens"], path))
        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                columns = ["source", "output", "reference"]
                logger.log_table(key=f"{prefix}_samples", columns=columns, data=rows)
                if plots:
                    logger.log_image(key=f"{prefix}_attention", images=[str(p) for p in plots])

    # -- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self):
        """Adam; ReduceLROnPlateau on val BLEU, stepped by this module (see seq2seq/plateau.py)."""
        hp = self.hparams
        optimizer = torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        self.plateau.attach(optimizer)
        return optimizer
