"""seq2seq.experiments.visual_context on a tiny shapes_mmt set: every run, both image conditions,
the CSV, table and plot; and its argument checks."""

from __future__ import annotations

import csv

import pytest

from seq2seq.experiments import visual_context
from tests.conftest import REPO

TINY = [
    "--n-train", "24", "--n-dev", "6", "--n-test", "8", "--seeds", "1", "--epochs", "1",
    "--sources", "en_masked", "--fusions", "none,doubly",
    "--model.init_args.image.pretrained", "false", "--model.init_args.rnn.embed_dim", "8",
    "--model.init_args.rnn.hidden_size", "8", "--data.init_args.image_size", "32",
    "--trainer.enable_progress_bar", "false",
]  # fmt: skip


def test_tiny_experiment_writes_every_run_and_condition(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the configs are found from the repository root, as a user runs it
    out = tmp_path / "vc"
    rows = visual_context.main(["--out", str(out), *TINY])
    with open(out / "visual_context.csv") as f:
        saved = list(csv.DictReader(f))
    assert [(r["fusion"], r["images"]) for r in saved] == [
        ("none", "congruent"),
        ("none", "incongruent"),
        ("doubly", "congruent"),
        ("doubly", "incongruent"),
    ]
    assert len(rows) == 4 and all(0 <= float(r["bleu"]) <= 100 for r in saved)
    assert all(0 <= float(r["colour_accuracy"]) <= 100 for r in saved)
    # the text-only model cannot see the shuffle
    assert saved[0]["bleu"] == saved[1]["bleu"] and saved[0]["colour_accuracy"] == saved[1]["colour_accuracy"]
    table = (out / "visual_context.md").read_text()
    assert "| en_masked | doubly |" in table and "| en_masked | none |" in table
    assert (out / "visual_context.png").stat().st_size > 10_000
    assert (out / "data" / "test.en_masked").is_file()
    assert len(list((out / "feature_cache").glob("test-*.pt"))) == 2  # right and shuffled images
    with pytest.raises(SystemExit):  # results are not replaced without --overwrite
        visual_context.main(["--out", str(out), *TINY])


def test_table_reports_mean_and_sd_over_seeds():
    rows = [
        {"source": "en", "fusion": "none", "seed": s, "images": i, "bleu": b, "colour_accuracy": c}
        for s, (b, c) in enumerate([(90.0, 10.0), (94.0, 14.0)])
        for i in visual_context.IMAGES
    ]
    line = "| en | none | 92.0 ± 2.8 | 92.0 ± 2.8 | 12.0 ± 2.8 | 12.0 ± 2.8 |"
    assert line in visual_context.format_table(rows)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--fusions", "late"], "late is not one of"),
        (["--sources", "fr"], "fr is not one of"),
        (["--model.init_args.fusion", "flat"], "set by the experiment"),
    ],
)
def test_bad_arguments_are_named(tmp_path, capsys, args, message, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit):
        visual_context.main(["--out", str(tmp_path / "x"), *args])
    assert message in capsys.readouterr().err
