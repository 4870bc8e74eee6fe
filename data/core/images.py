"""Image files and the default image transform.

:func:`load_rgb` opens and fully decodes an image as RGB; :func:`check_image` is the cheap check
(existence + ``PIL.Image.verify()``: headers and structure, no full decode) run over a dataset
before training. Both name the file when it is missing or unreadable (:class:`ImageFileError`).

:class:`ImageDataset` gives the transformed images of a list of files, in order (what a feature
extractor reads). :func:`default_transform` is Resize, ToTensor and Normalize with the ImageNet mean/std
(:data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`) unless a backbone gives its own; torchvision is
imported only when it is built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from data.core.parallel import DataError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageFileError",
    "load_rgb",
    "check_image",
    "default_transform",
    "ImageDataset",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageFileError(DataError):
    """An image file that is missing, unreadable or corrupt; the message names the file."""


def load_rgb(path: str | Path) -> Image.Image:
    """Open and fully decode an image as RGB; ImageFileError naming the file if that fails."""
    path = Path(path)
    if not path.exists():
        raise ImageFileError(f"image not found: {path}")
    try:  # a directory or a non-image fails here, with the file named
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise ImageFileError(f"cannot read image {path}: {err}") from None


def check_image(path: str | Path) -> str | None:
    """Cheap check (existence + ``PIL.Image.verify``): None when fine, else what is wrong."""
    path = Path(path)
    if not path.is_file():
        return f"image not found: {path}"
    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as err:  # PIL raises many kinds here (SyntaxError for some corrupt PNGs)
        return f"cannot read image {path}: {err}"
    return None


def default_transform(
    image_size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> Callable[[Image.Image], Tensor]:
    """Resize to (image_size, image_size), ToTensor, Normalize(mean, std) (torchvision, imported here);
    the captioning module passes its backbone's mean/std (`CaptionDataModule.use_normalization`)."""
    from torchvision import transforms as T

    return T.Compose([T.Resize((image_size, image_size)), T.ToTensor(), T.Normalize(tuple(mean), tuple(std))])


class ImageDataset(Dataset):
    """Transformed images only, in order: item i is ``transform(image i)`` (3, H, W)."""

    def __init__(self, paths: list[str], transform: Callable):
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Tensor:
        return self.transform(load_rgb(self.paths[i]))
