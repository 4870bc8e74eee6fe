"""CaptioningModule and `python -m captioning`: a CLI fit on a tiny shapes set, the frozen backbone,
the two learning rates, and the validation metrics against nltk and pycocoevalcap computed by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu
from PIL import Image

from captioning.captioner.metrics import caption_metrics
from captioning.captioner.module import CaptioningModule
from data.builders.shapes import build_shapes_dataset
from data.datamodules.captions import CaptionDataModule
from seq2seq.modules.rnn import RecurrentOptions
from seq2seq.modules.vision import ImageOptions
from seq2seq.search import SearchOptions
from tests.conftest import REPO, explain, metric_values, read_metrics, run_python

SHOWTELL_CONFIG = "configs/captioning/shapes_showtell.yaml"
TINY_RNN = RecurrentOptions(embed_dim=16, hidden_size=16, dropout=0.0)


def no_weights(**kw) -> ImageOptions:
    """The CNN without pretrained weights (nothing is loaded: fast)."""
    return ImageOptions(pretrained=False, **kw)


@pytest.fixture(scope="module")
def shapes_json(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    build_shapes_dataset(out, n_train=8, n_val=4, n_test=2, size=64, progress=False)
    return out / "dataset_shapes.json"


@pytest.fixture
def datamodule(shapes_json) -> CaptionDataModule:
    dm = CaptionDataModule(str(shapes_json), min_freq=1, batch_size=8, eval_batch_size=2, image_size=32)
    dm.setup("fit")
    return dm


def test_cli_fit_writes_checkpoint_metrics_and_vocab(shapes_json, tmp_path):
    args = [
        "-m", "captioning", "fit", "-c", SHOWTELL_CONFIG,
        "--data.init_args.source", str(shapes_json),
        "--data.init_args.batch_size", "16",  # 40 training pairs: 3 steps, one epoch
        "--data.init_args.image_size", "64",
        "--trainer.max_steps", "3",
        "--trainer.limit_val_batches", "1",
        "--trainer.default_root_dir", str(tmp_path),
        "--trainer.enable_progress_bar", "false",
        "--model.init_args.image.pretrained", "false",
        "--model.init_args.rnn.embed_dim", "16",
        "--model.init_args.rnn.hidden_size", "16",
        "--model.init_args.search.max_len", "8",
    ]  # fmt: skip
    result = run_python(args, cwd=REPO)
    assert result.returncode == 0, explain(result)
    run = tmp_path / "shapes_showtell" / "version_0"
    last = run / "checkpoints" / "last.ckpt"
    assert last.exists(), explain(result)
    rows = read_metrics(run / "metrics.csv")
    bleu4 = metric_values(rows, "val_bleu4")
    assert bleu4 and all(0.0 <= b <= 100.0 for b in bleu4)
    cider = metric_values(rows, "val_cider")  # the monitored metric (monitor: cider by default)
    assert cider and all(c >= 0.0 for c in cider)
    assert metric_values(rows, "val_rouge_l") and metric_values(rows, "val_nltk_bleu4")
    assert [p.name for p in (run / "checkpoints").glob("best-*.ckpt")] == [
        f"best-epoch=00-val_cider={cider[-1]:.2f}.ckpt"
    ]
    assert (run / "plots" / "metrics.png").is_file()
    assert metric_values(rows, "val_loss")
    assert list((run / "samples").glob("val_epoch*.txt"))

    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    vocab = ckpt["seqcap"]["vocab"]
    assert all(isinstance(w, str) for w in vocab) and len(vocab) == ckpt["hyper_parameters"]["vocab_size"]
    assert "circle" in vocab or "square" in vocab
    module = CaptioningModule.load_from_checkpoint(last, map_location="cpu")
    assert module.vocab is not None and module.vocab.to_list() == vocab


def test_frozen_backbone_stays_put_while_the_rest_trains(datamodule):
    torch.manual_seed(0)
    module = CaptioningModule(datamodule.vocab_size, rnn=TINY_RNN, image=no_weights(train_backbone="none"))
    module.train()
    optimizer = module.configure_optimizers()
    cnn_before = {k: v.clone() for k, v in module.encoder.cnn.state_dict().items()}  # BN stats too
    rest_before = {k: v.clone() for k, v in module.model.state_dict().items()}
    batch = next(iter(datamodule.train_dataloader()))
    loss, tokens = module.eval_loss(batch)
    assert tokens == int(batch["lengths"].sum())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    for k, v in module.encoder.cnn.state_dict().items():
        assert torch.equal(v, cnn_before[k]), k
    changed = [k for k, v in module.model.state_dict().items() if not torch.equal(v, rest_before[k])]
    assert "image_proj.weight" in changed and "output.weight" in changed


@pytest.mark.parametrize("train_backbone", ["none", "top"])
def test_param_groups_have_the_two_learning_rates(datamodule, train_backbone):
    module = CaptioningModule(
        datamodule.vocab_size,
        rnn=TINY_RNN,
        image=no_weights(train_backbone=train_backbone),
        lr=3e-3,
        backbone_lr=2e-5,
    )
    groups = module.configure_optimizers().param_groups
    assert [g["lr"] for g in groups] == [2e-5, 3e-3]
    backbone, rest = ({id(p) for p in g["params"]} for g in groups)
    cnn = {id(p) for p in module.encoder.cnn.parameters()}
    assert backbone <= cnn and not rest & cnn
    assert rest == {id(p) for p in module.model.parameters()}
    if train_backbone == "none":
        assert not backbone
    else:
        top = {id(p) for p in module.encoder.cnn.blocks[-1].parameters()}
        assert backbone and top <= backbone and backbone != cnn


@pytest.mark.parametrize("model", ["showtell", "attention"])
def test_validation_bleu_matches_nltk_on_the_decoded_captions(datamodule, shapes_json, model, tmp_path):
    torch.manual_seed(0)
    module = CaptioningModule(
        datamodule.vocab_size,
        rnn=TINY_RNN,
        image=no_weights(),
        search=SearchOptions(beam_size=3, max_len=6),
        model=model,
    )
    if model == "showtell":  # a random CNN's features differ little between images: let them count
        with torch.no_grad():
            module.model.image_proj.weight.mul_(50)
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.validate(module, datamodule=datamodule)
    metrics = trainer.callback_metrics

    module.eval()
    hyps, refs, names = [], [], []
    with torch.no_grad():
        for batch in datamodule.val_dataloader():
            hyps += [module.vocab.decode(h.tokens) for h in module.decode_batch(batch, "greedy")]
            refs += batch["references"]
            names += [Path(p).name for p in batch["paths"]]
    assert len(hyps) == 4 and all(len(h) <= 6 for h in hyps)
    assert len({tuple(h) for h in hyps}) > 1, hyps  # which references go with which caption matters
    smooth = SmoothingFunction().method1
    weights = {1: (1.0,), 2: (0.5, 0.5), 3: (1 / 3,) * 3, 4: (0.25,) * 4}
    for n, w in weights.items():
        expected = 100.0 * corpus_bleu(refs, hyps, weights=w, smoothing_function=smooth)
        assert float(metrics[f"val_nltk_bleu{n}"]) == pytest.approx(expected, abs=1e-4)
    coco = caption_metrics(hyps, refs)  # the COCO metrics of the same captions
    for key in ("bleu1", "bleu4", "rouge_l", "cider", "meteor"):
        if coco[key] is not None:
            assert float(metrics[f"val_{key}"]) == pytest.approx(coco[key], abs=1e-3), key
    assert "val_loss" in metrics
    samples = (tmp_path / "samples" / "val_epoch000.txt").read_text()
    assert samples.startswith("val BLEU-1")
    # each caption goes with its own image's references (in the dataset file): the junk captions
    # of an untrained model score about the same against any image's, so BLEU alone hides a mix-up
    images = json.loads(shapes_json.read_text())["images"]
    own = {im["filename"]: [c["tokens"] for c in im["sentences"]] for im in images}
    blocks = [block.splitlines() for block in samples.split("\n\n")[1:]]
    assert sorted(Path(img.removeprefix("IMG ")).name for img, _, _ in blocks) == sorted(names)
    for img, hyp, ref in blocks:
        name = Path(img.removeprefix("IMG ")).name
        assert hyp == "HYP " + " ".join(hyps[names.index(name)]), name
        assert ref == "REF " + " | ".join(" ".join(r) for r in own[name]), name
    # what people would rather see than read: the images with their captions, and where each word looks
    grid = Image.open(tmp_path / "samples" / "val_epoch000.png")
    assert grid.format == "PNG" and grid.width > 200
    overlays = sorted((tmp_path / "attention").glob("val_epoch000_*.png")) if model == "attention" else []
    if model == "attention":
        expected = [f"val_epoch000_{i}.png" for i, h in enumerate(hyps[:3]) if h]  # the first three
        assert overlays and [p.name for p in overlays] == expected
    else:
        assert not (tmp_path / "attention").exists()


def test_feature_cache_gives_the_same_loss_and_only_for_a_frozen_cnn(shapes_json, tmp_path, monkeypatch):
    extracted = []  # the splits the CNN computed features for
    real = CaptioningModule.extract_features
    monkeypatch.setattr(
        CaptioningModule, "extract_features",
        lambda self, loader, split="": extracted.append(split) or real(self, loader, split),
    )  # fmt: skip

    def validate(**kw) -> tuple[float, CaptionDataModule]:
        dm = CaptionDataModule(
            str(shapes_json), min_freq=1, eval_batch_size=2, image_size=32, cache_dir=str(tmp_path / "cache")
        )
        torch.manual_seed(0)
        search = SearchOptions(beam_size=3, max_len=6)
        module = CaptioningModule(dm.vocab_size, rnn=TINY_RNN, image=no_weights(**kw), search=search)
        trainer = pl.Trainer(
            accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, default_root_dir=tmp_path,
        )  # fmt: skip
        return float(trainer.validate(module, datamodule=dm, verbose=False)[0]["val_loss"]), dm

    plain, dm = validate(cache_features=False)
    assert not dm.features and not (tmp_path / "cache").exists()
    cached, dm = validate()
    assert set(dm.features) == {"val"} and len(list((tmp_path / "cache").glob("val-*.pt"))) == 1
    assert cached == pytest.approx(plain, rel=1e-3)  # float16 features, same model
    assert extracted == ["val"]
    again, dm = validate()  # a cache hit: same features, same loss
    assert again == cached and len(list((tmp_path / "cache").glob("*.pt"))) == 1
    assert extracted == ["val"]  # read from the cache, not computed again
    # and the file is what the batches carry: other features in it give another loss
    (path,) = (tmp_path / "cache").glob("val-*.pt")
    stored = torch.load(path, weights_only=True)
    torch.save({**stored, "features": torch.full_like(stored["features"], 10.0)}, path)
    other, dm = validate()
    assert extracted == ["val"] and other != pytest.approx(cached, rel=1e-3)
    _, dm = validate(train_backbone="top")  # a CNN that trains cannot be cached
    assert not dm.features


def test_a_short_fit_on_shapes_beats_the_untrained_model(tmp_path, one_thread):
    """The whole module (frozen pretrained CNN, feature cache, ShowTell, real greedy decoding) on a
    small shapes set: a minute of training lifts val BLEU well above the untrained model's."""
    out = tmp_path / "shapes"
    build_shapes_dataset(out, n_train=120, n_val=24, n_test=2, size=64, progress=False)
    dm = CaptionDataModule(
        str(out / "dataset_shapes.json"), min_freq=1, batch_size=16, eval_batch_size=24, image_size=64
    )
    pl.seed_everything(0)
    module = CaptioningModule(
        dm.vocab_size,
        rnn=RecurrentOptions(embed_dim=32, hidden_size=64, dropout=0.0),
        search=SearchOptions(beam_size=3, max_len=12),
        lr=5e-3,
        num_samples=0,
    )

    def trainer(epochs: int = 1) -> pl.Trainer:
        return pl.Trainer(
            accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
            num_sanity_val_steps=0,
        )  # fmt: skip

    before = trainer().validate(module, datamodule=dm, verbose=False)[0]
    trainer(12).fit(module, datamodule=dm)
    after = trainer().validate(module, datamodule=dm, verbose=False)[0]
    assert after["val_nltk_bleu1"] > before["val_nltk_bleu1"] + 20.0, (before, after)  # seen: 16 -> 50
    assert after["val_nltk_bleu2"] > before["val_nltk_bleu2"] + 15.0, (before, after)  # seen: 0.8 -> 31
    assert after["val_loss"] < before["val_loss"] - 1.5, (before, after)  # seen: 3.9 -> 1.3
