"""Caption readers, CaptionDataModule and collate_captions on tiny files written into tmp_path."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from data.builders.shapes import build_shapes_dataset
from data.core.caption_sources import detect_format, read_coco, read_karpathy, read_tsv, tokenize_caption
from data.core.images import ImageFileError
from data.core.parallel import DataError
from data.core.vocab import BOS, EOS, PAD, SPECIALS, UNK
from data.datamodules.caption_datasets import collate_captions
from data.datamodules.captions import CaptionDataModule

SIDE = 8
TRANSFORM = T.Compose([T.Resize((SIDE, SIDE)), T.ToTensor()])


def write_image(path: Path, colour: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (10, 7)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def sentence(raw: str) -> dict:
    return {"tokens": raw.lower().rstrip(".").split(), "raw": raw}


KARPATHY = {
    "images": [
        {
            "filename": "a.png",
            "filepath": "imgs",
            "split": "train",
            "imgid": 0,
            "sentences": [sentence("a red circle"), sentence("a red circle above a blue square")],
        },
        {
            "filename": "b.png",
            "filepath": "imgs",
            "split": "restval",
            "imgid": 1,
            "sentences": [sentence("a blue circle"), sentence("the red square")],
        },
        {
            "filename": "c.png",
            "filepath": "imgs",
            "split": "val",
            "imgid": 2,
            "sentences": [
                sentence("a green star"),
                sentence("a green star on the left"),
                sentence("A Green Star."),
            ],
        },
    ],
    "dataset": "tiny",
}


@pytest.fixture
def karpathy(tmp_path) -> Path:
    path = tmp_path / "dataset_tiny.json"
    path.write_text(json.dumps(KARPATHY), encoding="utf-8")
    for name, colour in (("a", (200, 30, 30)), ("b", (30, 30, 200)), ("c", (30, 200, 30))):
        write_image(tmp_path / "imgs" / f"{name}.png", colour)
    return path


def module(source: Path, **kwargs) -> CaptionDataModule:
    kwargs.setdefault("transform", TRANSFORM)
    return CaptionDataModule(str(source), **kwargs)


# ---------------------------------------------------------------------------------------------
# readers
# ---------------------------------------------------------------------------------------------


def test_tokenize_caption_lowercases_and_drops_punctuation():
    assert tokenize_caption("A man's dog, jumping!  Over 2 logs.") == [
        "a", "man's", "dog", "jumping", "over", "2", "logs",
    ]  # fmt: skip
    assert tokenize_caption(" ... ") == []


def test_read_karpathy_splits_paths_and_restval(karpathy, tmp_path):
    images = read_karpathy(karpathy)
    assert [im.split for im in images] == ["train", "train", "val"]  # restval counts as train
    assert [im.path for im in images] == [str(tmp_path / "imgs" / f"{n}.png") for n in "abc"]
    assert [im.image_id for im in images] == [0, 1, 2]
    assert images[0].captions == [
        ["a", "red", "circle"],
        ["a", "red", "circle", "above", "a", "blue", "square"],
    ]
    assert images[2].raw[2] == "A Green Star."
    other = read_karpathy(karpathy, image_root="/data/root")
    assert other[1].path == str(Path("/data/root/imgs/b.png"))


def test_read_karpathy_without_tokens_tokenizes_raw(tmp_path):
    path = tmp_path / "k.json"
    path.write_text(
        json.dumps({"images": [{"filename": "x.jpg", "split": "test", "sentences": [{"raw": "A Cat."}]}]})
    )
    (image,) = read_karpathy(path)
    assert (
        image.captions == [["a", "cat"]] and image.path == str(tmp_path / "x.jpg") and image.split == "test"
    )


@pytest.mark.parametrize(
    "content, expected",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"dataset": "x"}), "no key 'images'"),
        (json.dumps({"images": [{"split": "train", "sentences": []}]}), "images[0] has no key 'filename'"),
        (json.dumps({"images": [{"filename": "a", "sentences": []}]}), "images[0] has no key 'split'"),
        (json.dumps({"images": [{"filename": "a", "split": "dev", "sentences": []}]}), "split 'dev'"),
        (
            json.dumps({"images": [{"filename": "a", "split": "train", "sentences": [{"x": 1}]}]}),
            "images[0]['sentences'][0] has neither 'tokens' nor 'raw'",
        ),
    ],
)
def test_read_karpathy_errors_name_file_and_what_is_missing(tmp_path, content, expected):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DataError) as err:
        read_karpathy(path)
    assert str(path) in str(err.value) and expected in str(err.value)


COCO = {
    "images": [
        {"id": 11, "file_name": "x.jpg"},
        {"id": 12, "file_name": "y.jpg"},
        {"id": 13, "file_name": "no_captions.jpg"},
    ],
    "annotations": [
        {"id": 1, "image_id": 11, "caption": "A dog runs."},
        {"id": 2, "image_id": 12, "caption": "Two cats, sleeping!"},
        {"id": 3, "image_id": 11, "caption": "The dog's BALL "},
    ],
}


def test_read_coco_groups_captions_per_image(tmp_path):
    path = tmp_path / "captions_val2014.json"
    path.write_text(json.dumps(COCO))
    images = read_coco(path, tmp_path / "val2014", "val")
    assert [im.image_id for im in images] == [11, 12]  # the image without captions is left out
    assert [im.path for im in images] == [
        str(tmp_path / "val2014" / "x.jpg"),
        str(tmp_path / "val2014" / "y.jpg"),
    ]
    assert images[0].captions == [["a", "dog", "runs"], ["the", "dog's", "ball"]]
    assert images[0].raw == ["A dog runs.", "The dog's BALL"]
    assert images[1].captions == [["two", "cats", "sleeping"]]
    assert {im.split for im in images} == {"val"}
    assert detect_format(path) == "coco"


def test_read_coco_errors(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"images": COCO["images"], "annotations": [{"image_id": 99, "caption": "x"}]}))
    with pytest.raises(DataError, match=r"c\.json: annotations\[0\] names image_id 99"):
        read_coco(path, None, "train")
    path.write_text(json.dumps({"images": COCO["images"], "annotations": [{"image_id": 11}]}))
    with pytest.raises(DataError, match=r"c\.json: annotations\[0\] has no key 'caption'"):
        read_coco(path, None, "train")
    path.write_text(json.dumps({"images": [{"file_name": "x.jpg"}], "annotations": []}))
    with pytest.raises(DataError, match=r"c\.json: images\[0\] has no key 'id'"):
        read_coco(path, None, "train")


def test_read_tsv_groups_lines_and_names_a_malformed_line(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("p1.png\tA cat.\np1.png\tThe cat sits\n\nsub/p2.png\tdog\n", encoding="utf-8")
    images = read_tsv(path, None, "train")
    assert [im.path for im in images] == [str(tmp_path / "p1.png"), str(tmp_path / "sub" / "p2.png")]
    assert images[0].captions == [["a", "cat"], ["the", "cat", "sits"]]
    assert images[1].captions == [["dog"]] and images[1].image_id == "sub/p2.png"
    assert detect_format(path) == "tsv"
    bad = tmp_path / "bad.tsv"
    bad.write_text("p1.png\tA cat.\np1.png\tThe cat sits\np2.png has no tab\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.tsv, line 3: expected 'image_path<TAB>caption'"):
        read_tsv(bad, None, "train")


def test_detect_format(karpathy, tmp_path):
    assert detect_format(karpathy) == "karpathy"
    with pytest.raises(DataError, match=r"x\.csv: unknown caption file type"):
        detect_format(tmp_path / "x.csv")


# ---------------------------------------------------------------------------------------------
# datamodule
# ---------------------------------------------------------------------------------------------


def test_vocabulary_from_train_only_with_min_freq(karpathy):
    dm = module(karpathy, min_freq=2)
    # train (a + restval b): a 4, circle 3, red 3, blue 2, square 2, above 1, the 1; val words never count
    assert dm.vocab_state() == {
        "vocab": SPECIALS + ["a", "circle", "red", "blue", "square"],
        "tokenizer": "caption-regex-lower",
        "max_caption_len": 30,
        "image_size": 224,
    }
    assert dm.vocab_size == 9
    assert module(karpathy, min_freq=1).vocab_size == 4 + 7


def test_truncation_counted_and_reported(karpathy, messages):
    dm = module(karpathy, min_freq=1, max_caption_len=5)
    dm.setup("fit")
    assert dm.truncated == {"train": 1, "val": 1}
    assert any("1 training captions longer than max_caption_len=5 truncated" in m for m in messages)
    long = dm.dataset("train")[1]["caption"]
    assert dm.vocab.decode(long) == ["a", "red", "circle", "above", "a"]
    (val,) = dm.dataset("val")
    assert val["references"][1] == ["a", "green", "star", "on", "the", "left"]  # references stay whole


def test_train_is_pairs_and_eval_carries_all_references(karpathy):
    dm = module(karpathy, min_freq=1)
    dm.setup("fit")
    train, val = dm.dataset("train"), dm.dataset("val")
    assert len(train) == 4 and len(val) == 1
    assert [dm.vocab.decode(train[i]["caption"]) for i in range(4)] == [
        ["a", "red", "circle"],
        ["a", "red", "circle", "above", "a", "blue", "square"],
        ["a", "blue", "circle"],
        ["the", "red", "square"],
    ]
    assert [train[i]["image_id"] for i in range(4)] == [0, 0, 1, 1]
    item = val[0]
    assert item["references"] == [
        ["a", "green", "star"],
        ["a", "green", "star", "on", "the", "left"],
        ["a", "green", "star"],
    ]
    assert item["caption"] == [dm.vocab.stoi["a"], UNK, UNK]  # val words not in the train vocabulary
    assert item["image"].shape == (3, SIDE, SIDE)
    assert torch.allclose(item["image"][:, 0, 0], torch.tensor([30, 200, 30]) / 255)

    batch = next(iter(dm.val_dataloader()))
    assert batch["references"] == [item["references"]]
    assert batch["image_ids"] == [2] and batch["paths"] == [item["path"]]
    assert batch["images"].shape == (1, 3, SIDE, SIDE)


def test_collate_exact_tensors():
    image = torch.zeros(3, 2, 2)
    items = [
        {"image": image, "caption": [4, 5], "image_id": 7, "path": "p7", "references": [["x", "y"]]},
        {"image": image + 1, "caption": [6], "image_id": 8, "path": "p8", "references": [["z"], ["z", "z"]]},
    ]
    batch = collate_captions(items)
    assert batch["captions_in"].tolist() == [[BOS, 4, 5], [BOS, 6, PAD]]
    assert batch["captions_out"].tolist() == [[4, 5, EOS], [6, EOS, PAD]]
    assert batch["lengths"].tolist() == [3, 2]
    assert batch["images"].shape == (2, 3, 2, 2) and batch["images"][1].eq(1).all()
    assert batch["image_ids"] == [7, 8] and batch["paths"] == ["p7", "p8"]
    assert batch["references"] == [[["x", "y"]], [["z"], ["z", "z"]]]
    assert "references" not in collate_captions([{k: v for k, v in items[0].items() if k != "references"}])


def test_train_loader_shuffles_with_seed(karpathy):
    """Every epoch is a permutation of the pairs; the seed fixes it, other seeds and later epochs
    give other orders (4 pairs: a loader that does not shuffle gives the dataset order every time);
    the epoch Lightning sets alone decides it (data/core/epoch_shuffle.py: exact resume)."""

    def pairs(batch) -> list[tuple]:
        return [(i, tuple(row)) for i, row in zip(batch["image_ids"], batch["captions_out"].tolist())]

    def epochs(seed: int, n: int = 2) -> list[list[tuple]]:
        dm = module(karpathy, min_freq=1, batch_size=4, seed=seed)
        dm.setup("fit")
        loader = dm.train_dataloader()
        orders = []
        for epoch in range(n):
            loader.sampler.set_epoch(epoch)  # as Lightning does at each epoch start
            orders.append(pairs(next(iter(loader))))
        return orders

    dm = module(karpathy, min_freq=1)
    dm.setup("fit")
    in_order = pairs(collate_captions([dm.dataset("train")[n] for n in range(4)]))
    orders = {seed: epochs(seed) for seed in range(4)}
    assert epochs(0) == orders[0]  # the seed fixes the order of every epoch
    for seed_orders in orders.values():
        assert all(sorted(order) == sorted(in_order) for order in seed_orders)  # each pair once
    first_epochs = [seed_orders[0] for seed_orders in orders.values()]
    assert any(order != in_order for order in first_epochs)
    assert len({tuple(order) for order in first_epochs}) > 1  # the seed matters
    assert any(seed_orders[1] != seed_orders[0] for seed_orders in orders.values())  # reshuffled per epoch


def test_bad_image_error_names_the_file(karpathy, tmp_path):
    (tmp_path / "imgs" / "b.png").unlink()
    with pytest.raises(ImageFileError) as err:
        module(karpathy).setup("fit")
    assert str(tmp_path / "imgs" / "b.png") in str(err.value)
    (tmp_path / "imgs" / "c.png").write_bytes(b"not a png at all")
    with pytest.raises(ImageFileError, match=r"cannot read image .*c\.png"):
        module(karpathy).setup("validate")


def test_skip_bad_images_drops_and_counts(karpathy, tmp_path):
    (tmp_path / "imgs" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    dm = module(karpathy, min_freq=1, skip_bad_images=True)
    with pytest.warns(UserWarning, match=r"train: skipped 1 bad images: cannot read image .*b\.png"):
        dm.setup("fit")
    assert dm.skipped_images == {"train": 1, "val": 0}
    assert len(dm.dataset("train")) == 2  # a.png's two captions
    assert dm.vocab_size == 4 + 7  # the vocabulary was built before the images were checked


def test_image_failing_after_setup_names_the_file(karpathy, tmp_path):
    dm = module(karpathy)
    dm.setup("fit")
    train = dm.dataset("train")
    (tmp_path / "imgs" / "a.png").unlink()
    with pytest.raises(ImageFileError, match=r"image not found: .*a\.png"):
        train[0]


def test_tsv_and_coco_sources_with_extra_splits(tmp_path):
    write_image(tmp_path / "p1.png")
    write_image(tmp_path / "p2.png")
    (tmp_path / "train.tsv").write_text("p1.png\tA cat.\np1.png\tThe cat\np2.png\ta dog\n")
    (tmp_path / "val.json").write_text(
        json.dumps(
            {
                "images": [{"id": 5, "file_name": "p2.png"}],
                "annotations": [{"image_id": 5, "caption": "Dog!"}],
            }
        )
    )
    dm = module(tmp_path / "train.tsv", val_source=str(tmp_path / "val.json"), min_freq=2)
    dm.setup("fit")
    assert dm.vocab.to_list() == SPECIALS + ["a", "cat"]  # a 2, cat 2; the, dog 1
    assert len(dm.dataset("train")) == 3 and dm.dataset("val")[0]["references"] == [["dog"]]
    with pytest.raises(DataError, match="no test split"):
        dm.setup("test")


def test_data_does_not_import_captioning_or_seq2seq():
    """Every module of the data package, not only the ones data.datamodules.captions happens to import."""
    code = (
        "import importlib, pkgutil, sys, data; "
        "names = [m.name for m in pkgutil.walk_packages(data.__path__, 'data.')]; "
        "assert 'data.datamodules.captions' in names and 'data.core.tokenizers' in names, names; "
        "[importlib.import_module(n) for n in names]; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('captioning', 'seq2seq')]; "
        "assert not bad, bad"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)


def test_end_to_end_on_shapes(tmp_path):
    build_shapes_dataset(tmp_path / "shapes", n_train=6, n_val=2, n_test=2, progress=False)
    source = tmp_path / "shapes" / "dataset_shapes.json"
    entries = {e["imgid"]: e for e in json.loads(source.read_text())["images"]}
    dm = CaptionDataModule(
        str(source), min_freq=1, batch_size=4, eval_batch_size=2,
        transform=T.Compose([T.Resize((32, 32)), T.ToTensor()]),
    )  # fmt: skip
    dm.setup("fit")
    assert len(dm.dataset("train")) == 30 and len(dm.dataset("val")) == 2
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape == (4, 3, 32, 32)
    assert batch["captions_in"][:, 0].eq(BOS).all()
    for row, length, image_id in zip(batch["captions_out"], batch["lengths"], batch["image_ids"]):
        assert row[length - 1] == EOS and row[length:].eq(PAD).all()
        tokens = dm.vocab.decode(row)
        assert tokens in [s["tokens"] for s in entries[image_id]["sentences"]]
    val = list(dm.val_dataloader())
    assert [len(b["references"]) for b in val] == [2]
    for refs, image_id in zip(val[0]["references"], val[0]["image_ids"]):
        assert entries[image_id]["split"] == "val"
        assert refs == [s["tokens"] for s in entries[image_id]["sentences"]]

    dm.setup("test")
    test = next(iter(dm.test_dataloader()))
    assert [entries[i]["split"] for i in test["image_ids"]] == ["test", "test"]

    state = dm.vocab_state()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == state

    plain = CaptionDataModule(str(source), min_freq=1, image_size=48)  # default transform, normalised
    plain.setup("validate")
    image = plain.dataset("val")[0]["image"]
    assert image.shape == (3, 48, 48) and image.min() < 0
