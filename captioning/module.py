"""CaptioningModule: a pretrained CNN + ShowTell / ShowAttendTell trained with cross-entropy,
validated with real decoding (greedy or beam, never teacher-forced) and corpus BLEU-1..4.

Loss (seed 002 eq. 8.51): J = -sum_t log y~_t(z_t), the mean cross-entropy over the caption tokens
(w_1 .. <eos>), PAD ignored. BLEU is nltk's corpus BLEU on tokens against all the references of
each image (`seq2seq.metrics.nltk_bleu`); `val_bleu` / `test_bleu` are BLEU-4, so the CLI's default
checkpoint and early-stopping monitor (val_bleu) work unchanged.

Images: the datamodule's default transform (Resize to image_size x image_size, ToTensor, Normalize)
takes the backbone's mean/std (`setup` calls `CaptionDataModule.use_normalization`): (x - 127) / 128
for the packaged EfficientNet-Lite0 weights, ImageNet mean/std for torchvision backbones. The configs
set `image_size: 224`, the backbones' own input size.

Feature cache: with a frozen CNN (train_backbone="none", cache_features=True, the default) the
datamodule serves CNN features computed once per image and transform (seq2seq/image_features.py,
data/features.py); the key covers the backbone, a digest of its weights, the output kind
(global/grid), the transform and the image files. A random (augmenting) transform is not cached.

Optimisation: Adam with two parameter groups, the CNN's trainable parameters at `backbone_lr`
(an empty group with train_backbone="none") and everything else at `lr`; ReduceLROnPlateau on
val BLEU, stepped right after each validation (as in TranslationModule). The vocabulary travels in
checkpoint["seqcap"] as plain lists, so `torch.load(..., weights_only=True)` reads it (the shared
layer: seq2seq/lightning.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch.nn.functional as F
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor

from data.vocab import PAD, Vocabulary
from seq2seq.image_features import ImageFeatures
from seq2seq.lightning import DecodingModule, perplexity
from seq2seq.metrics import nltk_bleu
from seq2seq.modules.vision import ImageEncoder

from .models import ShowAttendTell, ShowTell


class CaptioningModule(ImageFeatures, DecodingModule):
    """`cell`, `peephole` (LSTM) and `gru_reset_after=False` (GRU) choose the decoder's recurrent
    cell and the seeds' variants of it (which run on the cell path, impl="auto")."""

    vocab_sizes = {"vocab": "vocab_size"}
    vocab_hint = "source and min_freq"
    output_key = "path"  # a padded DDP shard may repeat images: one output per image

    def __init__(
        self,
        vocab_size: int,
        model: Literal["showtell", "attention"] = "showtell",
        backbone: str = "efficientnet_lite0",
        pretrained: bool = True,
        train_backbone: Literal["none", "top", "all"] = "none",
        weights_path: str | None = None,
        embed_dim: int = 256,
        hidden_size: int = 512,
        dropout: float = 0.3,
        tie_embeddings: bool = False,
        image_every_step: bool = False,  # ShowTell only
        global_pool: int = 1,  # ShowTell only: the image vector pools the CNN map to k x k (C*k*k values)
        cell: Literal["lstm", "gru", "rnn"] = "lstm",
        impl: Literal["auto", "fused", "cells"] = "auto",
        peephole: bool = False,
        gru_reset_after: bool = True,
        lr: float = 1e-3,
        backbone_lr: float = 1e-4,
        weight_decay: float = 0.0,
        lr_patience: int = 2,  # validations without a better val BLEU before the LRs are cut
        lr_factor: float = 0.5,
        val_decode: Literal["greedy", "beam"] = "greedy",
        test_decode: Literal["greedy", "beam"] = "beam",
        beam_size: int = 3,
        max_len: int = 20,
        num_samples: int = 5,
        feature_block: int | None = None,  # the CNN's features from this block, not its last layer
        cache_features: bool = True,  # frozen CNN (train_backbone="none"): features once, from disk after
    ):
        super().__init__()
        if model not in ("showtell", "attention"):
            raise ValueError(f"model must be 'showtell' or 'attention', got {model!r}")
        if image_every_step and model != "showtell":
            raise ValueError("image_every_step applies to model='showtell' only")
        if global_pool != 1 and model != "showtell":
            raise ValueError("global_pool applies to model='showtell' only (attention reads the whole grid)")
        self.save_hyperparameters()
        # ShowTell projects the global vector into E's space itself (image_proj): no encoder proj
        self.encoder = ImageEncoder(
            backbone, pretrained, train_backbone, "global" if model == "showtell" else "grid",
            embed_dim=None, weights_path=weights_path, global_pool=global_pool, feature_block=feature_block,
        )  # fmt: skip
        decoder = dict(
            embed_dim=embed_dim, hidden_size=hidden_size, cell=cell, dropout=dropout,
            tie_embeddings=tie_embeddings, impl=impl, peephole=peephole, gru_reset_after=gru_reset_after,
        )  # fmt: skip
        C = self.encoder.feature_dim
        if model == "showtell":
            self.model = ShowTell(vocab_size, C, image_every_step=image_every_step, **decoder)
        else:
            self.model = ShowAttendTell(vocab_size, C, **decoder)
        self.vocab: Vocabulary | None = None

    @property
    def image_encoder(self) -> ImageEncoder:
        return self.encoder

    # -- vocabulary from the datamodule, images from the feature cache (seq2seq/image_features.py)
    def setup(self, stage: str) -> None:
        super().setup(stage)  # the vocabulary
        self.prepare_images(stage)

    def use_vocab_state(self, state: dict) -> None:
        self.vocab = Vocabulary.from_list(state["vocab"])

    # -- training -----------------------------------------------------------------------------
    def forward(self, images: Tensor, captions_in: Tensor) -> Tensor:
        """images: (B, 3, H, W), captions_in: (B, T) -> logits (B, T, V)."""
        return self.model(self.encoder(images), captions_in)

    def eval_loss(self, batch: dict) -> tuple[Tensor, int]:
        logits = self.model(self.image_features(batch), batch["captions_in"])  # (B, T, V)
        target = batch["captions_out"]
        loss = F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(), ignore_index=PAD)
        return loss, int((target != PAD).sum())

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss, _ = self.eval_loss(batch)
        B = batch["captions_in"].shape[0]
        self.log("train_loss", loss, prog_bar=True, batch_size=B)
        self.log("train_ppl", perplexity(loss.item()), batch_size=B)
        return loss

    # -- validation and test: real decoding ---------------------------------------------------
    def decode_batch(self, batch: dict, method: str, return_attention: bool = False) -> list:
        """A batch (images or cached features) -> one hypothesis per image (seq2seq.search.Hypothesis:
        token ids without specials, score, and with return_attention (attention model only) the
        attention (len(tokens), HW) over the feature grid)."""
        if self.vocab is None:
            raise RuntimeError("no vocabulary: fit/validate with a CaptionDataModule or load a checkpoint")
        hyps = self.model.caption(
            self.image_features(batch), method=method, beam_size=self.hparams.beam_size,
            max_len=self.hparams.max_len, return_attention=return_attention,
        )  # fmt: skip
        return [h[0] for h in hyps]

    @property
    def test_decode(self) -> str:
        return self.hparams.test_decode

    def decode_outputs(self, batch: dict, prefix: str, method: str) -> list[dict]:
        attends = self.hparams.model == "attention"  # kept for the attention overlays of the samples
        return [
            {
                "image_id": batch["image_ids"][b],
                "path": batch["paths"][b],
                "hyp": self.vocab.decode(h.tokens),
                "refs": batch["references"][b],
                "attention": None if h.attention is None else h.attention.float().cpu(),
            }
            for b, h in enumerate(self.decode_batch(batch, method, return_attention=attends))
        ]

    def score_outputs(self, prefix: str, outputs: list[dict]) -> tuple[float, str]:
        scores = nltk_bleu([o["hyp"] for o in outputs], [o["refs"] for o in outputs])
        for n in range(1, 5):
            self.log(f"{prefix}_bleu{n}", scores[f"bleu{n}"])
        self.log(f"{prefix}_bleu", scores["bleu4"], prog_bar=True)
        bleus = " ".join(f"BLEU-{n} {scores[f'bleu{n}']:.2f}" for n in range(1, 5))
        return scores["bleu4"], f"{prefix} {bleus} on {len(outputs)} images (nltk corpus BLEU)"

    def log_samples(self, prefix: str, samples: list[dict], header: str) -> None:
        """samples/{prefix}_epochNNN.txt and .png (the images with their captions and first
        reference); for an attention model attention/{prefix}_epochNNN_i.png per sample (where
        each word looks on the image); wandb tables and images when a WandbLogger is attached."""
        from seq2seq.plots import attention_overlay

        from .visualize import caption_grid

        epoch = self.current_epoch
        rows = [[o["path"], " ".join(o["hyp"]), " | ".join(" ".join(r) for r in o["refs"])] for o in samples]
        text = "\n\n".join([header] + [f"IMG {p}\nHYP {h}\nREF {r}" for p, h, r in rows])
        path = self.write_samples(prefix, text)
        grid = caption_grid(rows, path.with_suffix(".png"), title=header) if rows else None
        plots = []
        for i, o in enumerate(samples[:3]):
            if o["attention"] is None or not o["hyp"]:
                continue
            try:
                png = self.run_dir / "attention" / f"{prefix}_epoch{epoch:03d}_{i}.png"
                title = Path(o["path"]).name
                plots.append(attention_overlay(o["path"], o["hyp"], o["attention"], png, title=title))
            except (OSError, ValueError) as e:  # an image gone since it was read: the run goes on
                rank_zero_warn(f"no attention plot for {o['path']}: {e}")
        if any(isinstance(logger, WandbLogger) for logger in self.loggers):
            import wandb

            images = [[wandb.Image(p), h, r] for p, h, r in rows]
            self.wandb_table(f"{prefix}_samples", ["image", "output", "references"], images)
            self.wandb_images(f"{prefix}_captions", [grid] if grid is not None else [])
            self.wandb_images(f"{prefix}_attention", plots)

    # -- optimisation -------------------------------------------------------------------------
    def param_groups(self) -> list[dict]:
        """[CNN parameters that train at backbone_lr (possibly none), the rest at lr]."""
        backbone = list(self.encoder.backbone_parameters())
        ids = {id(p) for p in backbone}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        return [
            {"params": backbone, "lr": self.hparams.backbone_lr, "name": "backbone"},
            {"params": rest, "lr": self.hparams.lr, "name": "decoder"},
        ]
