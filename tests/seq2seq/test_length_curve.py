"""seq2seq.experiments.length_curve: bucketing, per-bucket scores, and the command end to end on a
tiny reversal corpus (train, then the same models again through --checkpoints)."""

from __future__ import annotations

import csv
import json
import random

import pytest
import torch

from data.core.parallel import read_lines
from seq2seq.experiments import length_curve
from seq2seq.experiments.length_curve import COLUMNS, bucket_by_length, bucket_rows, score
from seq2seq.training.metrics import sacre_bleu
from tests.conftest import REPO, explain, run_python

# -- buckets ----------------------------------------------------------------------------------------


def test_buckets_are_bins_of_width_in_increasing_length():
    lengths = [14, 5, 9, 10, 6, 15]
    assert bucket_by_length(lengths, 5) == [[1, 2, 4], [0, 3], [5]]
    assert bucket_by_length(lengths, 10) == [[1, 2, 4], [0, 3, 5]]


def test_a_small_bin_joins_the_next_longer_one_and_a_small_tail_the_last_group():
    #          bins: 5-9 -> [0, 1]; 10-14 -> [2]; 20-24 -> [3, 4, 5]; 30-34 -> [6]
    lengths = [5, 7, 10, 20, 21, 22, 30]
    assert bucket_by_length(lengths, 5, min_count=2) == [[0, 1], [2, 3, 4, 5, 6]]
    assert bucket_by_length(lengths, 5, min_count=3) == [[0, 1, 2], [3, 4, 5, 6]]
    assert bucket_by_length(lengths, 5, min_count=100) == [list(range(7))]
    assert bucket_by_length([], 5) == []


def test_every_sentence_lands_in_exactly_one_bucket_and_buckets_do_not_overlap():
    rng = random.Random(0)
    lengths = [rng.randint(1, 60) for _ in range(500)]
    groups = bucket_by_length(lengths, 5, min_count=30)
    assert sorted(i for g in groups for i in g) == list(range(500))
    assert all(len(g) >= 30 for g in groups)
    spans = [(min(lengths[i] for i in g), max(lengths[i] for i in g)) for g in groups]
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))


def test_bad_width_or_count_is_refused():
    with pytest.raises(ValueError, match="width"):
        bucket_by_length([3, 4], 0)
    with pytest.raises(ValueError, match="min_count"):
        bucket_by_length([3, 4], 5, min_count=0)


def test_bucket_rows_score_each_bucket_and_the_whole_set():
    refs = ["a b c", "c b a d", "x y z w v u", "p q r s t u v"]
    hyps = ["a b c", "c b a", "x y z w v u", "q p r s t u v"]
    lengths = [3, 4, 6, 7]
    rows = bucket_rows("reverse", "attention", 1, hyps, refs, lengths, bucket_by_length(lengths, 5))
    assert [r["bucket"] for r in rows] == ["3-4", "6-7", "all"]
    assert [r["count"] for r in rows] == [2, 2, 4]
    assert [r["exact_match"] for r in rows] == [50.0, 50.0, 50.0]
    assert rows[0]["mean_len"] == 3.5 and rows[2]["min_len"] == 3 and rows[2]["max_len"] == 7
    assert rows[1]["bleu"] == round(sacre_bleu(hyps[2:], refs[2:])[0], 2)
    assert rows[2]["bleu"] == round(sacre_bleu(hyps, refs)[0], 2)
    assert set(rows[0]) == set(COLUMNS)


def test_exact_match_compares_the_tokens_bleu_counts_so_spacing_does_not_matter():
    assert score(["a  b ", "a b"], ["a b", "b a"])[1] == 50.0
    assert score(["Datei öffnen ?", "Fehler:%s"], ["Datei öffnen?", "Fehler: %s"])[1] == 100.0


# -- the command ------------------------------------------------------------------------------------

TINY = (
    "--n-train", "200", "--n-dev", "20", "--n-test", "60", "--min-count", "5", "--beam-size", "2",
    "--model.init_args.rnn.embed_dim", "8", "--model.init_args.rnn.hidden_size", "16",
    "--data.init_args.batch_size", "32", "--trainer.enable_progress_bar", "false",
)  # fmt: skip


def _rows(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("length_curve") / "out"
    args = [
        "-m",
        "seq2seq.experiments.length_curve",
        "--out",
        str(out),
        "--epochs",
        "1",
        "--seeds",
        "2",
        *TINY,
    ]
    result = run_python(args, cwd=REPO, timeout=600)
    assert result.returncode == 0, explain(result)
    return out, result


def test_length_curve_trains_both_models_per_seed_and_writes_csv_png_and_configs(trained):
    out, result = trained
    columns, rows = _rows(out / "length_curve.csv")
    assert columns == COLUMNS
    assert {(r["model"], r["seed"]) for r in rows} == {
        ("fixed", "0"),
        ("fixed", "1"),
        ("attention", "0"),
        ("attention", "1"),
        ("copy", ""),
    }
    for model, seed in (("fixed", "0"), ("attention", "1"), ("copy", "")):
        mine = [r for r in rows if r["model"] == model and r["seed"] == seed]
        assert mine[-1]["bucket"] == "all" and int(mine[-1]["count"]) == 60
        assert sum(int(r["count"]) for r in mine[:-1]) == 60
        assert all(0.0 <= float(r["bleu"]) <= 100.0 and 0.0 <= float(r["exact_match"]) <= 100.0 for r in mine)
    # test sources are 5-60 tokens long: the buckets span that range
    buckets = [r for r in rows if r["model"] == "copy" and r["bucket"] != "all"]
    assert int(buckets[0]["min_len"]) >= 5 and int(buckets[-1]["max_len"]) <= 60 and len(buckets) >= 3
    # the copy baseline is sacreBLEU of the sources against the references
    data = out / "data"
    src, ref = read_lines(data / "test.src"), read_lines(data / "test.tgt")
    assert float(rows[-1]["bleu"]) == round(sacre_bleu(src, ref)[0], 2)
    png = (out / "length_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    config = json.loads((out / "config.json").read_text())
    assert config["seeds"] == 2 and config["data_stats"]["train_len"] == [5, 20]
    assert config["data_stats"]["test_len"] == [5, 60]
    assert [(r["model"], r["seed"]) for r in config["runs"]] == [
        ("fixed", 0),
        ("attention", 0),
        ("fixed", 1),
        ("attention", 1),
    ]
    # each label is its model, and the seeds give different weights (and data orders: `seed:` below)
    ckpts = {(r["model"], r["seed"]): torch.load(r["checkpoint"], weights_only=True) for r in config["runs"]}
    assert all(c["hyper_parameters"]["context"] == model for (model, _), c in ckpts.items())
    w0, w1 = (ckpts[("attention", s)]["state_dict"]["model.encoder.embedding.weight"] for s in (0, 1))
    assert not torch.equal(w0, w1)
    # the exact configuration of each training lies beside its logs, with the shared sizes
    for run in ("reverse_fixed_seed0", "reverse_attention_seed1"):
        saved = (out / "runs" / run / "version_0" / "config.yaml").read_text()
        assert "hidden_size: 16" in saved and "seed_everything: " + run[-1] in saved
        assert f"  seed: {run[-1]}" in saved  # the datamodule's shuffle seed
    assert "fixed" in result.stdout and "BLEU by source length" in result.stdout


def test_checkpoints_are_evaluated_without_training_and_give_the_same_scores(trained, tmp_path):
    out, _ = trained
    config = json.loads((out / "config.json").read_text())
    fixed, attention = (r["checkpoint"] for r in config["runs"][:2])  # seed 0
    again = tmp_path / "again"
    args = [
        "-m", "seq2seq.experiments.length_curve", "--out", str(again), "--checkpoints", fixed, attention,
        "--data-dir", str(out / "data"), "--min-count", "5", "--beam-size", "2",
    ]  # fmt: skip
    result = run_python(args, cwd=REPO)
    assert result.returncode == 0, explain(result)
    _, rows = _rows(again / "length_curve.csv")
    _, first = _rows(out / "length_curve.csv")
    assert {r["seed"] for r in rows if r["model"] != "copy"} == {"given"}
    assert not (again / "runs").exists()
    for model in ("fixed", "attention"):
        now = [(r["bucket"], r["bleu"], r["exact_match"]) for r in rows if r["model"] == model]
        before = [
            (r["bucket"], r["bleu"], r["exact_match"])
            for r in first
            if r["model"] == model and r["seed"] == "0"
        ]
        assert now == before
        assert any(float(b) > 0 for _, b, _ in before), before  # scores that a wrong model would change
    bleus = {m: [r["bleu"] for r in rows if r["model"] == m] for m in ("fixed", "attention")}
    assert bleus["fixed"] != bleus["attention"]  # two checkpoints, two models: each one is loaded


def test_checkpoints_in_the_wrong_order_or_of_another_task_are_refused(trained, tmp_path, capsys):
    out, _ = trained
    fixed, attention = (r["checkpoint"] for r in json.loads((out / "config.json").read_text())["runs"][:2])
    for given, task, message in (
        ((attention, fixed), "reverse", "a 'attention' model, given as the 'fixed' one"),
        ((fixed, attention), "gettext", "trained on src-tgt, not the gettext task's data"),
    ):
        with pytest.raises(SystemExit) as exc:
            length_curve.main([
                "--out", str(tmp_path / task), "--task", task, "--data-dir", str(out / "data"),
                "--checkpoints", *given,
            ])  # fmt: skip
        assert message in str(exc.value.code)
        assert not (tmp_path / task / "length_curve.csv").exists()


def test_a_corpus_in_out_built_with_other_sizes_is_refused(trained, tmp_path):
    out, _ = trained
    with pytest.raises(SystemExit) as exc:
        length_curve.main(
            ["--out", str(out), "--overwrite", "--n-test", "61", "--n-train", "200", "--n-dev", "20"]
        )
    assert "not the {'train': 200, 'dev': 20, 'test': 61}" in str(exc.value.code)
    assert "use another --out" in str(exc.value.code)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--checkpoints", "nope-a.ckpt", "nope-b.ckpt"], "nope-a.ckpt: no such checkpoint file"),
        (["--seeds", "0"], "must be >= 1"),
        (["--beam-size", "x"], "expected an integer"),
        (["--task", "sort"], "invalid choice"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--trainer.max_epochs", "3"], "--trainer.max_epochs: set by the experiment itself"),
    ],
)
def test_bad_arguments_exit_with_a_message(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        length_curve.main(["--out", str(tmp_path / "out"), "--n-test", "10", *args])
    assert exc.value.code != 0
    captured = capsys.readouterr()
    assert message in captured.err + str(exc.value.code)


def test_results_already_in_out_are_not_replaced(trained, capsys):
    out, _ = trained
    before = (out / "length_curve.csv").read_bytes()
    with pytest.raises(SystemExit) as exc:
        length_curve.main(["--out", str(out)])
    assert exc.value.code == 2 and "--overwrite" in capsys.readouterr().err
    assert (out / "length_curve.csv").read_bytes() == before
