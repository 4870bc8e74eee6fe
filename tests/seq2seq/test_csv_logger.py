"""ResumableCSVLogger (seq2seq/training/cli.py): a resumed run appends to its metrics.csv, whatever columns
the resumed run logs first."""

from __future__ import annotations

import csv

from seq2seq.training.cli import ResumableCSVLogger


def rows(path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def test_a_resumed_run_keeps_the_old_rows_when_it_logs_other_columns_first(tmp_path):
    first = ResumableCSVLogger(save_dir=str(tmp_path), name="run", version=0)
    first.log_metrics({"train_loss": 2.0, "val_bleu": 10.0, "epoch": 0}, step=9)
    first.save()
    resumed = ResumableCSVLogger(save_dir=str(tmp_path), name="run", version=0)
    resumed.log_metrics({"train_reward": 0.5, "epoch": 1}, step=10)  # a column the file lacks
    resumed.save()
    resumed.log_metrics({"val_bleu": 12.0, "epoch": 1}, step=19)
    resumed.save()
    header, found = rows(tmp_path / "run" / "version_0" / "metrics.csv")
    assert set(header) == {"epoch", "step", "train_loss", "train_reward", "val_bleu"}
    assert [(r["step"], r["val_bleu"], r["train_reward"]) for r in found] == [
        ("9", "10.0", ""),
        ("10", "", "0.5"),
        ("19", "12.0", ""),
    ]
