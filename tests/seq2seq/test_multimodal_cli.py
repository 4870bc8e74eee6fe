"""Multimodal translation as a user runs it: `python -m seq2seq fit` on a tiny Multi30k-layout set
whose colour only the image tells, then `seq2seq.translation.cli` and `seq2seq.translation.evaluate` on the
checkpoint alone, every bad input named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from seq2seq.training.checkpoint import CheckpointError
from seq2seq.translation.predictor import Translator
from tests.conftest import REPO, explain, run_python

COLOURS = {
    "red": ((220, 30, 30), "rotes"),
    "blue": ((30, 30, 220), "blaues"),
    "green": ((30, 200, 30), "grünes"),
}


def write_colour_set(root: Path, n_train: int = 96, n_eval: int = 12) -> Path:
    """Source "a [v] square in the picture" for every pair; target "ein {colour} Quadrat in dem
    Bild", the colour of the image's square: only the image can tell it."""
    (root / "images").mkdir(parents=True)
    names = list(COLOURS)
    for split, n in (("train", n_train), ("dev", n_eval), ("test", n_eval)):
        en, de, images = [], [], []
        for i in range(n):
            colour = names[(i * 7 + len(split)) % 3]
            image = Image.new("RGB", (64, 64), (235, 235, 235))
            x = 8 * ((i // 3) % 3)  # the place varies independently of the colour
            image.paste(COLOURS[colour][0], (8 + x, 8, 40 + x, 40))
            image.save(root / "images" / f"{split}_{i}.png")
            en.append("a [v] square in the picture")  # 6 words: sacreBLEU's 4-grams exist
            de.append(f"ein {COLOURS[colour][1]} Quadrat in dem Bild")
            images.append(f"{split}_{i}.png")
        for name, lines in ((f"{split}.en", en), (f"{split}.de", de), (f"{split}_images.txt", images)):
            (root / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny doubly attentive model on the packaged EfficientNet-Lite0 (a 2 x 2 grid at 64 px)."""
    base = tmp_path_factory.mktemp("mmt")
    data = write_colour_set(base / "data")
    args = [
        "-m", "seq2seq", "fit", "-c", "configs/translation/shapes_mmt.yaml",
        "--data.init_args.data_dir", str(data), "--data.init_args.image_dir", str(data / "images"),
        "--data.init_args.image_size", "64", "--data.init_args.batch_size", "16",
        "--model.init_args.rnn.embed_dim", "16",
        "--model.init_args.rnn.hidden_size", "32", "--model.init_args.lr", "0.01",
        "--model.init_args.rnn.dropout", "0", "--trainer.max_epochs", "20", "--early_stopping.patience", "20",
        "--trainer.default_root_dir", str(base / "runs"), "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    result = run_python(args, cwd=REPO, timeout=600)
    assert result.returncode == 0, explain(result)
    return data, base / "runs" / "shapes_mmt" / "version_0" / "checkpoints" / "last.ckpt"


def lines_of(data: Path, split: str = "test") -> list[str]:
    names = (data / f"{split}_images.txt").read_text().splitlines()
    sentences = (data / f"{split}.en").read_text().splitlines()
    return [f"{n}\t{s}" for n, s in zip(names, sentences)]


def test_translate_reads_image_tab_sentence_and_reads_the_image(trained, tmp_path):
    data, ckpt = trained
    result = run_python(
        ["-m", "seq2seq.translation.cli", "--checkpoint", str(ckpt), "--image-dir", str(data / "images")],
        cwd=tmp_path, input="\n".join(lines_of(data)) + "\n",
    )  # fmt: skip
    assert result.returncode == 0, explain(result)
    out = result.stdout.splitlines()
    refs = (data / "test.de").read_text().splitlines()
    assert len(out) == len(refs)
    assert sum(o == r for o, r in zip(out, refs)) >= 9, list(zip(out, refs))  # of 12 (chance: 4)
    translator = Translator.from_checkpoint(ckpt, "cpu")
    images = [data / "images" / line.split("\t")[0] for line in lines_of(data)]
    api = [
        t[0].text for t in translator.translate(["a [v] square in the picture"] * len(images), images=images)
    ]
    assert api == out


def test_text_only_checkpoint_refuses_image_lines(trained_run, tmp_path):
    result = run_python(
        ["-m", "seq2seq.translation.cli", "--checkpoint", str(trained_run.last_ckpt)], cwd=tmp_path,
        input="w1 w2\nimg.png\tw1 w2\n",
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "line 2" in result.stderr and "text-only" in result.stderr


def test_multimodal_checkpoint_refuses_plain_lines(trained, tmp_path):
    _, ckpt = trained
    result = run_python(
        ["-m", "seq2seq.translation.cli", "--checkpoint", str(ckpt)],
        cwd=tmp_path,
        input="a [v] square in the picture\n",
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "line 1" in result.stderr and "IMAGE<TAB>SENTENCE" in result.stderr


def test_missing_image_is_named_and_skip_bad_keeps_lines_aligned(trained, tmp_path):
    data, ckpt = trained
    lines = lines_of(data)[:3]
    lines[1] = "nowhere.png\ta [v] square in the picture"
    args = ["-m", "seq2seq.translation.cli", "--checkpoint", str(ckpt), "--image-dir", str(data / "images")]
    failed = run_python(args, cwd=tmp_path, input="\n".join(lines) + "\n")
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert "line 2" in failed.stderr and "nowhere.png" in failed.stderr
    skipped = run_python([*args, "--skip-bad"], cwd=tmp_path, input="\n".join(lines) + "\n")
    assert skipped.returncode == 0, explain(skipped)
    out = skipped.stdout.split("\n")[:3]
    assert out[1] == "" and out[0] and out[2]
    assert "line 2" in skipped.stderr and "nowhere.png" in skipped.stderr


def test_attention_plot_draws_source_and_image(trained, tmp_path):
    data, ckpt = trained
    plots = tmp_path / "plots"
    result = run_python(
        ["-m", "seq2seq.translation.cli", "--checkpoint", str(ckpt), "--image-dir", str(data / "images"),
         "--attention-plot", str(plots)],
        cwd=tmp_path, input="\n".join(lines_of(data)[:2]) + "\n",
    )  # fmt: skip
    assert result.returncode == 0, explain(result)
    assert sorted(p.name for p in plots.iterdir()) == [
        "00001.png",
        "00001_image.png",
        "00002.png",
        "00002_image.png",
    ]


def test_evaluate_with_images_right_and_shuffled(trained, tmp_path):
    data, ckpt = trained
    base = [
        "-m", "seq2seq.translation.evaluate", "--checkpoint", str(ckpt), "--src", str(data / "test.en"),
        "--ref", str(data / "test.de"), "--images", str(data / "test_images.txt"),
        "--image-dir", str(data / "images"),
    ]  # fmt: skip
    right = run_python(base, cwd=tmp_path)
    assert right.returncode == 0, explain(right)
    scores = json.loads(right.stdout.strip().splitlines()[-1])
    assert scores["sentences"] == 12 and scores["skipped"] == 0 and scores["sacrebleu"] > 60
    shuffled = json.loads(run_python([*base, "--shuffle-images", "1"], cwd=tmp_path).stdout.splitlines()[-1])
    assert shuffled["shuffle_images"] == 1 and shuffled["sacrebleu"] < scores["sacrebleu"]


def test_evaluate_names_bad_image_input(trained, tmp_path, trained_run):
    data, ckpt = trained
    short = tmp_path / "short.txt"
    short.write_text("\n".join((data / "test_images.txt").read_text().splitlines()[:5]) + "\n")
    common = ["--src", str(data / "test.en"), "--ref", str(data / "test.de")]
    result = run_python(
        ["-m", "seq2seq.translation.evaluate", "--checkpoint", str(ckpt), *common, "--images", str(short),
         "--image-dir", str(data / "images")], cwd=tmp_path,
    )  # fmt: skip
    assert (
        result.returncode == 2
        and "short.txt has 5 lines" in result.stderr
        and "test.en has 12" in result.stderr
    )
    none = run_python(
        ["-m", "seq2seq.translation.evaluate", "--checkpoint", str(ckpt), *common], cwd=tmp_path
    )
    assert none.returncode == 2 and "--images" in none.stderr
    text_ckpt = str(trained_run.last_ckpt)
    text_only = run_python(
        ["-m", "seq2seq.translation.evaluate", "--checkpoint", text_ckpt, *common, "--images", str(short)],
        cwd=tmp_path,
    )
    assert text_only.returncode == 2 and "text-only" in text_only.stderr


def test_a_multimodal_ensemble_reads_each_image_through_each_cnn(trained, trained_run, tmp_path):
    """Two copies of the doubly attentive checkpoint translate (words, scores, the image attention
    of the first) as it does alone, images read by each model's CNN; a text-only translator cannot
    join a multimodal one (here its vocabularies already differ, and the message says where)."""
    data, ckpt = trained
    lines = lines_of(data)
    sentences = [line.split("\t")[1] for line in lines]
    images = [data / "images" / line.split("\t")[0] for line in lines]
    alone = Translator.from_checkpoint(ckpt, "cpu").translate(sentences, beam_size=3, images=images)
    pair = Translator.from_checkpoint([ckpt, ckpt], "cpu")
    together = pair.translate(sentences, beam_size=3, images=images, return_attention=True)
    for a, b in zip(alone, together):
        assert a[0].tokens == b[0].tokens and a[0].score == pytest.approx(b[0].score, abs=1e-4)
        assert b[0].image_attention is not None and b[0].image_attention.shape[0] == len(b[0].tokens)
    with pytest.raises(
        CheckpointError, match=r"last\.ckpt: (cannot be ensembled with|a text-only translator)"
    ):
        Translator.from_checkpoint([ckpt, trained_run.last_ckpt], "cpu")
