"""Self-critical sequence training: the loss's pieces (captioning/captioner/scst.py) on tiny models, and a
tiny
SCST run of CaptioningModule that starts from a cross-entropy checkpoint and raises CIDEr-D."""

from __future__ import annotations

from statistics import mean

import pytest
import pytorch_lightning as pl
import torch

from captioning.captioner import scst
from captioning.captioner.metrics import CiderD
from captioning.captioner.module import CaptioningModule
from captioning.captioner.network import ShowAttendTell, ShowTell
from data.builders.shapes import build_shapes_dataset
from data.core.vocab import BOS, EOS, PAD
from data.datamodules.captions import CaptionDataModule
from seq2seq.modules.rnn import RecurrentOptions
from seq2seq.modules.vision import ImageOptions
from seq2seq.search import SearchOptions
from tests.conftest import REPO, explain, metric_values, read_metrics, run_python

V = 12


def tiny(model: str):
    torch.manual_seed(0)
    if model == "showtell":
        return ShowTell(
            V, 8, rnn=RecurrentOptions(embed_dim=8, hidden_size=16, dropout=0.0)
        ).eval(), torch.randn(3, 8)
    return ShowAttendTell(
        V, 8, rnn=RecurrentOptions(embed_dim=8, hidden_size=16, dropout=0.0)
    ).eval(), torch.randn(3, 5, 8)


def test_sample_batch_pads_and_ends_with_eos_unless_cut():
    captions_in, targets = scst.sample_batch([[5, 6], [], [7, 8, 9]], max_len=3)
    assert captions_in.tolist() == [[BOS, 5, 6], [BOS, PAD, PAD], [BOS, 7, 8]]
    assert targets.tolist() == [[5, 6, EOS], [EOS, PAD, PAD], [7, 8, 9]]  # the last was cut at 3 words


@pytest.mark.parametrize("model", ["showtell", "attention"])
def test_teacher_forced_log_probs_are_those_the_samples_were_drawn_with(model):
    net, features = tiny(model)
    torch.manual_seed(1)
    hyps = [h[0] for h in net.caption(features, SearchOptions(method="sample", max_len=4))]
    assert any(len(h.tokens) == 4 for h in hyps) or any(len(h.tokens) < 4 for h in hyps)
    captions_in, targets = scst.sample_batch([h.tokens for h in hyps], 4)
    log_probs = scst.sequence_log_probs(net(features, captions_in), targets)
    torch.testing.assert_close(log_probs, torch.tensor([h.score for h in hyps]), atol=1e-5, rtol=0)


def test_mean_of_others_baseline():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])
    assert scst.mean_of_others(rewards).tolist() == [[2.5, 2.0, 1.5], [3.0, 3.0, 0.0]]
    with pytest.raises(ValueError, match="at least 2 samples"):
        scst.mean_of_others(rewards[:, :1])


@pytest.mark.parametrize("model", ["showtell", "attention"])
@pytest.mark.parametrize("reward, more_likely", [(1.0, True), (-1.0, False)])
def test_the_loss_raises_a_sample_above_its_baseline_and_lowers_one_below(model, reward, more_likely):
    net, features = tiny(model)
    torch.manual_seed(2)
    samples = [h[0].tokens for h in net.caption(features[:1], SearchOptions(method="sample", max_len=5))]
    captions_in, targets = scst.sample_batch(samples, 5)

    def log_prob() -> torch.Tensor:
        return scst.sequence_log_probs(net(features[:1], captions_in), targets)

    before = log_prob()
    loss = scst.self_critical_loss(before, torch.tensor([reward]), torch.tensor([0.0]))
    net.zero_grad()
    loss.backward()
    # the gradient is -(r - b) times that of log p: a step against it moves log p with r - b
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    with torch.no_grad():
        for p in net.parameters():
            if p.grad is not None:
                p -= 0.05 * p.grad
    after = log_prob()
    assert (after > before + 1e-4).item() is more_likely and (after < before - 1e-4).item() is not more_likely
    zero = scst.self_critical_loss(log_prob(), torch.tensor([0.5]), torch.tensor([0.5]))
    net.zero_grad()
    zero.backward()  # reward equal to the baseline: no push either way
    assert all(p.grad.abs().max() == 0 for p in net.parameters() if p.grad is not None)


@pytest.mark.parametrize(
    "model, baseline", [("showtell", "greedy"), ("attention", "greedy"), ("showtell", "mean")]
)
def test_scst_alone_learns_tiny_captions(model, baseline, one_thread):
    """SCST from an untrained model on 8 images (random features) with one reference each: the
    greedy captions' CIDEr-D (scale 0-10) rises from below 0.3 to well above 1.5 in 200 steps."""
    torch.manual_seed(0)
    vocab, channels = 30, 10
    captions = [[4 + i, 4 + (i + 1) % 8, 12 + i % 4, 16 + i % 2] for i in range(8)]
    refs = [[[str(t) for t in c]] for c in captions]
    cider = CiderD.from_references(refs)
    if model == "showtell":
        net = ShowTell(vocab, channels, rnn=RecurrentOptions(embed_dim=16, hidden_size=32, dropout=0.0))
        features = torch.randn(8, channels)
    else:
        net = ShowAttendTell(vocab, channels, rnn=RecurrentOptions(embed_dim=16, hidden_size=32, dropout=0.0))
        features = torch.randn(8, 5, channels)
    net.eval()  # no dropout: the samples' log-probabilities are those they were drawn with

    def rewards(hyps: list[list[int]], references) -> torch.Tensor:
        words = [[str(t) for t in h] for h in hyps]
        return torch.tensor(cider.scores(words, references), dtype=torch.float32)

    def greedy() -> list[list[int]]:
        return [h[0].tokens for h in net.caption(features, SearchOptions(method="greedy", max_len=8))]

    start = rewards(greedy(), refs).mean().item()
    k, generator = 8, torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    repeated = features.repeat_interleave(k, 0)
    for _ in range(200):
        samples = [
            h[0].tokens
            for h in net.caption(repeated, SearchOptions(method="sample", max_len=8), generator=generator)
        ]
        r = rewards(samples, [x for x in refs for _ in range(k)]).view(8, k)
        if baseline == "greedy":
            b = rewards(greedy(), refs).view(8, 1).expand(8, k)
        else:
            b = scst.mean_of_others(r)
        captions_in, targets = scst.sample_batch(samples, 8)
        log_probs = scst.sequence_log_probs(net(repeated, captions_in), targets)
        loss = scst.self_critical_loss(log_probs, r.flatten(), b.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    end = rewards(greedy(), refs).mean().item()
    assert end > 1.5 and end > 4 * start, (start, end)


# -- the module ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    out = tmp_path_factory.mktemp("scst_shapes")
    build_shapes_dataset(out, n_train=60, n_val=20, n_test=2, size=64, progress=False)
    return out / "dataset_shapes.json"


def datamodule(source, cache) -> CaptionDataModule:
    return CaptionDataModule(
        str(source), min_freq=1, batch_size=16, eval_batch_size=20, image_size=64, cache_dir=str(cache)
    )


def trainer(root, epochs: int = 1, **kw) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
        num_sanity_val_steps=0, **kw,
    )  # fmt: skip


@pytest.mark.parametrize("baseline", ["greedy", "mean"])
def test_a_tiny_scst_run_from_a_cross_entropy_checkpoint_raises_the_reward(
    shapes, tmp_path, baseline, one_thread
):
    """The module's SCST steps on 60 shapes images: they start from the checkpoint's weights, cache
    the document frequencies, log reward and baseline, plot, and raise the mean CIDEr-D of the
    sampled captions (what SCST ascends; seen, greedy: 0.42 -> 0.61, mean: 0.46 -> 0.62). The
    greedy caption of so small a model is one caption for nearly every image, so its val CIDEr-D
    moves by chance here; the gains on held-out images are measured by captioning.experiments.scst
    on the shapes set (README)."""
    cache = tmp_path / "cache"
    small = dict(
        rnn=RecurrentOptions(embed_dim=32, hidden_size=64, dropout=0.0),
        search=SearchOptions(beam_size=3, max_len=12),
        num_samples=0,
    )  # fmt: skip
    pl.seed_everything(0)
    dm = datamodule(shapes, cache)
    xe = CaptioningModule(dm.vocab_size, lr=5e-3, **small)
    t = trainer(tmp_path / "xe", epochs=2)
    t.fit(xe, datamodule=dm)
    ckpt = tmp_path / "xe.ckpt"
    t.save_checkpoint(ckpt)

    pl.seed_everything(0)
    dm = datamodule(shapes, cache)
    module = CaptioningModule(
        dm.vocab_size, lr=5e-3, self_critical=True, scst_samples=8 if baseline == "mean" else 4,
        scst_baseline=baseline, init_checkpoint=str(ckpt), **small,
    )  # fmt: skip
    before = trainer(tmp_path / "before").validate(module, datamodule=dm, verbose=False)[0]
    xe_val = trainer(tmp_path / "xe_val").validate(xe, datamodule=dm, verbose=False)[0]
    assert before["val_cider"] == pytest.approx(xe_val["val_cider"])  # the cross-entropy weights
    scst_trainer = trainer(tmp_path / "scst", epochs=10)
    scst_trainer.fit(module, datamodule=dm)
    assert list(cache.glob("cider_df-*.json"))  # the training captions' document frequencies
    steps = module.history["rewards"]
    assert len(steps) == 10 * 4  # 60 images in batches of 16: 4 steps an epoch
    assert all(r >= 0 and b >= 0 for _, r, b in steps)
    first, last = mean(r for _, r, _ in steps[:4]), mean(r for _, r, _ in steps[-8:])
    assert last > 1.15 * first, (first, last)
    if baseline == "mean":  # the mean of the other samples: on average, the samples' mean reward
        assert all(b == pytest.approx(r, rel=1e-5) for _, r, b in steps)
    assert (
        "train_reward" in scst_trainer.callback_metrics and "train_baseline" in scst_trainer.callback_metrics
    )
    assert len(module.history["epochs"]) == 10 and "cider" in module.history["epochs"][0][1]
    assert (tmp_path / "scst" / "plots" / "reward.png").is_file()
    assert (tmp_path / "scst" / "plots" / "metrics.png").is_file()


def test_scst_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="two with baseline 'mean'"):
        CaptioningModule(
            10, image=ImageOptions(pretrained=False), self_critical=True, scst_samples=1, scst_baseline="mean"
        )
    with pytest.raises(ValueError, match="monitor must be one of"):
        CaptioningModule(10, image=ImageOptions(pretrained=False), monitor="bleu")


# -- as a user runs it: the CLI, resuming, and the experiment -----------------------------------

SHOWTELL_CONFIG = "configs/captioning/shapes_showtell.yaml"


def cli_fit(source, root, run_name: str, *extra: str) -> list[str]:
    return [
        "-m", "captioning", "fit", "-c", SHOWTELL_CONFIG,
        "--data.init_args.source", str(source), "--data.init_args.image_size", "64",
        "--data.init_args.batch_size", "16", "--data.init_args.cache_dir", str(root / "cache"),
        "--trainer.default_root_dir", str(root), "--run_name", run_name,
        "--trainer.enable_progress_bar", "false", "--trainer.limit_val_batches", "1",
        "--model.init_args.image.pretrained", "false", "--model.init_args.rnn.embed_dim", "16",
        "--model.init_args.rnn.hidden_size", "16", "--model.init_args.search.max_len", "8",
        *extra,
    ]  # fmt: skip


def test_scst_from_the_cli_starts_from_a_cross_entropy_checkpoint(shapes, tmp_path):
    """Cross-entropy, then SCST from its best checkpoint (init_checkpoint). An SCST run killed
    and resumed equals an uninterrupted one: tests/test_resume.py (its history too)."""
    result = run_python(cli_fit(shapes, tmp_path, "xe", "--trainer.max_epochs", "1"), cwd=REPO)
    assert result.returncode == 0, explain(result)
    (xe,) = (tmp_path / "xe" / "version_0" / "checkpoints").glob("best-epoch=00-val_cider=*.ckpt")
    scst_args = ["--model.init_args.self_critical", "true", "--model.init_args.init_checkpoint", str(xe),
                 "--model.init_args.scst_samples", "3", "--model.init_args.lr", "0.001",
                 "--trainer.log_every_n_steps", "1"]  # fmt: skip
    result = run_python(cli_fit(shapes, tmp_path, "scst", "--trainer.max_epochs", "2", *scst_args), cwd=REPO)
    assert result.returncode == 0, explain(result)
    assert "[scst] CIDEr-D document frequencies of 60 training images" in result.stderr, explain(result)
    metrics = read_metrics(tmp_path / "scst" / "version_0" / "metrics.csv")
    for key in ("train_reward", "train_baseline", "val_cider", "val_bleu4"):
        assert metric_values(metrics, key), key
    assert len(metric_values(metrics, "val_cider")) == 2
    ckpt = torch.load(xe, map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["self_critical"] is False
    plots = tmp_path / "scst" / "version_0" / "plots"
    assert (plots / "reward.png").is_file() and (plots / "metrics.png").is_file()
    last = torch.load(tmp_path / "scst" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["hyper_parameters"]["self_critical"] is True
    assert len(last["seqcap_history"]["epochs"]) == 2  # the plots' history travels with the checkpoint
    assert len(last["seqcap_history"]["rewards"]) == len(metric_values(metrics, "train_reward"))


def test_init_checkpoint_of_another_vocabulary_is_named(shapes, tmp_path):
    other = tmp_path / "other"
    build_shapes_dataset(other, n_train=6, n_val=2, n_test=1, size=64, seed=3, progress=False)
    result = run_python(
        cli_fit(other / "dataset_shapes.json", tmp_path, "other", "--trainer.max_epochs", "1",
                "--data.init_args.batch_size", "4"),
        cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, explain(result)
    (ckpt,) = (tmp_path / "other" / "version_0" / "checkpoints").glob("best-*.ckpt")
    result = run_python(
        cli_fit(shapes, tmp_path, "bad", "--trainer.max_epochs", "1",
                "--model.init_args.self_critical", "true", "--model.init_args.init_checkpoint", str(ckpt)),
        cwd=REPO,
    )  # fmt: skip
    assert result.returncode != 0
    message = f"error: init_checkpoint {ckpt}: its vocabulary differs from the data's"
    assert message in result.stderr, explain(result)
    assert "Traceback" not in result.stderr
