"""MultimodalDataModule: the Multi30k layout, the image of each pair, and every bad input named."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from data.core.images import ImageFileError
from data.core.parallel import DataError
from data.datamodules.multimodal import MultimodalDataModule
from seq2seq.modules.rnn import RecurrentOptions
from seq2seq.modules.vision import ImageOptions

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}


def write_set(root: Path, n: int = 6, empty_line: int | None = None) -> Path:
    """train/dev/test: "a [v] square" -> "ein {colour} quadrat", image i a square of that colour."""
    (root / "images").mkdir(parents=True)
    names = list(COLOURS)
    for split in ("train", "dev", "test"):
        en, de, images = [], [], []
        for i in range(n):
            colour = names[i % 3]
            name = f"{split}_{i}.png"
            Image.new("RGB", (32, 32), COLOURS[colour]).save(root / "images" / name)
            blank = split == "train" and i == empty_line
            en.append("" if blank else f"a [v] square {i}")
            de.append("" if blank else f"ein {colour} quadrat {i}")
            images.append(name)
        (root / f"{split}.en").write_text("\n".join(en) + "\n")
        (root / f"{split}.de").write_text("\n".join(de) + "\n")
        (root / f"{split}_images.txt").write_text("\n".join(images) + "\n")
    return root


def module(root: Path, **kw) -> MultimodalDataModule:
    args = dict(data_dir=str(root), image_dir=str(root / "images"), word_tokenizer="space", image_size=32)
    return MultimodalDataModule(**(args | kw))


def test_each_pair_gets_its_own_image_after_skipped_and_dropped_pairs(tmp_path):
    root = write_set(tmp_path / "d", n=6, empty_line=1)
    dm = module(root, batch_size=2)
    dm.setup("fit")
    texts = dm.datasets["train"].text
    assert len(texts) == 5 and texts.lines == [0, 2, 3, 4, 5]  # line 1 was empty
    for src, path in zip(texts.src, dm.image_paths("train")):
        i = int(src.split()[-1])
        assert Path(path).name == f"train_{i}.png"
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape == (2, 3, 32, 32)
    for src_text, image_path in zip(batch["src_text"], batch["image_path"]):
        assert Path(image_path).name == f"train_{src_text.split()[-1]}.png"


def test_features_replace_images_once_asked(tmp_path):
    root = write_set(tmp_path / "d")
    dm = module(root, batch_size=3)
    dm.setup("fit")
    calls = []

    def extract(loader, split):
        calls.append(split)
        return torch.cat([images.mean(dim=(2, 3))[:, None, :] for images in loader])  # (N, 1, 3)

    assert dm.use_features(extract, "test-encoder", ["train", "dev"]) == {"train": False, "dev": False}
    again = module(root, batch_size=3)
    again.setup("fit")
    assert again.use_features(extract, "test-encoder", ["train", "dev"]) == {"train": True, "dev": True}
    assert calls == ["train", "dev"]
    batch = next(iter(again.val_dataloader()))
    assert "images" not in batch and batch["features"].shape == (6, 1, 3)
    for f, path in zip(batch["features"], batch["image_path"]):  # the mean colour of its own image
        colour = ["red", "blue", "green"][int(Path(path).stem.split("_")[1]) % 3]
        red = f[0, 0] > f[0, 2]
        assert bool(red) == (colour == "red")


def test_shuffled_images_permute_dev_and_test_only(tmp_path):
    root = write_set(tmp_path / "d", n=9)
    plain, shuffled = module(root), module(root, shuffle_images=3)
    plain.setup("fit")
    shuffled.setup("fit")
    assert shuffled.image_paths("train") == plain.image_paths("train")
    assert shuffled.image_paths("test") != plain.image_paths("test")
    assert sorted(shuffled.image_paths("test")) == sorted(plain.image_paths("test"))


@pytest.mark.parametrize("change", [-1, 2])
def test_image_list_of_another_length_names_both_files_and_counts(tmp_path, change):
    root = write_set(tmp_path / "d", n=4)
    names = (root / "dev_images.txt").read_text().splitlines()
    names = names[:change] if change < 0 else names + ["x.png"] * change
    (root / "dev_images.txt").write_text("\n".join(names) + "\n")
    with pytest.raises(DataError) as err:
        module(root).setup("fit")
    message = str(err.value)
    assert "dev_images.txt" in message and "dev.en" in message
    assert f"{len(names)} lines" in message and "4 sentence pairs" in message


def test_missing_image_is_named_with_its_list_and_line(tmp_path):
    root = write_set(tmp_path / "d", n=4)
    (root / "images" / "dev_2.png").unlink()
    with pytest.raises(ImageFileError, match=r"dev_2\.png.*dev_images\.txt, line 3"):
        module(root).setup("fit")


def test_unreadable_image_is_named(tmp_path):
    root = write_set(tmp_path / "d", n=4)
    (root / "images" / "train_0.png").write_bytes(b"not a png")
    with pytest.raises(ImageFileError, match=r"train_0\.png.*train_images\.txt, line 1"):
        module(root).setup("fit")


def test_missing_image_list_is_named(tmp_path):
    root = write_set(tmp_path / "d", n=4)
    (root / "test_images.txt").unlink()
    with pytest.raises(DataError, match="test_images.txt"):
        module(root).build()


def test_vocab_state_records_the_image_size(tmp_path):
    dm = module(write_set(tmp_path / "d", n=4), image_size=48)
    assert dm.vocab_state()["image_size"] == 48


def test_multimodal_module_without_images_says_which_datamodule(tmp_path):
    from seq2seq.translation.module import TranslationModule

    model = TranslationModule(
        10,
        10,
        rnn=RecurrentOptions(dropout=0.2, embed_dim=4, hidden_size=4),
        image=ImageOptions(pretrained=False),
        fusion="decinit",
    )
    batch = {"src": torch.ones(1, 2, dtype=torch.long), "src_lengths": torch.tensor([2])}
    with pytest.raises(ValueError, match="MultimodalDataModule"):
        model.image_of(batch)


def test_a_text_only_model_on_multimodal_data_reads_no_image(tmp_path, monkeypatch):
    import pytorch_lightning as pl

    from seq2seq.translation.module import TranslationModule

    root = write_set(tmp_path / "d")
    dm = module(root, batch_size=3)
    dm.setup("fit")
    dm.use_images(False)
    batch = next(iter(dm.train_dataloader()))
    assert "images" not in batch and "features" not in batch and len(batch["image_path"]) == 3
    dm.use_images(True)  # and back, for a multimodal model on the same datamodule
    assert next(iter(dm.train_dataloader()))["images"].shape == (3, 3, 32, 32)

    def no_reading(path):
        raise AssertionError(f"{path} was read for a text-only model")

    monkeypatch.setattr("data.datamodules.multimodal.load_rgb", no_reading)
    dm = module(root, batch_size=3)
    dm.setup("fit")
    model = TranslationModule(
        dm.src_vocab_size, dm.tgt_vocab_size, rnn=RecurrentOptions(dropout=0.2, embed_dim=4, hidden_size=4)
    )
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    assert not dm.read_images and trainer.global_step == 2
