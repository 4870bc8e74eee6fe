"""The image side of a LightningModule: a frozen CNN's features served from the disk cache.

Shared by captioning (captioning/captioner/module.py) and multimodal translation
(seq2seq/translation/module.py).
With a frozen CNN (train_backbone="none") and cache_features=True, `setup` asks the datamodule to
serve features instead of images (`use_features(extract, fingerprint, splits)`, data/core/features.py):
the CNN runs once per image and transform, on the trainer's device with a progress bar; every
later epoch and run reads the features from disk. Rank 0 fills the cache first, the other ranks
then read it. `image_features(batch)` takes the cached features when the batch has them, else runs
the encoder, so the model is the same either way.
"""

from __future__ import annotations

import torch
from torch import Tensor

from data.core.protocols import ImageSource
from seq2seq.modules.vision import ImageEncoder, ImageOptions

STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}


class ImageFeatures:
    """Mixin for a LightningModule with `image_encoder` (an ImageEncoder) and `image`, its
    ImageOptions (`cache_features`, `train_backbone`)."""

    image_encoder: ImageEncoder
    image: ImageOptions

    @property
    def caches_features(self) -> bool:
        """Whether batches may carry cached CNN features: only while the CNN cannot change."""
        return self.image.cache_features and self.image.train_backbone == "none"

    def prepare_images(self, stage: str, splits: dict[str, tuple[str, ...]] = STAGE_SPLITS) -> None:
        """Called from `setup`: the datamodule's images take the backbone's normalisation, and its
        splits of `stage` are served from the feature cache when the CNN is frozen."""
        dm = getattr(self.trainer, "datamodule", None)
        if not isinstance(dm, ImageSource):
            return
        dm.use_normalization(self.image_encoder.mean, self.image_encoder.std)
        if not self.caches_features:
            return
        fingerprint, wanted = self.image_encoder.fingerprint(), splits.get(stage, ())
        first = self.trainer.is_global_zero
        if first:
            dm.use_features(self.extract_features, fingerprint, wanted)
        self.trainer.strategy.barrier("seqcap_feature_cache")
        if not first:
            dm.use_features(self.extract_features, fingerprint, wanted)

    @torch.inference_mode()
    def extract_features(self, loader, split: str = "") -> Tensor:
        """The frozen CNN over a loader of image batches -> (N, C) or (N, HW, C) features on the CPU,
        run on the trainer's device (a GPU when it has one), with a progress bar."""
        from tqdm.auto import tqdm

        trainer = getattr(self, "_trainer", None)
        device = trainer.strategy.root_device if trainer is not None else self.device
        encoder = self.image_encoder
        home, was_training = next(encoder.parameters()).device, encoder.training
        encoder.to(device).eval()
        try:
            bar = tqdm(loader, desc=f"CNN features ({split})", unit="batch", disable=not self._show_bars())
            features = [encoder(images.to(device)).float().cpu() for images in bar]
        finally:
            encoder.to(home).train(was_training)
        return torch.cat(features)

    def _show_bars(self) -> bool:
        trainer = getattr(self, "_trainer", None)
        return trainer is None or (trainer.is_global_zero and trainer.progress_bar_callback is not None)

    def image_features(self, batch: dict) -> Tensor:
        """The CNN features of a batch: cached ones when the batch carries them, else the encoder's."""
        if "features" in batch:
            return batch["features"]
        return self.image_encoder(batch["images"])


def backbone_param_groups(
    module: torch.nn.Module, encoder: ImageEncoder, lr: float, backbone_lr: float, name: str
) -> list[dict]:
    """Adam's parameter groups of a module with a CNN: [the CNN's trainable parameters at
    `backbone_lr` (none while it is frozen), everything else, named `name`, at `lr`]."""
    backbone = list(encoder.backbone_parameters())
    ids = {id(p) for p in backbone}
    rest = [p for p in module.parameters() if p.requires_grad and id(p) not in ids]
    return [
        {"params": backbone, "lr": backbone_lr, "name": "backbone"},
        {"params": rest, "lr": lr, "name": name},
    ]
