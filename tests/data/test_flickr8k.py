"""`python -m data.builders.flickr8k --check DIR` on tiny fake Flickr8k folders (a few small JPEGs, a Karpathy
JSON and/or the official text files): exit status, counts, missing and corrupt images, errors that
name the path, the text-file -> Karpathy JSON conversion, and the Flickr8k config under the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from data.builders.flickr8k import (
    IMAGES_DIR,
    KARPATHY_JSON,
    SPLIT_FILES,
    TEXT_DIR,
    TOKEN_FILE,
    main,
)
from data.core.caption_sources import read_karpathy
from data.core.vocab import SPECIALS
from tests.conftest import REPO, explain, metric_values, read_metrics, run_python

CONFIG = "configs/captioning/flickr8k_showtell.yaml"
SIZES = {"train": 3, "val": 2, "test": 2}


def fake_names(sizes: dict[str, int]) -> dict[str, list[str]]:
    """Flickr-like file names per split: ``1000268201_693b08cb0e.jpg``."""
    names, n = {}, 0
    for split, count in sizes.items():
        names[split] = [f"{1000268201 + i}_{i:010x}.jpg" for i in range(n, n + count)]
        n += count
    return names


def caption(name: str, k: int) -> str:
    return f"A Dog's picture {name[:10]}, number {k} runs."


def make_flickr8k(
    root: Path,
    sizes: dict[str, int] = SIZES,
    karpathy: bool = True,
    text: bool = True,
    text_dir: str = ".",
    images: bool = True,
) -> dict[str, list[str]]:
    """A fake Flickr8k folder: JPEGs in Flicker8k_Dataset/, Karpathy JSON, official text files."""
    names = fake_names(sizes)
    image_dir = root / IMAGES_DIR
    image_dir.mkdir(parents=True)
    if images:
        for i, name in enumerate(n for split in names.values() for n in split):
            Image.new("RGB", (16, 12), (40 * i % 256, 90, 160)).save(image_dir / name, "JPEG")
    if karpathy:
        entries = [
            {
                "filename": name,
                "imgid": i,
                "split": split,
                "sentences": [
                    {"raw": caption(name, k), "tokens": caption(name, k).split()} for k in range(5)
                ],
            }
            for i, (split, name) in enumerate((s, n) for s, ns in names.items() for n in ns)
        ]
        (root / KARPATHY_JSON).write_text(json.dumps({"images": entries, "dataset": "flickr8k"}))
    if text:
        folder = root / text_dir
        folder.mkdir(exist_ok=True)
        lines = [
            f"{name}#{k}\t{caption(name, k)}" for split in names.values() for name in split for k in range(5)
        ]
        lines += [f"2258277193_586949ec62.jpg.1#{k}\tNot in any split file ." for k in range(5)]
        (folder / TOKEN_FILE).write_text("\n".join(lines) + "\n")
        for split, file_name in SPLIT_FILES.items():
            (folder / file_name).write_text("".join(f"{name}\n" for name in names[split]))
    return names


def check(root: Path, *extra: str) -> list[str]:
    return ["--check", str(root), "--no-progress", *extra]


@pytest.fixture
def flickr(tmp_path) -> tuple[Path, dict[str, list[str]]]:
    root = tmp_path / "flickr8k"
    return root, make_flickr8k(root)


def test_all_present_exits_0_and_prints_counts(flickr, capsys):
    root, _ = flickr
    assert main(check(root)) == 0
    out = capsys.readouterr().out
    assert re.search(r"train\s+3 images\s+15 captions", out)
    assert re.search(r"val\s+2 images\s+10 captions", out)
    assert re.search(r"test\s+2 images\s+10 captions", out)
    assert "warning: train has 3 images; the full Flickr8k has 6000" in out
    assert "do not have 5 captions" not in out
    assert "OK: all 7 images present and readable" in out
    assert f"--data.init_args.source {root / KARPATHY_JSON}" in out
    assert f"--data.init_args.image_root {root / IMAGES_DIR}" in out


def test_missing_image_exits_1_and_names_it(flickr, capsys):
    root, names = flickr
    gone = root / IMAGES_DIR / names["val"][1]
    gone.unlink()
    assert main(check(root)) == 1
    out = capsys.readouterr().out
    assert "missing images (1):" in out and str(gone) in out
    assert "unreadable images" not in out
    assert "FAILED: 1 missing and 0 unreadable of 7 images" in out and "skip_bad_images true" in out


def test_corrupt_image_exits_1_and_names_it(flickr, capsys):
    root, names = flickr
    bad = root / IMAGES_DIR / names["train"][0]
    bad.write_bytes(b"this is not a JPEG")
    assert main(check(root)) == 1
    out = capsys.readouterr().out
    assert "unreadable images (1):" in out and str(bad) in out
    assert "missing images" not in out


def test_a_long_list_of_missing_images_is_cut_after_20(tmp_path, capsys):
    root = tmp_path / "flickr8k"
    names = make_flickr8k(root, sizes={"train": 23, "val": 1, "test": 1}, text=False, images=False)
    assert main(check(root)) == 1
    out = capsys.readouterr().out
    assert "missing images (25):" in out and "  ... and 5 more" in out
    assert str(root / IMAGES_DIR / names["train"][19]) in out
    assert str(root / IMAGES_DIR / names["train"][20]) not in out


def test_missing_folder_exits_2_naming_it(tmp_path, capsys):
    nowhere = tmp_path / "nowhere"
    assert main(check(nowhere)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {nowhere}: no such folder") and "Traceback" not in err


def test_missing_image_folder_exits_2_with_a_hint(flickr, capsys):
    root, _ = flickr
    (root / IMAGES_DIR).rename(root / "Flickr8k_Dataset")
    assert main(check(root)) == 2
    err = capsys.readouterr().err
    assert f"error: {root / IMAGES_DIR}: no such image folder" in err and "--images Flickr8k_Dataset" in err
    assert main(check(root, "--images", "Flickr8k_Dataset")) == 0


@pytest.mark.parametrize("content", ["{not json", '{"images": [{"filename": "a.jpg"}]}', "[]"])
def test_bad_json_exits_2_naming_it(flickr, capsys, content):
    root, _ = flickr
    (root / KARPATHY_JSON).write_text(content)
    assert main(check(root)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {root / KARPATHY_JSON}: ") and "caption_datasets.zip" in err


def test_json_named_with_json_must_exist(flickr, capsys):
    root, _ = flickr
    missing = root / "elsewhere.json"
    assert main(check(root, "--json", str(missing))) == 2
    assert f"error: {missing}: no such file" in capsys.readouterr().err


def test_neither_json_nor_text_files_exits_2(tmp_path, capsys):
    root = tmp_path / "flickr8k"
    make_flickr8k(root, karpathy=False, text=False)
    assert main(check(root)) == 2
    err = capsys.readouterr().err
    assert f"error: {root}: no {root / KARPATHY_JSON}" in err and TOKEN_FILE in err and "jbrownlee" in err


@pytest.mark.parametrize("text_dir", [".", TEXT_DIR])
def test_text_files_alone_are_checked_and_conversion_is_suggested(tmp_path, capsys, text_dir):
    root = tmp_path / "flickr8k"
    make_flickr8k(root, karpathy=False, text_dir=text_dir)
    assert main(check(root)) == 0
    out = capsys.readouterr().out
    assert "official text files" in out
    assert re.search(r"train\s+3 images\s+15 captions", out) and re.search(
        r"test\s+2 images\s+10 captions", out
    )
    assert f"--write-json {root / KARPATHY_JSON}" in out


def test_write_json_converts_the_text_files_and_never_overwrites(tmp_path, capsys):
    root = tmp_path / "flickr8k"
    names = make_flickr8k(root, karpathy=False)
    out_json = root / KARPATHY_JSON
    assert main(check(root, "--write-json", str(out_json))) == 0
    assert f"wrote {out_json}" in capsys.readouterr().out

    images = read_karpathy(out_json, root / IMAGES_DIR)
    assert {s: [Path(im.path).name for im in images if im.split == s] for s in SIZES} == names
    first = images[0]
    assert Path(first.path) == root / IMAGES_DIR / names["train"][0]
    assert first.raw == [caption(names["train"][0], k) for k in range(5)]
    assert first.captions[2] == ["a", "dog's", "picture", names["train"][0][:10], "number", "2", "runs"]
    assert main(check(root)) == 0  # the written JSON is now the default one

    before = out_json.read_bytes()
    assert main(check(root, "--write-json", str(out_json))) == 2
    assert f"error: {out_json}: already exists" in capsys.readouterr().err
    assert out_json.read_bytes() == before


def test_write_json_needs_the_text_files(flickr, capsys, tmp_path):
    root, _ = flickr
    (root / TOKEN_FILE).unlink()
    assert main(check(root, "--write-json", str(tmp_path / "out.json"))) == 2
    assert "--write-json needs the official text files" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


def test_bad_token_line_exits_2_naming_file_and_line(tmp_path, capsys):
    root = tmp_path / "flickr8k"
    make_flickr8k(root, karpathy=False)
    lines = (root / TOKEN_FILE).read_text().splitlines()
    lines[3] = "no tab and no hash here"
    (root / TOKEN_FILE).write_text("\n".join(lines) + "\n")
    assert main(check(root)) == 2
    assert (
        f"error: {root / TOKEN_FILE}, line 4: expected 'IMAGE.jpg#N<TAB>caption'" in capsys.readouterr().err
    )


def test_check_runs_as_a_user_runs_it(flickr):
    root, _ = flickr
    result = run_python(["-m", "data.builders.flickr8k", "--check", str(root)], cwd=REPO, timeout=120)
    assert result.returncode == 0, explain(result)
    assert "OK: all 7 images present and readable" in result.stdout and "Traceback" not in result.stderr


def test_config_points_at_the_documented_layout():
    config = yaml.safe_load((REPO / CONFIG).read_text())
    data = config["data"]["init_args"]
    assert data["source"] == f"data/corpora/flickr8k/{KARPATHY_JSON}"
    assert data["image_root"] == f"data/corpora/flickr8k/{IMAGES_DIR}"
    model = config["model"]["init_args"]
    rnn = model["rnn"]
    assert (model["model"], rnn["embed_dim"], rnn["hidden_size"], rnn["dropout"]) == (
        "showtell",
        512,
        512,
        0.5,
    )
    assert (
        model["search"]["method"],
        model["search"]["beam_size"],
        data["min_freq"],
        data["batch_size"],
    ) == (
        "beam",
        3,
        5,
        64,
    )


def test_config_trains_under_the_cli_on_a_fake_flickr8k(flickr, tmp_path):
    """The Flickr8k config, tiny, for 3 epochs of 3 steps on the fake folder: the checkpoint's
    vocabulary is exactly the training captions' words seen min_freq=4 times or more, most
    frequent first (the 5 shared words 15 times, each training image's number 5 times; the
    digits 0-4, seen 3 times each, and every val/test word are not in it); metrics.csv has the
    validation metrics of each of the 3 epochs; the training and validation losses fell; the
    sample files caption the 2 val images with vocabulary words, against their own references."""
    root, names = flickr
    args = [
        "-m", "captioning", "fit", "-c", CONFIG,
        "--data.init_args.source", str(root / KARPATHY_JSON),
        "--data.init_args.image_root", str(root / IMAGES_DIR),
        "--data.init_args.min_freq", "4",
        "--data.init_args.num_workers", "0",
        "--data.init_args.image_size", "32",
        "--data.init_args.batch_size", "5",
        "--model.init_args.image.pretrained", "false",
        "--model.init_args.rnn.embed_dim", "16",
        "--model.init_args.rnn.hidden_size", "16",
        "--model.init_args.rnn.dropout", "0",
        "--model.init_args.lr", "0.01",
        "--trainer.max_epochs", "3",
        "--trainer.log_every_n_steps", "1",
        "--trainer.default_root_dir", str(tmp_path / "runs"),
        "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    result = run_python(args, cwd=REPO)
    assert result.returncode == 0, explain(result)
    assert "Traceback" not in result.stderr
    run = tmp_path / "runs" / "flickr8k_showtell" / "version_0"

    # the Karpathy tokens, lowercased: punctuation stays on the word ("runs.", "1000268201,")
    vocab = [*SPECIALS, "a", "dog's", "number", "picture", "runs."] + [f"{n[:10]}," for n in names["train"]]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["seqcap"]["vocab"] == vocab
    assert ckpt["hyper_parameters"]["vocab_size"] == len(vocab) == 12
    assert ckpt["state_dict"]["model.output.weight"].shape[0] == len(vocab)
    assert (ckpt["epoch"], ckpt["global_step"]) == (2, 9)  # 3 epochs of 15 captions in batches of 5

    rows = read_metrics(run / "metrics.csv")
    val = [r for r in rows if r.get("val_cider") not in (None, "")]
    assert [int(r["epoch"]) for r in val] == [0, 1, 2]
    for r in val:
        assert all(r[f"val_{k}"] != "" for k in ("bleu1", "bleu4", "rouge_l", "cider", "loss")), r
    train_loss = metric_values(rows, "train_loss")
    assert len(train_loss) == 9
    assert sum(train_loss[-3:]) < 0.9 * sum(train_loss[:3]), train_loss
    val_loss = metric_values(val, "val_loss")
    assert val_loss[-1] < val_loss[0], val_loss

    refs = {
        str(root / IMAGES_DIR / n): " | ".join(caption(n, k).lower() for k in range(5)) for n in names["val"]
    }
    allowed = set(vocab) - {"<pad>", "<bos>", "<eos>"}
    for epoch in range(3):
        text = (run / "samples" / f"val_epoch{epoch:03d}.txt").read_text()
        images = re.findall(r"^IMG (.*)$", text, flags=re.M)
        assert images == list(refs)
        assert re.findall(r"^REF (.*)$", text, flags=re.M) == [refs[i] for i in images]
        for hyp in re.findall(r"^HYP ?(.*)$", text, flags=re.M):
            assert set(hyp.split()) <= allowed, hyp
