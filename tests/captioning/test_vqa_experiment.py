"""`python -m captioning.experiments.vqa_baselines` as a user runs it, on a tiny shapes VQA set."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest

from captioning.experiments import vqa_baselines
from data.builders import shapes_vqa
from data.builders.shapes import build_shapes_dataset
from data.builders.shapes_vqa import TYPES
from data.core.vqa import read_vqa
from tests.conftest import REPO, explain, run_python


def test_the_experiment_trains_every_model_and_writes_the_table(tmp_path):
    build_shapes_dataset(tmp_path / "shapes", n_train=20, n_val=6, n_test=6, size=64, progress=False)
    root = tmp_path / "questions"
    shapes_vqa.write(root, shapes_vqa.build(tmp_path / "shapes"))
    out = tmp_path / "out"
    args = [
        "-m", "captioning.experiments.vqa_baselines", "--out", str(out), "--data", str(root),
        "--models", "attention,blind", "--seeds", "2", "--epochs", "1",
        "--trainer.enable_progress_bar", "false", "--data.init_args.image_size", "64",
        "--data.init_args.batch_size", "16", "--data.init_args.cache_dir", str(tmp_path / "cache"),
        "--model.init_args.image.pretrained", "false", "--model.init_args.rnn.embed_dim", "8",
        "--model.init_args.rnn.hidden_size", "8", "--model.init_args.joint_size", "16",
    ]  # fmt: skip
    result = run_python(args, cwd=REPO, timeout=600)
    assert result.returncode == 0, explain(result)
    rows = list(csv.DictReader(open(out / "vqa_baselines.csv")))
    assert [(r["model"], r["seed"]) for r in rows] == [
        ("attention", "0"),
        ("attention", "1"),
        ("blind", "0"),
        ("blind", "1"),
        ("majority", ""),
    ]
    for r in rows:
        assert all(0.0 <= float(r[k]) <= 100.0 for k in ("overall", *TYPES)), r
    # the majority row: the most frequent training answer of each type, scored on test by hand
    train = read_vqa(
        root / "train_questions.json", root / "train_annotations.json", root / "train_images.json"
    )
    test = read_vqa(root / "test_questions.json", root / "test_annotations.json", root / "test_images.json")
    best = {
        t: Counter(it.answer for it in train if it.question_type == t).most_common(1)[0][0] for t in TYPES
    }
    for t in TYPES:
        mine = [it for it in test if it.question_type == t]
        expected = 100.0 * sum(best[t] == it.answer for it in mine) / len(mine)
        assert float(rows[-1][t]) == pytest.approx(expected, abs=0.01)
    saved = (out / "runs" / "blind_seed1" / "version_0" / "config.yaml").read_text()
    assert "model: blind" in saved and "seed: 1" in saved
    table = (out / "vqa_baselines.md").read_text()
    assert "| blind (Q only) | 2 |" in table and "| majority per type | - |" in table
    assert "- attention overall" in table and "- blind vs majority per type: largest margin" in table
    assert (out / "vqa_baselines.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(json.loads((out / "config.json").read_text())["runs"]) == 4


def test_bad_arguments_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        vqa_baselines.main(["--out", str(tmp_path), "--models", "attention,cnn"])
    assert "models are lstm_q_norm_i, attention, blind, image_only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        vqa_baselines.main(["--out", str(tmp_path), "--model.init_args.model", "blind"])
    assert "set by the experiment itself" in capsys.readouterr().err
