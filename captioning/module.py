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

Feature cache: with a frozen CNN (train_backbone="none", cache_features=True, the default) `setup`
asks the datamodule to serve CNN features instead of images (`CaptionDataModule.use_features`,
data/features.py): the CNN runs once per image and transform -- on the trainer's device, with a
progress bar -- and every later epoch and run reads the features from disk. The cache key covers the
backbone, a digest of its weights, the output kind (global/grid), the transform and the image files.
A random (augmenting) transform is not cached. The model is the same either way: `features(batch)`
takes the cached features when the batch has them, else runs the encoder.

Optimisation: Adam with two parameter groups, the CNN's trainable parameters at `backbone_lr`
(an empty group with train_backbone="none") and everything else at `lr`; ReduceLROnPlateau on
val BLEU, stepped right after each validation (as in TranslationModule). The vocabulary travels in
checkpoint["seqcap"] as plain lists, so `torch.load(..., weights_only=True)` reads it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor

from data.vocab import PAD, Vocabulary
from seq2seq.metrics import nltk_bleu
from seq2seq.plateau import Plateau

from .encoders import ImageEncoder
from .models import ShowAttendTell, ShowTell


class CaptioningModule(pl.LightningModule):
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
            embed_dim=None, weights_path=weights_path, global_pool=global_pool,
        )  # fmt: skip
        C = self.encoder.feature_dim
        if model == "showtell":
            self.model = ShowTell(
                vocab_size, C, embed_dim, hidden_size, dropout=dropout,
                tie_embeddings=tie_embeddings, image_every_step=image_every_step,
            )  # fmt: skip
        else:
            self.model = ShowAttendTell(
                vocab_size, C, embed_dim, hidden_size, dropout=dropout, tie_embeddings=tie_embeddings
            )
        self.vocab_state: dict | None = None
        self.vocab: Vocabulary | None = None
        self.plateau = Plateau("max", lr_factor, lr_patience)
        self._outputs: list[dict] = []

    # -- vocabulary: from the datamodule, then from the checkpoint ---------------------------
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "use_normalization"):
            dm.use_normalization(self.encoder.mean, self.encoder.std)  # preprocessing follows the backbone
        if dm is not None and hasattr(dm, "vocab_state"):
            self._set_vocab_state(dm.vocab_state())
        if dm is not None and hasattr(dm, "use_features") and self.caches_features:
            self._use_feature_cache(dm, stage)

    # -- the feature cache (data/features.py) -------------------------------------------------
    @property
    def caches_features(self) -> bool:
        """Whether batches may carry cached CNN features: only while the CNN cannot change."""
        return self.hparams.cache_features and self.hparams.train_backbone == "none"

    def _use_feature_cache(self, dm, stage: str) -> None:
        """Rank 0 reads or builds the cache first; the other ranks then read it."""
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage, ())
        fingerprint = self.encoder.fingerprint()
        first = self.trainer.is_global_zero
        if first:
            dm.use_features(self.extract_features, fingerprint, splits)
        self.trainer.strategy.barrier("seqcap_feature_cache")
        if not first:
            dm.use_features(self.extract_features, fingerprint, splits)

    @torch.inference_mode()
    def extract_features(self, loader, split: str = "") -> Tensor:
        """The frozen CNN over a loader of image batches -> (N, C) or (N, HW, C) features on the CPU,
        run on the trainer's device (a GPU when it has one), with a progress bar."""
        from tqdm.auto import tqdm

        trainer = getattr(self, "_trainer", None)
        device = trainer.strategy.root_device if trainer is not None else self.device
        home = next(self.encoder.parameters()).device
        was_training = self.encoder.training
        self.encoder.to(device).eval()
        try:
            bar = tqdm(loader, desc=f"CNN features ({split})", unit="batch", disable=not self._show_bars())
            features = [self.encoder(images.to(device)).float().cpu() for images in bar]
        finally:
            self.encoder.to(home).train(was_training)
        return torch.cat(features)

    def _show_bars(self) -> bool:
        trainer = getattr(self, "_trainer", None)
        return trainer is None or (trainer.is_global_zero and trainer.progress_bar_callback is not None)

    def features(self, batch: dict) -> Tensor:
        """The CNN features of a batch: cached ones when the batch carries them, else the encoder's."""
        if "features" in batch:
            return batch["features"]
        return self.encoder(batch["images"])

    def _set_vocab_state(self, state: dict) -> None:
        if self.vocab_state is not None and self.vocab_state["vocab"] != state["vocab"]:
            raise ValueError(
                "the data's vocabulary differs from the checkpoint's: use the source and min_freq "
                "the checkpoint was trained with"
            )
        n, size = len(state["vocab"]), self.hparams.vocab_size
        if n != size:
            raise ValueError(f"a vocabulary of {n} words for a model with vocab_size={size}")
        self.vocab_state = state
        self.vocab = Vocabulary.from_list(state["vocab"])

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["seqcap"] = self.vocab_state
        self.plateau.save(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if checkpoint.get("seqcap"):
            self._set_vocab_state(checkpoint["seqcap"])
        self.plateau.load(checkpoint)

    # -- training -----------------------------------------------------------------------------
    def forward(self, images: Tensor, captions_in: Tensor) -> Tensor:
        """images: (B, 3, H, W), captions_in: (B, T) -> logits (B, T, V)."""
        return self.model(self.encoder(images), captions_in)

    def _loss(self, batch: dict) -> tuple[Tensor, int]:
        logits = self.model(self.features(batch), batch["captions_in"])  # (B, T, V)
        target = batch["captions_out"]
        loss = F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(), ignore_index=PAD)
        return loss, int((target != PAD).sum())

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss, _ = self._loss(batch)
        B = batch["captions_in"].shape[0]
        self.log("train_loss", loss, prog_bar=True, batch_size=B)
        self.log("train_ppl", math.exp(min(loss.item(), 50.0)), batch_size=B)
        return loss

    # -- validation and test: real decoding ---------------------------------------------------
    def decode_batch(self, batch: dict, method: str, return_attention: bool = False) -> list:
        """A batch (images or cached features) -> one hypothesis per image (seq2seq.search.Hypothesis:
        token ids without specials, score, and with return_attention (attention model only) the
        attention (len(tokens), HW) over the feature grid)."""
        if self.vocab is None:
            raise RuntimeError("no vocabulary: fit/validate with a CaptionDataModule or load a checkpoint")
        hyps = self.model.caption(
            self.features(batch), method=method, beam_size=self.hparams.beam_size,
            max_len=self.hparams.max_len, return_attention=return_attention,
        )  # fmt: skip
        return [h[0] for h in hyps]

    def _eval_step(self, batch: dict, prefix: str, method: str) -> None:
        loss, tokens = self._loss(batch)
        self.log(f"{prefix}_loss", loss, batch_size=tokens, sync_dist=True)
        attends = self.hparams.model == "attention"  # kept for the attention overlays of the samples
        for b, h in enumerate(self.decode_batch(batch, method, return_attention=attends)):
            self._outputs.append(
                {
                    "image_id": batch["image_ids"][b],
                    "path": batch["paths"][b],
                    "hyp": self.vocab.decode(h.tokens),
                    "refs": batch["references"][b],
                    "attention": None if h.attention is None else h.attention.float().cpu(),
                }
            )

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val", self.hparams.val_decode)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test", self.hparams.test_decode)

    def _gather(self) -> list[dict]:
        outputs, self._outputs = self._outputs, []
        if self.trainer.world_size > 1 and torch.distributed.is_initialized():
            light = [{k: v for k, v in o.items() if k != "attention"} for o in outputs]
            everything: list = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(everything, light)
            outputs = [o for part in everything for o in part]
        unique = {o["path"]: o for o in outputs}  # a padded DDP shard may repeat images
        return sorted(unique.values(), key=lambda o: o["path"])

    def _eval_epoch_end(self, prefix: str) -> None:
        local = sorted(self._outputs, key=lambda o: o["path"])  # this process's, with attention
        outputs = self._gather()
        if not outputs:
            return
        scores = nltk_bleu([o["hyp"] for o in outputs], [o["refs"] for o in outputs])
        for n in range(1, 5):
            self.log(f"{prefix}_bleu{n}", scores[f"bleu{n}"])
        self.log(f"{prefix}_bleu", scores["bleu4"], prog_bar=True)  # every rank: the same value
        if prefix == "val":
            self.plateau.step(self.trainer, scores["bleu4"])
        if prefix == "val":
            loss = self.trainer.callback_metrics.get("val_loss")
            if loss is not None:
                self.log("val_ppl", math.exp(min(float(loss), 50.0)), rank_zero_only=True)
        out_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)  # all ranks: a broadcast
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            bleus = " ".join(f"BLEU-{n} {scores[f'bleu{n}']:.2f}" for n in range(1, 5))
            header = f"{prefix} {bleus} on {len(outputs)} images (nltk corpus BLEU)"
            self._log_samples(prefix, local[: self.hparams.num_samples], out_dir, header)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def _log_samples(self, prefix: str, samples: list[dict], out_dir: Path, header: str) -> None:
        """samples/{prefix}_epochNNN.txt and .png (the images with their captions and first
        reference); for an attention model attention/{prefix}_epochNNN_i.png per sample (where
        each word looks on the image); wandb tables and images when a WandbLogger is attached."""
        from .visualize import attention_overlay, caption_grid

        epoch = self.current_epoch
        rows = [[o["path"], " ".join(o["hyp"]), " | ".join(" ".join(r) for r in o["refs"])] for o in samples]
        text = "\n\n".join([header] + [f"IMG {p}\nHYP {h}\nREF {r}" for p, h, r in rows])
        path = out_dir / "samples" / f"{prefix}_epoch{epoch:03d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
        grid = caption_grid(rows, path.with_suffix(".png"), title=header) if rows else None
        plots = []
        for i, o in enumerate(samples[:3]):
            if o["attention"] is None or not o["hyp"]:
                continue
            try:
                png = out_dir / "attention" / f"{prefix}_epoch{epoch:03d}_{i}.png"
                title = Path(o["path"]).name
                plots.append(attention_overlay(o["path"], o["hyp"], o["attention"], png, title=title))
            except (OSError, ValueError) as e:  # an image gone since it was read: the run goes on
                rank_zero_warn(f"no attention plot for {o['path']}: {e}")
        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                data = [[wandb.Image(p), h, r] for p, h, r in rows]
                columns = ["image", "output", "references"]
                logger.log_table(key=f"{prefix}_samples", columns=columns, data=data)
                if grid is not None:
                    logger.log_image(key=f"{prefix}_captions", images=[str(grid)])
                if plots:
                    logger.log_image(key=f"{prefix}_attention", images=[str(p) for p in plots])

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

    def configure_optimizers(self):
        """Adam; ReduceLROnPlateau on val BLEU-4, stepped by this module (seq2seq/plateau.py)."""
        hp = self.hparams
        optimizer = torch.optim.Adam(self.param_groups(), lr=hp.lr, weight_decay=hp.weight_decay)
        self.plateau.attach(optimizer)
        return optimizer
