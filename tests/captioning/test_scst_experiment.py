"""`python -m captioning.experiments.scst` as a user runs it, on a tiny shapes set and tiny models."""

from __future__ import annotations

import csv
import json
import re
import struct
from pathlib import Path

import pytest
import torch

from data.builders.shapes import build_shapes_dataset
from seq2seq.modules.rnn import RecurrentOptions
from seq2seq.modules.vision import ImageOptions
from seq2seq.search import SearchOptions
from tests.conftest import REPO, explain, metric_values, read_metrics, run_python

METRICS = ["bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider", "nltk_bleu4"]


def test_the_experiment_trains_cross_entropy_then_scst_and_writes_the_table(tmp_path):
    """Cross-entropy (1 epoch: 120 caption pairs, 15 steps), then SCST from its best checkpoint (1
    epoch: 24 images, 3 steps). The CSV's rows are each run's own logged test metrics and best val
    CIDEr-D; the SCST run starts from the cross-entropy weights (it moved them by at most ~lr a
    step, 20x less than cross-entropy moved them from the initial ones) and logs a CIDEr-D reward
    and baseline every step; the markdown table shows the CSV's values and SCST's relative
    CIDEr-D change computed from them; the figure has a panel per metric the CSV holds."""
    data = tmp_path / "shapes"
    build_shapes_dataset(data, n_train=24, n_val=8, n_test=4, size=64, progress=False)
    out = tmp_path / "out"
    args = [
        "-m", "captioning.experiments.scst", "--out", str(out), "--models", "showtell",
        "--source", str(data / "dataset_shapes.json"), "--scst-epochs", "1", "--scst-samples", "2",
        "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.limit_val_batches", "1", "--trainer.log_every_n_steps", "1",
        "--data.init_args.image_size", "64",
        "--data.init_args.batch_size", "8", "--model.init_args.image.pretrained", "false",
        "--model.init_args.rnn.embed_dim", "16", "--model.init_args.rnn.hidden_size", "16",
        "--model.init_args.search.max_len", "8", "--model.init_args.search.beam_size", "2",
    ]  # fmt: skip
    result = run_python(args, cwd=REPO, timeout=600)
    assert result.returncode == 0, explain(result)
    with open(out / "scst.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], r["stage"], r["epochs"]) for r in rows] == [
        ("showtell", "xe", "1"),
        ("showtell", "scst", "1"),
    ]
    config = json.loads((out / "config.json").read_text())
    runs = {r["stage"]: r for r in config["runs"]}
    assert list(runs) == ["xe", "scst"]

    # each row: the test metrics its run logged (with its best checkpoint) and its best val CIDEr-D
    ckpts, steps = {}, {"xe": 15, "scst": 3}
    for row in rows:
        stage = row["stage"]
        run_dir = out / "runs" / f"showtell_{stage}" / "version_0"
        logged = read_metrics(run_dir / "metrics.csv")
        (test,) = [r for r in logged if r.get("test_cider")]
        for key in METRICS:
            if test.get(f"test_{key}", "") == "":  # METEOR without java
                assert row[key] == "" and key == "meteor"
            else:
                assert float(row[key]) == pytest.approx(float(test[f"test_{key}"]), abs=0.005), key
        assert float(row["rouge_l"]) > 0 and float(row["bleu1"]) > 0  # equal to something, not to nothing
        best_val = max(metric_values(logged, "val_cider"))
        assert float(row["best_val_cider"]) == pytest.approx(best_val, abs=0.005)
        checkpoint = Path(runs[stage]["checkpoint"])
        assert checkpoint.parent == run_dir / "checkpoints" and checkpoint.name.startswith("best-")
        assert float(re.search(r"val_cider=(\d+\.\d\d)", checkpoint.name).group(1)) == pytest.approx(
            best_val, abs=0.006
        )
        ckpts[stage] = torch.load(checkpoint, map_location="cpu", weights_only=True)
        assert ckpts[stage]["global_step"] == steps[stage]  # SCST: batches of images, not of captions

    scst_saved = (out / "runs" / "showtell_scst" / "version_0" / "config.yaml").read_text()
    assert (
        "self_critical: true" in scst_saved and f"init_checkpoint: {runs['xe']['checkpoint']}" in scst_saved
    )
    assert "scst_samples: 2" in scst_saved
    xe, scst = ckpts["xe"], ckpts["scst"]
    assert scst["hyper_parameters"]["self_critical"] and not xe["hyper_parameters"]["self_critical"]
    assert scst["seqcap"]["vocab"] == xe["seqcap"]["vocab"]

    # SCST started from the cross-entropy weights: Adam moves a weight by about lr a step
    torch.manual_seed(0)  # the configs' seed_everything: the initial weights both runs built
    from captioning.captioner.module import CaptioningModule

    init = CaptioningModule(
        len(xe["seqcap"]["vocab"]),
        rnn=RecurrentOptions(embed_dim=16, hidden_size=16, dropout=0.3),
        image=ImageOptions(pretrained=False),
        search=SearchOptions(beam_size=3, max_len=8),
    ).state_dict()
    decoder = [k for k in xe["state_dict"] if k.startswith("model.")]
    assert len(decoder) >= 8
    scst_moved = max((scst["state_dict"][k] - xe["state_dict"][k]).abs().max().item() for k in decoder)
    xe_moved = max((xe["state_dict"][k] - init[k]).abs().max().item() for k in decoder)
    assert 0 < scst_moved <= 2 * 3 * config["scst_lr"], scst_moved  # 3 steps at --scst-lr
    assert xe_moved > 10 * scst_moved, (xe_moved, scst_moved)  # 15 steps at the config's lr
    assert all(
        torch.equal(scst["state_dict"][k], v) for k, v in xe["state_dict"].items() if k.startswith("encoder.")
    )

    # the reward (CIDEr-D of the samples) and the greedy baseline, every SCST step, logged and kept
    rewards = scst["seqcap_history"]["rewards"]
    assert [step for step, _, _ in rewards] == [0, 1, 2] and xe["seqcap_history"]["rewards"] == []
    assert all(0 <= r <= 10 and 0 <= b <= 10 for _, r, b in rewards)
    assert any(r > 0 for _, r, _ in rewards)
    scst_log = read_metrics(out / "runs" / "showtell_scst" / "version_0" / "metrics.csv")
    assert metric_values(scst_log, "train_reward") == pytest.approx([r for _, r, _ in rewards], abs=1e-6)
    assert metric_values(scst_log, "train_baseline") == pytest.approx([b for _, _, b in rewards], abs=1e-6)
    assert (out / "runs" / "showtell_scst" / "version_0" / "plots" / "reward.png").is_file()

    # the table: the CSV's numbers, one decimal, and SCST's CIDEr-D change relative to cross-entropy
    lines = (out / "scst.md").read_text().splitlines()
    assert lines[0].startswith("| model | training | BLEU-4 | METEOR | ROUGE-L | CIDEr-D |")
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert [c[:2] for c in cells] == [["ShowTell", "cross-entropy"], ["ShowTell", "+ SCST, 1 epoch"]]
    for row, c in zip(rows, cells, strict=True):
        meteor = "needs java" if row["meteor"] == "" else f"{float(row['meteor']):.1f}"
        assert c[2:6] == [f"{float(row['bleu4']):.1f}", meteor, f"{float(row['rouge_l']):.1f}",
                          f"{float(row['cider']):.1f}"]  # fmt: skip
    xe_cider, scst_cider = float(rows[0]["cider"]), float(rows[1]["cider"])
    gain = f"{100 * (scst_cider / xe_cider - 1):+.1f}%" if xe_cider else ""  # 2.4 here
    assert cells[0][6] == "" and cells[1][6] == gain

    # the figure: a bar panel per metric the CSV has, 1.05 inch a bar (+0.4, at least 3), 100 dpi
    png = (out / "scst.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    panels = 3 + (rows[0]["meteor"] != "")
    assert (width, height) == (round(100 * max(3.0, 1.05 * len(rows) + 0.4) * panels), 340)
