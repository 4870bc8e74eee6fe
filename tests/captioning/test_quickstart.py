"""`python -m captioning.captioner.quickstart` (make quickstart's captioning part), as a user runs it: in a
fresh folder with the repo's configs, on a tiny shapes set already in place, with a tiny model."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from captioning.captioner.metrics import caption_metrics
from captioning.captioner.predictor import Captioner
from data.builders.shapes import build_shapes_dataset
from tests.conftest import REPO, explain, metric_values, read_metrics, run_python

PRINTED = {"bleu1": "BLEU-1", "bleu2": "BLEU-2", "bleu3": "BLEU-3", "bleu4": "BLEU-4", "rouge_l": "ROUGE-L",
           "cider": "CIDEr-D", "nltk_bleu4": "nltk BLEU-4"}  # fmt: skip


def test_quickstart_trains_tests_and_captions_three_images(tmp_path, one_thread):
    """10 steps on 8 images. The test metrics it prints are those of the checkpoint's beam-3
    captions of all 4 test images, recomputed here from the Python API against all 5 references
    of each; the test samples (Lightning's test loop, on cached CNN features) caption every test
    image as the API does from the image files; the three captions printed are the API's; the
    checkpoint is the best on val CIDEr-D; the training loss fell."""
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    data = tmp_path / "data" / "corpora" / "shapes-quickstart"
    build_shapes_dataset(data, n_train=8, n_val=2, n_test=4, size=64, progress=False)
    result = run_python(
        ["-m", "captioning.captioner.quickstart", "--trainer.max_steps", "10",
         "--trainer.limit_val_batches", "1", "--trainer.log_every_n_steps", "1",
         "--trainer.default_root_dir", str(tmp_path / "runs"), "--trainer.enable_progress_bar", "false",
         "--data.init_args.batch_size", "8", "--data.init_args.image_size", "64",
         "--model.init_args.image.pretrained", "false", "--model.init_args.rnn.embed_dim", "16",
         "--model.init_args.rnn.hidden_size", "32", "--model.init_args.search.max_len", "6",
         "--model.init_args.lr", "0.01", "--model.init_args.rnn.dropout", "0"],
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, explain(result)
    out = result.stdout
    assert "using the shapes set in data/corpora/shapes-quickstart" in out
    line = re.search(r"^test \(beam 3, COCO caption metrics over 5 references\): (.*)$", out, flags=re.M)
    assert line, out
    printed = {}
    for key, name in PRINTED.items():
        value = re.search(rf"(?:^| ){re.escape(name)} (\d+\.\d\d)(?: |$)", line.group(1))
        assert value, (name, line.group(1))
        printed[key] = float(value.group(1))

    images_json = json.loads((data / "dataset_shapes.json").read_text())["images"]
    test = [im for im in images_json if im["split"] == "test"]
    assert len(test) == 4
    images = re.findall(r"^\s+image:\s+(.*)$", out, flags=re.M)
    assert [Path(p).name for p in images] == [im["filename"] for im in test[:3]]
    references = re.findall(r"^\s+reference:\s+(.*)$", out, flags=re.M)
    assert references == [im["sentences"][0]["raw"] for im in test[:3]]
    checkpoint = Path(re.search(r"^checkpoint:\s+(\S+)$", out, flags=re.M).group(1))
    assert checkpoint.is_file() and tmp_path / "runs" in checkpoint.parents
    vocab = set(torch.load(checkpoint, map_location="cpu", weights_only=True)["seqcap"]["vocab"])

    # the API, on the image files, with the checkpoint alone
    paths = [data / "images" / im["filename"] for im in test]
    api = Captioner.from_checkpoint(checkpoint, device="cpu").caption(paths, method="beam", beam_size=3)
    hyps = [c.tokens for c in api]
    assert all(hyps) and all(set(h) <= vocab for h in hyps)
    refs = [[s["tokens"] for s in im["sentences"]] for im in test]
    recomputed = caption_metrics(hyps, refs, meteor=False)
    assert printed == pytest.approx({k: recomputed[k] for k in PRINTED}, abs=0.006)
    assert min(printed["bleu1"], printed["rouge_l"], printed["cider"]) > 0  # not vacuously equal

    captions = re.findall(r"^\s+caption:[ \t]*(.*)$", out, flags=re.M)
    assert captions == [c.text for c in api[:3]]

    run_dir = checkpoint.parents[1]
    samples = run_dir / "samples"
    assert list(samples.glob("val_epoch*.png")) and list(samples.glob("test_epoch*.png"))
    (test_samples,) = samples.glob("test_epoch*.txt")
    text = test_samples.read_text()
    assert [Path(p).name for p in re.findall(r"^IMG (.*)$", text, flags=re.M)] == [
        im["filename"] for im in test
    ]
    assert re.findall(r"^HYP ?(.*)$", text, flags=re.M) == [c.text for c in api]

    rows = read_metrics(run_dir / "metrics.csv")
    best = re.search(r"val_cider=(\d+\.\d\d)\.ckpt$", checkpoint.name)
    assert best and float(best.group(1)) == pytest.approx(max(metric_values(rows, "val_cider")), abs=0.006)
    loss = metric_values(rows, "train_loss")
    assert len(loss) == 10 and sum(loss[-3:]) < 0.9 * sum(loss[:3]), loss
