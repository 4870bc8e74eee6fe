"""`python -m captioning.captioner.quickstart` (make quickstart's captioning part), as a user runs it: in a
fresh folder with the repo's configs, on a tiny shapes set already in place, with a tiny model."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from data.builders.shapes import build_shapes_dataset
from tests.conftest import REPO, explain, run_python


def test_quickstart_trains_tests_and_captions_three_images(tmp_path):
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    data = tmp_path / "data" / "corpora" / "shapes-quickstart"
    build_shapes_dataset(data, n_train=8, n_val=2, n_test=4, size=64, progress=False)
    result = run_python(
        ["-m", "captioning.captioner.quickstart", "--trainer.max_steps", "3", "--trainer.limit_val_batches", "1",
         "--trainer.default_root_dir", str(tmp_path / "runs"), "--trainer.enable_progress_bar", "false",
         "--model.init_args.image.pretrained", "false", "--model.init_args.rnn.embed_dim", "16",
         "--model.init_args.rnn.hidden_size", "16", "--model.init_args.search.max_len", "6",
         "--data.init_args.image_size", "64"],
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, explain(result)
    out = result.stdout
    assert "using the shapes set in data/corpora/shapes-quickstart" in out
    match = re.search(
        r"test \(beam 3, COCO .*\): BLEU-1 (\S+) BLEU-2 (\S+) BLEU-3 (\S+) BLEU-4 (\S+) METEOR.* "
        r"ROUGE-L (\S+) CIDEr-D (\S+) nltk BLEU-4 (\S+)", out
    )  # fmt: skip
    assert match, out
    assert all(0.0 <= float(b) <= 100.0 for b in match.groups()[:5]) and float(match.group(6)) >= 0.0

    images_json = json.loads((data / "dataset_shapes.json").read_text())["images"]
    test = [im for im in images_json if im["split"] == "test"]
    images = re.findall(r"^\s+image:\s+(.*)$", out, flags=re.M)
    assert [Path(p).name for p in images] == [im["filename"] for im in test[:3]]
    references = re.findall(r"^\s+reference:\s+(.*)$", out, flags=re.M)
    assert references == [im["sentences"][0]["raw"] for im in test[:3]]
    checkpoint = Path(re.search(r"^checkpoint:\s+(\S+)$", out, flags=re.M).group(1))
    assert checkpoint.is_file() and tmp_path / "runs" in checkpoint.parents
    vocab = set(torch.load(checkpoint, map_location="cpu", weights_only=True)["seqcap"]["vocab"])
    captions = re.findall(r"^\s+caption:[ \t]*(.*)$", out, flags=re.M)
    assert len(captions) == 3 and all(set(c.split()) <= vocab for c in captions)
    samples = checkpoint.parents[1] / "samples"
    assert list(samples.glob("val_epoch*.png")) and list(samples.glob("test_epoch*.png"))
