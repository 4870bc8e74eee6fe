"""Ensembles (seq2seq.combine.ensemble, Predictor.from_checkpoint with several paths) and a target
language model in decoding (seq2seq.lm.rescoring: n-best rescoring, shallow fusion).

The equivalences: an ensemble of one model is the model; an ensemble of two copies of one
checkpoint gives its tokens and scores; LM weight 0 changes nothing, in either mode. The
arithmetic: an ensemble's step is the log of the mean probability; a rescored score is
(log P_tm + W log P_lm) / lp. Refused mixes name the difference. The CLIs run as a user runs them,
on the session's trained translator (conftest.trained_run) and an LM trained here on its target side.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from data.datamodules.text import TextDataModule
from seq2seq import combine
from seq2seq.lm.module import LanguageModule
from seq2seq.lm.rescoring import LanguageModelScoring
from seq2seq.modules.rnn import RecurrentOptions
from seq2seq.predictor import Predictor
from seq2seq.search import length_penalty
from seq2seq.training.checkpoint import CheckpointError, load_checkpoint
from seq2seq.translation.predictor import Translator
from tests.conftest import REPO, explain, run_python

pytestmark = pytest.mark.usefixtures("one_thread_per_module")

SENTENCES = ["w1 w2 w3", "w4 w5 w6 w7 w8", "w9 w0 w9 w1", "w2 w2 w3 w5 w7 w1", "", "w3 w3 w3"]


def outputs(translator: Translator, **kw) -> list[list[tuple[list[str], float]]]:
    return [[(t.tokens, t.score) for t in hyps] for hyps in translator.translate(SENTENCES, **kw)]


def assert_same(a, b, tol: float = 1e-4) -> None:
    """Same tokens in the same order, scores equal to float tolerance."""
    assert [[t for t, _ in hyps] for hyps in a] == [[t for t, _ in hyps] for hyps in b]
    for hyps_a, hyps_b in zip(a, b):
        for (_, s), (_, r) in zip(hyps_a, hyps_b):
            assert s == pytest.approx(r, abs=tol)


# -- combine.ensemble and combine.fuse on step functions ----------------------------------------


def toy_step(table: torch.Tensor):
    """A step function whose logits depend on the previous token only: table (V, V)."""

    def step(prev, state):
        return table[prev], {"count": state["count"] + 1}

    return step


def test_ensemble_of_one_is_the_model_itself():
    start = (toy_step(torch.randn(6, 6)), {"count": torch.zeros(2)})
    assert combine.ensemble([start]) is start


def test_ensemble_step_is_the_log_of_the_mean_probability():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 6, generator=g), torch.randn(6, 6, generator=g)
    step, state = combine.ensemble(
        [(toy_step(a), {"count": torch.zeros(3)}), (toy_step(b), {"count": torch.ones(3)})]
    )
    prev = torch.tensor([0, 4, 5])
    log_probs, state = step(prev, state)
    mean = (a[prev].softmax(-1) + b[prev].softmax(-1)) / 2
    torch.testing.assert_close(log_probs, mean.log())
    assert [s["count"].tolist() for s in state["members"]] == [[1, 1, 1], [2, 2, 2]]


def test_fusion_adds_the_weighted_lm_log_probabilities():
    g = torch.Generator().manual_seed(1)
    tm, lm = torch.randn(6, 6, generator=g), torch.randn(6, 6, generator=g).log_softmax(-1)
    step, state = combine.fuse(
        (toy_step(tm), {"count": torch.zeros(2)}), (toy_step(lm), {"count": torch.zeros(2)}), 0.5
    )
    prev = torch.tensor([1, 2])
    scores, _ = step(prev, state)
    torch.testing.assert_close(scores, tm[prev].log_softmax(-1) + 0.5 * lm[prev])


# -- the Translator: ensembles of checkpoints ------------------------------------------------------


@pytest.fixture(scope="module")
def single(trained_run) -> Translator:
    return Translator.from_checkpoint(trained_run.last_ckpt, "cpu")


@pytest.mark.parametrize("kw", [{"beam_size": 3, "n_best": 3}, {"beam_size": 1}], ids=["beam3", "beam1"])
def test_two_copies_of_a_checkpoint_translate_as_the_checkpoint(trained_run, single, kw):
    pair = Translator.from_checkpoint([trained_run.last_ckpt, trained_run.last_ckpt], "cpu")
    assert len(pair.members) == 2
    assert_same(outputs(pair, **kw), outputs(single, **kw))


def test_an_ensemble_of_two_models_decodes_their_mean(trained_run, single):
    """best + last: the ensemble's best hypothesis scores, under the mean of the two models'
    probabilities rescored by hand, what the search says."""
    pair = Translator.from_checkpoint([trained_run.last_ckpt, trained_run.best_ckpt], "cpu")
    other = Translator.from_checkpoint(trained_run.best_ckpt, "cpu")
    for sentence, hyps in zip(SENTENCES[:4], pair.translate(SENTENCES[:4], beam_size=3, alpha=0.6)):
        ids = pair.tgt_vocab.encode(hyps[0].tokens) + [3]  # + <eos>
        src = torch.tensor([pair.encode(sentence)[0]])
        with torch.no_grad():
            logs = [
                model(src, torch.tensor([src.shape[1]]), torch.tensor([[2] + ids[:-1]]))[0].log_softmax(-1)
                for model in (single.model, other.model)
            ]
        mean = torch.logsumexp(torch.stack(logs), 0) - math.log(2)
        mean[:, [0, 2]] = float("-inf")  # <pad> and <bos> are banned after the models are combined
        total = mean.log_softmax(-1).gather(1, torch.tensor(ids)[:, None]).sum().item()
        assert hyps[0].score == pytest.approx(total / length_penalty(len(ids), 0.6), abs=1e-4)


def changed_copy(path: Path, out: Path, change) -> Path:
    ckpt = load_checkpoint(path)
    change(ckpt)
    torch.save(ckpt, out)
    return out


def test_an_ensemble_refuses_other_vocabularies_and_tasks(trained_run, tmp_path):
    def rename(ckpt):
        ckpt["seqcap"]["tgt_vocab"][7] = "zzz"

    other = changed_copy(trained_run.last_ckpt, tmp_path / "other.ckpt", rename)
    with pytest.raises(
        CheckpointError, match=r"other\.ckpt: cannot be ensembled with .*tgt_vocab id 7: .* 'zzz'"
    ):
        Translator.from_checkpoint([trained_run.last_ckpt, other], "cpu")
    lm = REPO / "tests" / "fixtures" / "legacy" / "lm.ckpt"
    with pytest.raises(CheckpointError, match=r"lm\.ckpt: a lm checkpoint, but .* is a translation one"):
        Predictor.from_checkpoint([trained_run.last_ckpt, lm], "cpu")


# -- a language model of the target side ------------------------------------------------------------


@pytest.fixture(scope="module")
def target_lm(trained_run, tmp_path_factory) -> Path:
    """A word LM on the trained translator's target side (space-tokenized, as the translator's)."""
    folder = tmp_path_factory.mktemp("target_lm")
    data = trained_run.data_dir
    pl.seed_everything(0, verbose=False)
    dm = TextDataModule(
        train_files=[str(data / "train.tgt")], val_files=[str(data / "dev.tgt")], word_tokenizer="space",
        batch_size=16, tbptt_steps=None,
    )  # fmt: skip
    module = LanguageModule(
        dm.vocab_size, rnn=RecurrentOptions(num_layers=1, dropout=0.0, embed_dim=16, hidden_size=32), lr=0.01
    )
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, max_steps=60, default_root_dir=str(folder),
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    trainer.save_checkpoint(folder / "lm.ckpt")
    return folder / "lm.ckpt"


@pytest.mark.parametrize("mode", ["rescore", "fusion"])
def test_lm_weight_zero_changes_nothing(trained_run, single, target_lm, mode):
    with_lm = Translator.from_checkpoint(trained_run.last_ckpt, "cpu")
    with_lm.use_lm(LanguageModelScoring.from_checkpoint(target_lm, 0.0, mode))
    assert_same(outputs(with_lm, beam_size=3, n_best=2), outputs(single, beam_size=3, n_best=2), tol=0)


def test_rescoring_reorders_the_beam_by_the_combined_score(trained_run, single, target_lm):
    """Each rescored score is (beam score) + W log P_lm / lp(|y| + 1); the list is sorted by it and
    is the beam's list (the same hypotheses)."""
    weight, alpha = 2.0, 0.6
    lm = LanguageModelScoring.from_checkpoint(target_lm, weight, "rescore")
    with_lm = Translator.from_checkpoint(trained_run.last_ckpt, "cpu")
    with_lm.use_lm(lm)
    plain = single.translate(SENTENCES[:4], beam_size=4, n_best=4, alpha=alpha)
    rescored = with_lm.translate(SENTENCES[:4], beam_size=4, n_best=4, alpha=alpha)
    for before, after in zip(plain, rescored):
        assert sorted(t.text for t in before) == sorted(t.text for t in after)
        expected = {}
        for t in before:
            lm_logprob = lm.lm.score([t.text])[0][0]
            expected[t.text] = t.score + weight * lm_logprob / length_penalty(len(t.tokens) + 1, alpha)
        assert [t.score for t in after] == sorted((t.score for t in after), reverse=True)
        for t in after:
            assert t.score == pytest.approx(expected[t.text], abs=1e-4)


def test_fusion_scores_each_step_with_the_lm(trained_run, target_lm):
    """Greedy with fusion: the chosen words' summed (log p_tm + W log p_lm) is the score."""
    weight = 0.5
    fused = Translator.from_checkpoint(trained_run.last_ckpt, "cpu")
    lm = LanguageModelScoring.from_checkpoint(target_lm, weight, "fusion")
    fused.use_lm(lm)
    [hyp] = fused.translate(["w1 w2 w3 w4"], beam_size=1)[0]
    ids = fused.tgt_vocab.encode(hyp.tokens) + [3]
    src = torch.tensor([fused.encode("w1 w2 w3 w4")[0]])
    with torch.no_grad():
        logits = fused.model(src, torch.tensor([src.shape[1]]), torch.tensor([[2] + ids[:-1]]))[0]
        lm_logits, _ = lm.lm.model(lm.index[torch.tensor([2] + ids[:-1])][None])
    step_scores = logits.log_softmax(-1) + weight * lm_logits[0].log_softmax(-1)[:, lm.index]
    step_scores[:, [0, 2]] = float("-inf")
    total = step_scores.log_softmax(-1).gather(1, torch.tensor(ids)[:, None]).sum().item()
    assert hyp.score == pytest.approx(total / length_penalty(len(ids), 0.6), abs=1e-4)


def test_fusion_refuses_an_lm_that_tokenizes_otherwise(trained_run, target_lm, tmp_path):
    def lowercase(ckpt):
        ckpt["seqcap"]["tokenizer"] = {**ckpt["seqcap"]["tokenizer"], "lowercase": True}

    other = changed_copy(target_lm, tmp_path / "lower.ckpt", lowercase)
    translator = Translator.from_checkpoint(trained_run.last_ckpt, "cpu")
    with pytest.raises(CheckpointError, match="shallow fusion needs the language model to tokenize as"):
        translator.use_lm(LanguageModelScoring.from_checkpoint(other, 0.5, "fusion"))
    translator.use_lm(LanguageModelScoring.from_checkpoint(other, 0.5, "rescore"))  # rescoring reads text


# -- the CLIs, as a user runs them ------------------------------------------------------------------


def test_translate_and_evaluate_cli_take_several_checkpoints_and_an_lm(trained_run, target_lm, tmp_path):
    ckpt = str(trained_run.last_ckpt)
    text = "\n".join(SENTENCES) + "\n"
    base = ["-m", "seqcap", "translate", "--beam-size", "3", "--device", "cpu"]
    alone = run_python([*base, "--checkpoint", ckpt], cwd=REPO, input=text)
    assert alone.returncode == 0, explain(alone)
    pair = run_python([*base, "--checkpoint", ckpt, ckpt], cwd=REPO, input=text)
    assert pair.returncode == 0, explain(pair)
    assert pair.stdout == alone.stdout
    zero = run_python(
        [*base, "--checkpoint", ckpt, "--lm", str(target_lm), "--lm-weight", "0"], cwd=REPO, input=text
    )
    assert zero.returncode == 0 and zero.stdout == alone.stdout, explain(zero)
    fused = run_python(
        [*base, "--checkpoint", ckpt, "--lm", str(target_lm), "--lm-mode", "fusion", "--n-best", "2"],
        cwd=REPO, input=text,
    )  # fmt: skip
    assert fused.returncode == 0, explain(fused)
    assert len(fused.stdout.splitlines()) == 2 * len(SENTENCES)
    bad = run_python(
        [*base, "--checkpoint", ckpt, str(REPO / "tests/fixtures/legacy/lm.ckpt")], cwd=REPO, input=text
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr, (
        explain(bad)
    )
    src, ref = tmp_path / "src.txt", tmp_path / "ref.txt"
    shutil.copy(trained_run.data_dir / "test.src", src)
    shutil.copy(trained_run.data_dir / "test.tgt", ref)
    scored = run_python(
        ["-m", "seqcap", "evaluate", "--checkpoint", ckpt, ckpt, "--src", str(src), "--ref", str(ref),
         "--device", "cpu", "--lm", str(target_lm), "--lm-weight", "0.2"],
        cwd=REPO,
    )  # fmt: skip
    assert scored.returncode == 0, explain(scored)
    assert '"checkpoints": 2' in scored.stdout and '"lm_weight": 0.2' in scored.stdout


def test_quantize_int8_on_the_predictor_and_the_cli(trained_run, single):
    """quantize="int8" (--quantize int8): the decoder's products run in int8 (its int8 projections
    are set), the translations agree with fp32 on most sentences; an ensemble quantizes each model."""
    int8 = Predictor.from_checkpoint([trained_run.last_ckpt, trained_run.last_ckpt], quantize="int8")
    assert int8.device.type == "cpu" and all(m.model.decoder.int8 is not None for m in int8.members)
    assert single.model.decoder.int8 is None
    same = [a[0][0] == b[0][0] for a, b in zip(outputs(int8, beam_size=3), outputs(single, beam_size=3))]
    assert sum(same) >= 0.8 * len(same)
    text = "\n".join(SENTENCES) + "\n"
    args = ["-m", "seqcap", "translate", "--checkpoint", str(trained_run.last_ckpt), "--beam-size", "3"]
    result = run_python([*args, "--quantize", "int8"], cwd=REPO, input=text)
    assert result.returncode == 0, explain(result)
    assert result.stdout.splitlines() == [" ".join(hyps[0][0]) for hyps in outputs(int8, beam_size=3)]
    with pytest.raises(CheckpointError, match="int8 quantization decodes on the CPU"):
        Predictor.from_checkpoint(trained_run.last_ckpt, device="meta", quantize="int8")


def test_lm_rescoring_experiment_picks_w_on_dev(trained_run, target_lm, single, tmp_path):
    """`seqcap experiment lm_rescoring --lm LM`: W is the best on dev for each mode (ties: the
    smaller), the translator-alone rows are its own BLEU, and CSV, PNG and table are written."""
    import csv

    from seq2seq.training.metrics import sacre_bleu

    out = tmp_path / "exp"
    result = run_python(
        ["-m", "seqcap", "experiment", "lm_rescoring", "--checkpoint", str(trained_run.last_ckpt),
         "--lm", str(target_lm), "--out", str(out), "--data-dir", str(trained_run.data_dir),
         "--src-lang", "src", "--tgt-lang", "tgt", "--weights", "0,0.5,2", "--beam-size", "3"],
        cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, explain(result)
    rows = list(csv.DictReader(open(out / "lm_rescoring.csv")))
    assert sorted({r["mode"] for r in rows}) == ["fusion", "none", "rescore"]
    test_src = (trained_run.data_dir / "test.src").read_text().splitlines()
    test_ref = (trained_run.data_dir / "test.tgt").read_text().splitlines()
    alone = sacre_bleu([h[0].text for h in single.translate(test_src, beam_size=3)], test_ref)[0]
    [none_test] = [r for r in rows if r["mode"] == "none" and r["split"] == "test"]
    assert float(none_test["bleu"]) == pytest.approx(alone, abs=0.01)
    for mode in ("rescore", "fusion"):
        dev = {
            float(r["weight"]): float(r["bleu"]) for r in rows if r["mode"] == mode and r["split"] == "dev"
        }
        assert sorted(dev) == [0.0, 0.5, 2.0]
        [test] = [r for r in rows if r["mode"] == mode and r["split"] == "test"]
        assert float(test["weight"]) == max(dev, key=lambda w: (dev[w], -w))
    assert (out / "lm_rescoring.png").stat().st_size > 5000
    assert "| translator alone | 0 |" in (out / "lm_rescoring.md").read_text()


def test_bench_decoding_prints_every_part(trained_run, target_lm, capsys):
    """`seqcap bench decoding` on the tiny model, with copies where two models are asked for: an
    ensemble of a model with itself and the average of two copies score the model's BLEU, W = 0 is
    the only weight so it is chosen, and the ONNX loop gives PyTorch's outputs."""
    from seq2seq.bench_decoding import main as bench

    ckpt, data = str(trained_run.last_ckpt), trained_run.data_dir
    code = bench([
        "--checkpoint", ckpt, "--second", ckpt, "--average", ckpt, ckpt, "--lm", str(target_lm),
        "--weights", "0", "--src", str(data / "test.src"), "--ref", str(data / "test.tgt"),
        "--dev-src", str(data / "dev.src"), "--dev-ref", str(data / "dev.tgt"), "--beam-size", "3",
        "--speed-sentences", "20", "--repeats", "1",
    ])  # fmt: skip
    table = capsys.readouterr().out.split("| part |")[1]
    assert code == 0
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:] if line]
    bleu = {(r[0], r[1].split(":")[0]): r[2] for r in rows}
    a = bleu[("ensemble", f"A {ckpt}")]
    assert bleu[("ensemble", "A + B (mean probability)")] == a
    assert bleu[("average", "average of the last 2")] == bleu[("average", "last of 2")] == a
    assert bleu[("lm", "rescore, W = 0.0 (best on dev)")] == bleu[("lm", "no LM")] == a
    [int8] = [r for r in rows if r[0] == "int8" and r[1].startswith("int8")]
    assert float(int8[2]) > 0 and float(int8[3]) > 0 and "identical" in int8[4]
    onnx = [r for r in rows if r[0] == "onnx" and "onnxruntime" in r[1]]
    assert len(onnx) == 2 and all("(100.00%)" in r[4] for r in onnx)
