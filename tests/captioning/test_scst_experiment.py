"""`python -m captioning.experiments.scst` as a user runs it, on a tiny shapes set and tiny models."""

from __future__ import annotations

import csv
import json

from data.builders.shapes import build_shapes_dataset
from tests.conftest import REPO, explain, run_python


def test_the_experiment_trains_cross_entropy_then_scst_and_writes_the_table(tmp_path):
    data = tmp_path / "shapes"
    build_shapes_dataset(data, n_train=24, n_val=8, n_test=4, size=64, progress=False)
    out = tmp_path / "out"
    args = [
        "-m", "captioning.experiments.scst", "--out", str(out), "--models", "showtell",
        "--source", str(data / "dataset_shapes.json"), "--scst-epochs", "1", "--scst-samples", "2",
        "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.limit_val_batches", "1", "--data.init_args.image_size", "64",
        "--data.init_args.batch_size", "8", "--model.init_args.image.pretrained", "false",
        "--model.init_args.rnn.embed_dim", "16", "--model.init_args.rnn.hidden_size", "16",
        "--model.init_args.search.max_len", "8", "--model.init_args.search.beam_size", "2",
    ]  # fmt: skip
    result = run_python(args, cwd=REPO, timeout=600)
    assert result.returncode == 0, explain(result)
    rows = list(csv.DictReader(open(out / "scst.csv")))
    assert [(r["model"], r["stage"]) for r in rows] == [("showtell", "xe"), ("showtell", "scst")]
    for r in rows:
        assert 0.0 <= float(r["bleu4"]) <= 100.0 and float(r["cider"]) >= 0.0 and float(r["rouge_l"]) > 0.0
        metrics = {k: r[k] for k in ("bleu4", "rouge_l", "cider")}
        assert all(v != "" for v in metrics.values()), r
    config = json.loads((out / "config.json").read_text())
    xe, scst = config["runs"]
    scst_saved = (out / "runs" / "showtell_scst" / "version_0" / "config.yaml").read_text()
    assert "self_critical: true" in scst_saved and f"init_checkpoint: {xe['checkpoint']}" in scst_saved
    assert "scst_samples: 2" in scst_saved
    table = (out / "scst.md").read_text()
    assert "| ShowTell | cross-entropy |" in table and "| ShowTell | + SCST, 1 epoch |" in table
    assert "%" in table.splitlines()[-1]  # SCST's relative CIDEr-D change
    assert (out / "scst.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "runs" / "showtell_scst" / "version_0" / "plots" / "reward.png").is_file()
