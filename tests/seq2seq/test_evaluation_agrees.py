"""The two official ways to score a translation checkpoint give one number: `python -m seq2seq test`
and `python -m seq2seq.translation.evaluate`, on the same test set with the same beam, including sources
longer
than the training max_len (both cut them there)."""

from __future__ import annotations

import json
import random
import shutil

from tests.conftest import REPO, TRAINED_MAX_LEN, explain, metric_values, read_metrics, run_python


def test_seq2seq_test_and_evaluate_report_the_same_bleu(trained_run, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(trained_run.data_dir, data)
    rng = random.Random(0)
    long = [[f"w{rng.randrange(10)}" for _ in range(rng.randrange(TRAINED_MAX_LEN + 3, 2 * TRAINED_MAX_LEN))]
            for _ in range(12)]  # fmt: skip
    for side, order in (("src", list), ("tgt", reversed)):  # longer than max_len: both paths cut them alike
        with open(data / f"test.{side}", "a", encoding="utf-8") as f:
            f.writelines(" ".join(order(words)) + "\n" for words in long)
    root = tmp_path / "runs"
    test = run_python(
        ["-m", "seq2seq", "test", "-c", "configs/translation/reverse_attention.yaml",
         "--ckpt_path", str(trained_run.best_ckpt), "--data.init_args.data_dir", str(data),
         "--data.init_args.max_len", str(TRAINED_MAX_LEN), "--model.init_args.rnn.embed_dim", "32",
         "--model.init_args.rnn.hidden_size", "64", "--trainer.default_root_dir", str(root),
         "--trainer.enable_progress_bar", "false"],
        cwd=REPO,
    )  # fmt: skip
    assert test.returncode == 0, explain(test)
    (metrics,) = root.glob("reverse_attention/version_*/metrics.csv")
    test_bleu = metric_values(read_metrics(metrics), "test_bleu")[-1]
    evaluate = run_python(
        ["-m", "seq2seq.translation.evaluate", "--checkpoint", str(trained_run.best_ckpt),
         "--src", str(data / "test.src"), "--ref", str(data / "test.tgt"),
         "--beam-size", "5", "--batch-size", "7"],
        cwd=tmp_path,
    )  # fmt: skip
    assert evaluate.returncode == 0, explain(evaluate)
    scores = json.loads(evaluate.stdout.splitlines()[-1])
    assert scores["sentences"] == 62 and scores["beam_size"] == 5
    assert abs(scores["sacrebleu"] - test_bleu) < 0.01, (scores, test_bleu)
