"""The feature cache (data/core/features.py) and CaptionDataModule.use_features: hit, miss, invalidation
(encoder, transform, image file), random transforms left uncached, a corrupt cache file rebuilt, and
batches that carry the cached features in dataset order."""

from __future__ import annotations

import os

import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from data.builders.shapes import build_shapes_dataset
from data.core.features import FeatureCache, cache_key, is_deterministic
from data.core.images import load_rgb
from data.datamodules.captions import CaptionDataModule


@pytest.fixture(scope="module")
def shapes_json(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    build_shapes_dataset(out, n_train=6, n_val=2, n_test=2, size=64, progress=False)
    return out / "dataset_shapes.json"


class Extractor:
    """A stand-in CNN: the mean colour of each image, (N, 3); counts the images it sees."""

    def __init__(self):
        self.seen = 0

    def __call__(self, loader, split):
        rows = [images.mean(dim=(2, 3)) for images in loader]
        self.seen += sum(r.shape[0] for r in rows)
        return torch.cat(rows)


def datamodule(shapes_json, cache_dir, **kw):
    kw = {"image_size": 16, **kw}
    return CaptionDataModule(
        str(shapes_json), min_freq=1, batch_size=4, eval_batch_size=3, cache_dir=str(cache_dir), **kw
    )


def test_hit_miss_and_the_features_in_batches(shapes_json, tmp_path):
    extract = Extractor()
    dm = datamodule(shapes_json, tmp_path)
    assert dm.use_features(extract, "cnn-a", ["train", "val"]) == {"train": False, "val": False}
    assert extract.seen == 8
    assert len(list(tmp_path.glob("*.pt"))) == 2

    again = datamodule(shapes_json, tmp_path)
    assert again.use_features(extract, "cnn-a", ["train", "val"]) == {"train": True, "val": True}
    assert extract.seen == 8  # nothing recomputed

    # the cached rows are the images' features, in dataset order, as the batches carry them
    plain = datamodule(shapes_json, tmp_path)
    expected = torch.stack([plain.dataset("val")[i]["image"].mean(dim=(1, 2)) for i in range(2)])
    batch = next(iter(again.val_dataloader()))
    assert "images" not in batch and batch["features"].dtype == torch.float32
    torch.testing.assert_close(batch["features"], expected, atol=2e-3, rtol=2e-3)  # stored as float16
    # shuffled training pairs: each row is the features of its own pair's image, whatever the order
    train = next(iter(again.train_dataloader()))
    assert train["features"].shape == (4, 3) and train["captions_in"].shape[0] == 4
    images = plain.dataset("train").images
    by_path = {im.path: plain.dataset("train").transform(load_rgb(im.path)).mean(dim=(1, 2)) for im in images}
    assert len(set(train["paths"])) > 1  # rows of more than one image, so a mix-up shows
    for row, path in zip(train["features"], train["paths"]):
        torch.testing.assert_close(row, by_path[path], atol=2e-3, rtol=2e-3)


def test_changing_encoder_transform_or_image_rebuilds(shapes_json, tmp_path):
    extract = Extractor()
    datamodule(shapes_json, tmp_path).use_features(extract, "cnn-a", ["val"])
    assert extract.seen == 2
    assert datamodule(shapes_json, tmp_path).use_features(extract, "cnn-b", ["val"]) == {"val": False}
    dm = datamodule(shapes_json, tmp_path, image_size=20)
    assert dm.use_features(extract, "cnn-a", ["val"]) == {"val": False}
    assert extract.seen == 6

    # touching an image (new mtime) invalidates the split it is in
    path = datamodule(shapes_json, tmp_path).dataset("val").images[0].path
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert datamodule(shapes_json, tmp_path).use_features(extract, "cnn-a", ["val"]) == {"val": False}
    assert datamodule(shapes_json, tmp_path).use_features(extract, "cnn-a", ["val"]) == {"val": True}


def test_random_transform_is_not_cached(shapes_json, tmp_path):
    augment = T.Compose([T.RandomResizedCrop(16, scale=(0.5, 1.0)), T.ToTensor()])
    fixed = T.Compose([T.Resize((16, 16)), T.ToTensor()])
    dm = datamodule(shapes_json, tmp_path, transform=augment, eval_transform=fixed)
    with pytest.warns(UserWarning, match="train transform is random"):
        hits = dm.use_features(Extractor(), "cnn-a", ["train", "val"])
    assert hits == {"val": False}
    assert "image" in dm.dataset("train")[0] and "features" in dm.dataset("val")[0]


def test_is_deterministic():
    image = Image.new("RGB", (32, 32), (200, 10, 10))
    assert is_deterministic(T.Compose([T.Resize((8, 8)), T.ToTensor()]), image)
    assert not is_deterministic(T.Compose([T.ToTensor(), T.RandomErasing(p=1.0)]), image)


def test_corrupt_or_foreign_cache_file_is_rebuilt(tmp_path):
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    cache = FeatureCache(tmp_path / "cache")
    key = cache_key([str(image)], "cnn", "t")
    features, hit = cache.get("val", key, lambda: torch.ones(1, 4))
    assert not hit and features.dtype == torch.float16 and features.tolist() == [[1.0] * 4]

    cache.path("val", key).write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="cannot read"):
        features, hit = cache.get("val", key, lambda: torch.full((1, 4), 2.0))
    assert not hit and features.tolist() == [[2.0] * 4]

    other = cache_key([str(image)], "another-cnn", "t")
    torch.save({"key": other, "paths": [], "features": torch.zeros(1, 4)}, cache.path("val", key))
    with pytest.warns(UserWarning, match="another key"):
        features, hit = cache.get("val", key, lambda: torch.full((1, 4), 3.0))
    assert not hit and features.tolist() == [[3.0] * 4]
    assert cache.get("val", key, lambda: torch.zeros(1, 4))[1] is True
    assert not list((tmp_path / "cache").glob("*.tmp*"))  # no leftovers of the atomic write


def test_normalization_shapes_the_default_transform_and_the_cache_key(shapes_json, tmp_path):
    extract = Extractor()
    imagenet = datamodule(shapes_json, tmp_path)
    imagenet.use_features(extract, "cnn-a", ["val"])
    half = datamodule(shapes_json, tmp_path)
    half.use_normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert half.use_features(extract, "cnn-a", ["val"]) == {"val": False}  # other inputs, other features
    path = half.dataset("val").images[0].path
    pixels = T.ToTensor()(Image.open(path).convert("RGB").resize((16, 16), Image.BILINEAR))
    plain = datamodule(shapes_json, tmp_path)
    plain.use_normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    torch.testing.assert_close(plain.dataset("val")[0]["image"], (pixels - 0.5) / 0.25, atol=0.05, rtol=0)
    mine = T.Compose([T.Resize((16, 16)), T.ToTensor()])
    given = datamodule(shapes_json, tmp_path, transform=mine)
    given.use_normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))  # a transform of one's own stays as it is
    torch.testing.assert_close(given.dataset("val")[0]["image"], mine(Image.open(path).convert("RGB")))
