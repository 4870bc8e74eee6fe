"""Pretrained CNN image encoders: an image batch -> one global vector or a spatial grid of vectors,
optionally projected into the decoder's embedding space E (the "CNN top layer into E's space" of
seed 002 §8.5.3).

    images: (B, 3, H, W) float, normalised with the backbone's mean/std (see `ImageEncoder.transform`)
    output="global" -> (B, C)       (average-pooled last conv feature map)
                       (B, C*k*k)   with global_pool=k > 1: average-pooled to a k x k grid, flattened
                                    (channel-major), so the one vector keeps a coarse layout
    output="grid"   -> (B, h*w, C)  (last conv feature map, row-major over h, w)
    with embed_dim  -> the last dimension becomes embed_dim (a trainable nn.Linear)
    feature_block=N -> the same from the output of the trunk's block N instead of the last layer
                       (EfficientNet: stage ``blocks[N]``, 0-6, without the 1280-channel head conv;
                       torchvision: child N of the trunk, e.g. of ``features``); earlier blocks keep
                       more of the colour and position a scene description needs, the last layer
                       more of the object class

Backbones: ``efficientnet_lite0`` (timm; the offline default, its ImageNet weights from a pip package)
or any torchvision classification CNN (``resnet18/34/50/101``, ``mobilenet_v3_large``, ...); where
their weights come from and how they load: seq2seq/modules/pretrained.py. Shared by captioning
(captioning/captioner/module.py) and multimodal translation (seq2seq/translation/module.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn

from seq2seq.modules.pretrained import (
    TIMM_BACKBONES,
    build_efficientnet_lite0,
    efficientnet_lite0_weights_id,
    input_normalization,
    state_digest,
    torchvision_model,
)

if TYPE_CHECKING:  # imported by `transform`, the one place that uses it (see there)
    from torchvision import transforms as T


def _conv_trunk(name: str, model: nn.Module) -> nn.Sequential:
    """A torchvision classifier without its pooling and classifier: images -> (B, C, h, w)."""
    features = getattr(model, "features", None)
    if isinstance(features, nn.Module):  # mobilenet, efficientnet, convnext, densenet, vgg, ...
        return features if isinstance(features, nn.Sequential) else nn.Sequential(features)
    children = dict(model.named_children())
    if "avgpool" in children and "fc" in children:  # resnet, resnext, wide_resnet, regnet, ...
        return nn.Sequential(*(m for k, m in children.items() if k not in ("avgpool", "fc")))
    raise ValueError(f"backbone {name!r} is not supported: no convolutional trunk found")


def _check_block(name: str, block: int, n: int) -> None:
    if block >= n:
        raise ValueError(f"feature_block={block} is out of range: backbone {name!r} has blocks 0-{n - 1}")


@dataclass(frozen=True)
class ImageOptions:
    """The image side's options, as one object (YAML `image:` under a model's init_args): which CNN
    (`backbone`, with its pretrained weights or the user's `weights_path` file), what of it trains
    (`train_backbone`: none, top, all), the block its features come from (`feature_block`, None:
    the last layer) and whether a frozen CNN's features are computed once and cached
    (`cache_features`). The image size is the datamodule's (`data.init_args.image_size`)."""

    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    weights_path: str | None = None
    train_backbone: Literal["none", "top", "all"] = "none"
    feature_block: int | None = None
    cache_features: bool = True

    def encoder(
        self, output: Literal["global", "grid"], embed_dim: int | None = None, global_pool: int = 1
    ) -> ImageEncoder:
        """The ImageEncoder these options describe (its weights loaded as they say)."""
        return ImageEncoder(
            self.backbone, self.pretrained, self.train_backbone, output, embed_dim=embed_dim,
            weights_path=self.weights_path, global_pool=global_pool, feature_block=self.feature_block,
        )  # fmt: skip


class ImageEncoder(nn.Module):
    """Pretrained CNN -> global (B, C) or grid (B, h*w, C) features, optionally projected to embed_dim.

    train_backbone: "none" freezes the CNN (its BatchNorm layers stay in eval mode even in train mode);
    "top" trains only the last block (efficientnet: last block + head conv; resnet: layer4; with
    feature_block: that block), the rest frozen and in eval mode; "all" trains everything. The
    projection always trains.
    """

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        pretrained: bool = True,
        train_backbone: Literal["none", "top", "all"] = "none",
        output: Literal["global", "grid"] = "global",
        embed_dim: int | None = None,
        weights_path: str | None = None,
        global_pool: int = 1,
        feature_block: int | None = None,
    ) -> None:
        super().__init__()
        if feature_block is not None and (
            isinstance(feature_block, bool) or not isinstance(feature_block, int) or feature_block < 0
        ):
            raise ValueError(f"feature_block must be an int >= 0 or None, got {feature_block!r}")
        self.feature_block = feature_block
        if isinstance(global_pool, bool) or not isinstance(global_pool, int) or global_pool < 1:
            raise ValueError(f"global_pool must be an int >= 1, got {global_pool!r}")
        if global_pool > 1 and output != "global":
            raise ValueError("global_pool applies to output='global' only")
        self.global_pool = global_pool
        if train_backbone not in ("none", "top", "all"):
            raise ValueError(f"train_backbone must be 'none', 'top' or 'all', not {train_backbone!r}")
        if output not in ("global", "grid"):
            raise ValueError(f"output must be 'global' or 'grid', not {output!r}")
        self.backbone_name = backbone
        self.train_backbone = train_backbone
        self.output = output
        self._is_timm = backbone in TIMM_BACKBONES

        if self._is_timm:
            import timm

            model = build_efficientnet_lite0(pretrained, weights_path)
            model.reset_classifier(0)  # the classifier is not part of the encoder
            self.cnn = model
            cfg = timm.data.resolve_data_config({}, model=model)
            self._input_size = int(cfg["input_size"][-1])
            self._crop_pct = float(cfg.get("crop_pct", 0.875))
            self._interpolation = str(cfg.get("interpolation", "bicubic"))
            self._channels = int(model.num_features)
            top: list[nn.Module] = [model.blocks[-1], model.conv_head, model.bn2]
            if feature_block is not None:  # forward_features stops after blocks[feature_block]
                _check_block(backbone, feature_block, len(model.blocks))
                model.blocks = model.blocks[: feature_block + 1]
                model.conv_head, model.bn2 = nn.Identity(), nn.Identity()
                top = [model.blocks[-1]]
                self._channels = self._probe_channels()
            self.weights_id = efficientnet_lite0_weights_id(pretrained, weights_path)
        else:
            model, self.weights_id = torchvision_model(backbone, pretrained, weights_path)
            self.cnn = _conv_trunk(backbone, model)
            if feature_block is not None:
                _check_block(backbone, feature_block, len(self.cnn))
                self.cnn = self.cnn[: feature_block + 1]
            self._input_size, self._crop_pct, self._interpolation = 224, 224 / 256, "bilinear"
            self._channels = self._probe_channels()
            top = [[m for m in self.cnn.children() if any(True for _ in m.parameters())][-1]]
        self._top_modules = top  # a plain list: no second registration in the state dict
        self._mean, self._std = input_normalization(backbone, pretrained, weights_path)

        for p in self.cnn.parameters():
            p.requires_grad_(train_backbone == "all")
        if train_backbone == "top":
            for m in top:
                for p in m.parameters():
                    p.requires_grad_(True)

        self.proj = nn.Linear(self.feature_dim, embed_dim) if embed_dim is not None else None
        self.train(self.training)

    def _probe_channels(self) -> int:
        was_training = self.cnn.training
        self.cnn.eval()
        with torch.no_grad():
            fmap = self.feature_map(torch.zeros(1, 3, 64, 64))
        self.cnn.train(was_training)
        if fmap.dim() != 4:
            raise ValueError(f"backbone {self.backbone_name!r} does not give a (B, C, h, w) feature map")
        return int(fmap.shape[1])

    # ------------------------------------------------------------------ properties
    @property
    def out_channels(self) -> int:
        """C: channels of the CNN's last feature map (before any projection)."""
        return self._channels

    @property
    def feature_dim(self) -> int:
        """Size of each feature vector before any projection: C, or C*k*k with global_pool=k."""
        return self._channels * self.global_pool**2 if self.output == "global" else self._channels

    @property
    def out_dim(self) -> int:
        """Size of each output vector: embed_dim when projecting, else feature_dim."""
        return self.proj.out_features if self.proj is not None else self.feature_dim

    @property
    def input_size(self) -> int:
        return self._input_size

    @property
    def mean(self) -> tuple[float, float, float]:
        """The per-channel mean the backbone's inputs are normalised with (see `transform`)."""
        return self._mean

    @property
    def std(self) -> tuple[float, float, float]:
        return self._std

    def fingerprint(self) -> str:
        """What the CNN's features depend on: backbone, output kind and a digest of every CNN tensor
        (weights and BatchNorm statistics); the key of the feature cache (data/core/features.py)."""
        pool = f"-pool{self.global_pool}" if self.global_pool > 1 else ""
        block = f"-block{self.feature_block}" if self.feature_block is not None else ""
        return f"{self.backbone_name}{block}:{self.output}{pool}:{state_digest(self.cnn.state_dict())[:16]}"

    # ------------------------------------------------------------------ training
    def train(self, mode: bool = True) -> ImageEncoder:
        super().train(mode)
        if mode and self.train_backbone != "all":
            self.cnn.eval()  # frozen parts keep their BatchNorm statistics
            if self.train_backbone == "top":
                for m in self._top_modules:
                    m.train()
        return self

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """The CNN parameters that train (none for train_backbone='none')."""
        return (p for p in self.cnn.parameters() if p.requires_grad)

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """The projection's parameters (none without embed_dim)."""
        return iter(self.proj.parameters()) if self.proj is not None else iter(())

    # ------------------------------------------------------------------ preprocessing
    def transform(self, train: bool = False, crop: bool = True) -> T.Compose:
        """PIL image -> normalised (3, S, S) tensor as the backbone expects (S = input_size).

        crop=True (ImageNet evaluation style): resize the shorter side to S / crop_pct, center-crop S.
        crop=False: resize the whole image to S x S (keeps the borders a caption may mention).
        train=True adds light augmentation (random resized crop over most of the image, small colour
        jitter); no horizontal flip, since captions may say "left" and "right".
        """
        # torchvision (about 160 MB) only here: text-only models import this module and never call this
        from torchvision import transforms as T

        size = self._input_size
        interp = T.InterpolationMode(self._interpolation)
        norm = [T.ToTensor(), T.Normalize(self._mean, self._std)]
        if train:
            return T.Compose(
                [
                    T.RandomResizedCrop(size, scale=(0.7, 1.0), ratio=(0.85, 1.18), interpolation=interp),
                    T.ColorJitter(0.1, 0.1, 0.1),
                    *norm,
                ]
            )
        if not crop:
            return T.Compose([T.Resize((size, size), interpolation=interp), *norm])
        resize = T.Resize(int(round(size / self._crop_pct)), interpolation=interp)
        return T.Compose([resize, T.CenterCrop(size), *norm])

    # ------------------------------------------------------------------ forward
    def feature_map(self, images: Tensor) -> Tensor:
        """images: (B, 3, H, W) -> (B, C, h, w)."""
        return self.cnn.forward_features(images) if self._is_timm else self.cnn(images)

    def forward(self, images: Tensor) -> Tensor:
        """images: (B, 3, H, W) normalised -> (B, C) global or (B, h*w, C) grid (C = out_dim)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        fmap = self.feature_map(images)
        if self.output == "grid":
            feats = fmap.flatten(2).transpose(1, 2)
        elif self.global_pool == 1:
            feats = fmap.mean(dim=(2, 3))
        else:
            feats = nn.functional.adaptive_avg_pool2d(fmap, self.global_pool).flatten(1)
        return self.proj(feats) if self.proj is not None else feats
