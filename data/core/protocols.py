"""What a LightningModule may ask of a data module, as typing.Protocols both sides import.

A module checks `isinstance(datamodule, ImageSource)` (runtime_checkable: the methods are there)
before it calls them, so any data module that has them works, and one that has not is simply not
asked: a text data module under a text model, a caption data module without references under a
cross-entropy captioner.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from data.core.features import Extractor


@runtime_checkable
class VocabularySource(Protocol):
    """Everything inference needs besides the weights (vocabularies, tokenizers, image size), as
    plain types: the module checks it against its sizes and keeps it in the checkpoint."""

    def vocab_state(self) -> dict: ...


@runtime_checkable
class ImageSource(Protocol):
    """Images normalised as the model's CNN expects, or that CNN's cached features (ImageData)."""

    def use_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None: ...

    def use_features(self, extract: Extractor, encoder: str, splits: Iterable[str]) -> dict[str, bool]: ...


@runtime_checkable
class OptionalImages(Protocol):
    """Images a text-only model need not read (multimodal data under fusion none)."""

    def use_images(self, read: bool) -> None: ...


@runtime_checkable
class CaptionReferences(Protocol):
    """Training batches of whole images with all their references, for self-critical training."""

    def use_image_batches(self, on: bool = True) -> None: ...

    def references(self, split: str) -> list[list[list[str]]]: ...

    def feature_cache_dir(self) -> Path: ...
