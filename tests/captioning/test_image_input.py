"""captioning.experiments.image_input end to end on a tiny shapes set: both ShowTell variants per seed,
the CSV, the bar plot, the configs, and that the variant really is ShowTell(image_every_step=True)."""

from __future__ import annotations

import csv
import json
import re

import pytest
import torch

from captioning.experiments import image_input
from captioning.experiments.image_input import COLUMNS
from data.builders.shapes import build_shapes_dataset
from tests.conftest import REPO, explain, metric_values, read_metrics, run_python

TINY = (
    "--data.init_args.batch_size", "16", "--data.init_args.eval_batch_size", "4",
    "--data.init_args.image_size", "64", "--trainer.limit_val_batches", "1",
    "--trainer.enable_progress_bar", "false", "--model.init_args.image.pretrained", "false",
    "--model.init_args.rnn.embed_dim", "16", "--model.init_args.rnn.hidden_size", "16",
    "--model.init_args.search.max_len", "8",
)  # fmt: skip


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    base = tmp_path_factory.mktemp("image_input")
    build_shapes_dataset(base / "shapes", n_train=8, n_val=2, n_test=4, size=64, progress=False)
    out = base / "out"
    args = [
        "-m", "captioning.experiments.image_input", "--out", str(out), "--seeds", "2", "--epochs", "2",
        "--source", str(base / "shapes" / "dataset_shapes.json"), *TINY,
    ]  # fmt: skip
    result = run_python(args, cwd=REPO, timeout=600)
    assert result.returncode == 0, explain(result)
    return base, out, result


def test_both_variants_per_seed_give_test_bleu_rows_a_plot_and_the_configs(experiment):
    base, out, result = experiment
    with open(out / "image_input.csv", newline="") as f:
        reader = csv.DictReader(f)
        columns, rows = reader.fieldnames, list(reader)
    assert columns == COLUMNS
    assert [(r["variant"], r["seed"]) for r in rows] == [
        ("image_once", "0"),
        ("image_every_step", "0"),
        ("image_once", "1"),
        ("image_every_step", "1"),
    ]
    for r in rows:
        assert all(0.0 <= float(r[f"bleu{n}"]) <= 100.0 for n in range(1, 5))
        assert float(r["bleu1"]) >= float(r["bleu4"])  # n-gram precisions only shrink with n
        assert int(r["epochs"]) == 2 and float(r["train_seconds"]) > 0
    png = (out / "image_input.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    config = json.loads((out / "config.json").read_text())
    assert config["seeds"] == 2 and config["lightning_overrides"][-1] == "8" and config["seconds"] > 0
    assert "image_every_step" in result.stdout and "BLEU-4" in result.stdout
    for run, seed in (("image_once_seed0", 0), ("image_every_step_seed1", 1)):
        saved = (out / "runs" / run / "version_0" / "config.yaml").read_text()
        assert f"seed_everything: {seed}" in saved and "hidden_size: 16" in saved
        assert f"  seed: {seed}" in saved  # the datamodule's shuffle seed follows the run's seed
    # the CSV holds the test BLEU (nltk, as this experiment always reported) each run logged
    for r in rows:
        metrics = read_metrics(out / "runs" / f"{r['variant']}_seed{r['seed']}" / "version_0" / "metrics.csv")
        for n in range(1, 5):
            assert float(r[f"bleu{n}"]) == pytest.approx(
                metric_values(metrics, f"test_nltk_bleu{n}")[-1], abs=0.006
            )


def test_the_variant_is_showtell_with_the_image_at_every_step_and_nothing_else_differs(experiment):
    _, out, _ = experiment
    runs = {r["variant"]: r for r in json.loads((out / "config.json").read_text())["runs"] if r["seed"] == 0}
    ckpts = {v: torch.load(r["checkpoint"], map_location="cpu", weights_only=True) for v, r in runs.items()}
    once, every = ckpts["image_once"]["hyper_parameters"], ckpts["image_every_step"]["hyper_parameters"]
    assert once["image_every_step"] is False and every["image_every_step"] is True
    assert {k: v for k, v in once.items() if k != "image_every_step"} == {
        k: v for k, v in every.items() if k != "image_every_step"
    }
    # the LSTM reads [E z_t; z~_-1] in the variant: twice the input width, same everything else
    shapes = {v: {k: t.shape for k, t in c["state_dict"].items()} for v, c in ckpts.items()}
    differ = {k for k in shapes["image_once"] if shapes["image_once"][k] != shapes["image_every_step"][k]}
    assert differ and all(k.startswith("model.rnn.") for k in differ)
    assert shapes["image_once"].keys() == shapes["image_every_step"].keys()
    # another seed: another model
    other = next(r for r in json.loads((out / "config.json").read_text())["runs"] if r["seed"] == 1)
    w1 = torch.load(other["checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    key = "model.embedding.weight"
    assert not torch.equal(w1[key], ckpts[other["variant"]]["state_dict"][key])


def test_both_variants_of_a_seed_read_the_same_cached_features(experiment):
    base, _, result = experiment
    cached = sorted(p.name.split("-")[0] for p in (base / "shapes" / "feature_cache").glob("*.pt"))
    # untrained CNNs differ by seed, so one set of train/val/test features per seed, not per run
    assert cached == ["test", "test", "train", "train", "val", "val"]
    # the first variant of a seed computes them, the second reads them (data/core/features.py logs both)
    log = result.stdout + result.stderr
    assert len(re.findall(r"\[features\] \w+: \d+ images computed and cached in ", log)) == 6, log[-3000:]
    assert len(re.findall(r"\[features\] \w+: \d+ images from ", log)) == 6, log[-3000:]


def test_a_config_of_another_model_is_refused(experiment, tmp_path):
    base, _, _ = experiment
    args = [
        "-m", "captioning.experiments.image_input", "--out", str(tmp_path / "out"), "--seeds", "1",
        "--epochs", "1", "--source", str(base / "shapes" / "dataset_shapes.json"),
        "--config", "configs/captioning/shapes_attention.yaml", *TINY,
    ]  # fmt: skip
    result = run_python(args, cwd=REPO)
    assert result.returncode == 2
    assert "its model is 'attention'; the experiment compares ShowTell variants" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--source", "missing/captions.json"], "missing/captions.json: no such caption file"),
        (["--config", "nope.yaml"], "--config nope.yaml: no such file"),
        (["--seeds", "0"], "must be >= 1"),
        (["--hidden", "3"], "unrecognized arguments: --hidden"),
        (["--model.init_args.image_every_step", "true"], "image_every_step: set by the experiment itself"),
    ],
)
def test_bad_arguments_exit_with_a_message(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        image_input.main(["--out", str(tmp_path / "out"), *args])
    assert exc.value.code != 0
    assert message in capsys.readouterr().err + str(exc.value.code)
