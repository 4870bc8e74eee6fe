"""`python -m captioning fit -c configs/vqa/...` and `python -m captioning.vqa.cli`, as a user runs
them: two tiny checkpoints (attention and blind) trained by subprocess on a tiny shapes VQA set,
then answered from the checkpoint alone (the questions' folder is moved away first)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

from captioning.vqa import cli as answer_cli
from captioning.vqa.module import VQAModule
from captioning.vqa.predictor import Answerer
from data.builders import shapes_vqa
from data.builders.shapes import build_shapes_dataset
from tests.captioning.test_caption_cli import run_parallel
from tests.conftest import REPO, explain, run_python

CONFIG = "configs/vqa/shapes_attention.yaml"
TINY_FIT = (
    "--data.init_args.batch_size", "16",
    "--data.init_args.image_size", "64",  # block 4 (stride 16): a 4 x 4 grid, R = 16
    "--trainer.max_steps", "3",
    "--trainer.limit_val_batches", "1",
    "--trainer.num_sanity_val_steps", "0",
    "--trainer.enable_progress_bar", "false",
    "--model.init_args.image.pretrained", "false",
    "--model.init_args.rnn.embed_dim", "8",
    "--model.init_args.rnn.hidden_size", "8",
    "--model.init_args.joint_size", "16",
)  # fmt: skip
pytestmark = pytest.mark.usefixtures("one_thread_per_module")


@dataclass
class Trained:
    image: Path
    ckpt: dict[str, Path]
    answers: list[str]
    base: Path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Trained:
    base = tmp_path_factory.mktemp("vqa_cli")
    build_shapes_dataset(base / "shapes", n_train=12, n_val=3, n_test=2, size=64, progress=False)
    shapes_vqa.write(base / "questions", shapes_vqa.build(base / "shapes"))
    jobs = {}
    for kind in ("attention", "blind"):
        args = [
            "-m", "captioning", "fit", "-c", CONFIG, "--model.init_args.model", kind,
            "--data.init_args.root", str(base / "questions"),
            "--data.init_args.cache_dir", str(base / f"cache-{kind}"),
            "--trainer.default_root_dir", str(base / f"runs-{kind}"), *TINY_FIT,
        ]  # fmt: skip
        jobs[kind] = (args, REPO)
    ckpts = {}
    for kind, result in run_parallel(jobs, base / "logs", timeout=400).items():
        assert result.returncode == 0, explain(result)
        ckpt = base / f"runs-{kind}" / "shapes_vqa_attention" / "version_0" / "checkpoints" / "last.ckpt"
        assert ckpt.is_file(), explain(result)
        ckpts[kind] = ckpt
    loaded = torch.load(ckpts["attention"], map_location="cpu", weights_only=True)
    answers = loaded["seqcap"]["answers"]
    assert {"yes", "no", "1"} <= set(answers)  # the shapes answers, normalised
    image = base / "image.png"
    shutil.copy(base / "shapes" / "images" / "test_00000.png", image)
    shutil.rmtree(base / "questions")  # the checkpoint is all the answer CLI may need
    shutil.rmtree(base / "shapes")
    return Trained(image, ckpts, answers, base)


def answer(trained: Trained, *args: str, kind: str = "attention"):
    return run_python(["-m", "captioning.vqa.cli", "--checkpoint", str(trained.ckpt[kind]), *args], REPO)


def parse(stdout: str) -> dict[str, list[tuple[float, str]]]:
    """question -> [(probability, answer)] from the CLI's output."""
    out, question = {}, None
    for line in stdout.splitlines():
        if line.startswith("  "):
            p, text = line.split(maxsplit=1)
            out[question].append((float(p), text))
        else:
            question = line
            out[question] = []
    return out


def test_answer_prints_the_top_answers_with_probabilities(trained, tmp_path):
    plots = tmp_path / "plots"
    result = answer(
        trained, str(trained.image), "what colour is the star?", "is there a zebra in the picture?",
        "--top", "3", "--attention-plot", str(plots),
    )  # fmt: skip
    assert result.returncode == 0, explain(result)
    got = parse(result.stdout)
    assert list(got) == ["what colour is the star?", "is there a zebra in the picture?"]
    for pairs in got.values():
        probs = [p for p, _ in pairs]
        assert len(pairs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.001
        assert all(text in trained.answers for _, text in pairs)
    # unknown words are read as <unk>, named on stderr, and the question is still answered
    assert "words the model never saw, read as <unk>: zebra, in, picture" in result.stderr
    assert sorted(p.name for p in plots.iterdir()) == ["image-q1.png", "image-q2.png"]
    assert Image.open(plots / "image-q1.png").size[0] > 100
    again = answer(trained, str(trained.image), "how many shapes are there?", "--attention-plot", str(plots))
    assert again.returncode == 2 and "image-q1.png exists; pass --overwrite to replace it" in again.stderr
    before = (plots / "image-q1.png").read_bytes()
    out = tmp_path / "answers.txt"
    again = answer(trained, str(trained.image), "how many shapes are there?", "--attention-plot", str(plots),
                   "--overwrite", "--output", str(out))  # fmt: skip
    assert again.returncode == 0 and again.stdout == "", explain(again)
    assert (plots / "image-q1.png").read_bytes() != before  # replaced, whole
    assert out.read_text(encoding="utf-8").splitlines()[0] == "how many shapes are there?"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.txt", "plots"]


def test_the_answers_are_those_of_the_training_module(trained):
    """The Answerer (networks rebuilt from the hyperparameters) gives the training module's own
    softmax on the image's CNN grid, the module restored from the same checkpoint as Lightning does."""
    from seq2seq.training.checkpoint import build_from_hparams

    answerer = Answerer.from_checkpoint(trained.ckpt["attention"], "cpu")
    [a] = answerer.answer(trained.image, ["what shape is the red object?"], top=len(trained.answers))
    assert sum(p for _, p in a.top) == pytest.approx(1.0, abs=1e-5) and a.unknown == []
    assert a.attention.shape == (2, 16) and torch.allclose(a.attention.sum(-1), torch.ones(2))
    ckpt = torch.load(trained.ckpt["attention"], map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["image"]["pretrained"] is False  # nothing to fetch
    module = build_from_hparams(VQAModule, ckpt, "ckpt").eval()
    module.on_load_checkpoint(ckpt)
    ids, lengths = module.encode_questions(["what shape is the red object?"])
    pixels = answerer.transform(Image.open(trained.image).convert("RGB"))[None]
    with torch.inference_mode():
        probs = module(ids, lengths, module.encoder(pixels))[0].softmax(-1)[0]
    expected = sorted(zip(module.answers, probs.tolist()), key=lambda t: -t[1])
    assert [t for t, _ in a.top] == [t for t, _ in expected]
    assert [p for _, p in a.top] == pytest.approx([p for _, p in expected], abs=1e-6)


def test_bad_inputs_are_named(trained, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_text("not an image")
    code = answer_cli.main(["--checkpoint", str(trained.ckpt["attention"]), str(bad), "what?"])
    assert code == 2 and f"cannot read image {bad}" in capsys.readouterr().err
    missing = tmp_path / "nope.png"
    assert answer_cli.main(["--checkpoint", str(trained.ckpt["attention"]), str(missing), "what?"]) == 2
    assert f"cannot read image {missing}: no such file" in capsys.readouterr().err
    code = answer_cli.main(["--checkpoint", str(bad), str(trained.image), "what?"])
    assert code == 2 and f"{bad}: not a loadable seqcap checkpoint" in capsys.readouterr().err
    code = answer_cli.main([
        "--checkpoint", str(trained.ckpt["blind"]), str(trained.image), "what?",
        "--attention-plot", str(tmp_path / "p"),
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "is a 'blind' model, which has no attention to plot" in err
    assert not (tmp_path / "p").exists()


def test_images_are_normalised_as_for_the_cnn_that_was_trained(trained, tmp_path):
    """The model is rebuilt without pretrained weights, yet the images get the mean/std the trained
    CNN had: the checkpoint records them; an older checkpoint without them gets the mean/std of the
    weights it was trained from (EfficientNet-Lite0's packaged ones: (x - 127) / 128)."""
    from seq2seq.modules.pretrained import input_normalization

    ckpt = torch.load(trained.ckpt["attention"], map_location="cpu", weights_only=True)
    trained_with = input_normalization("efficientnet_lite0", False, None)  # the fit's pretrained: false
    assert (ckpt["seqcap"]["image_mean"], ckpt["seqcap"]["image_std"]) == tuple(map(list, trained_with))

    def normalize_of(meta: dict, pretrained: bool):
        changed = {
            **ckpt,
            "seqcap": meta,
            "hyper_parameters": {**ckpt["hyper_parameters"], "pretrained": pretrained},
        }
        torch.save(changed, tmp_path / "changed.ckpt")
        return Answerer.from_checkpoint(tmp_path / "changed.ckpt", "cpu").transform.transforms[-1]

    recorded = {**ckpt["seqcap"], "image_mean": [0.1, 0.2, 0.3], "image_std": [0.4, 0.5, 0.6]}
    normalize = normalize_of(recorded, pretrained=True)  # the recorded values win
    assert tuple(normalize.mean) == (0.1, 0.2, 0.3) and tuple(normalize.std) == (0.4, 0.5, 0.6)
    old = {k: v for k, v in ckpt["seqcap"].items() if k not in ("image_mean", "image_std", "task")}
    normalize = normalize_of(old, pretrained=True)
    mean, std = input_normalization("efficientnet_lite0", True, None)
    assert tuple(normalize.mean) == tuple(mean) and tuple(normalize.std) == tuple(std)
    assert tuple(mean) != tuple(trained_with[0])


def test_a_bad_data_option_ends_the_fit_with_one_error_line(tmp_path):
    """The data module refuses the option in its constructor, where LightningCLI wraps the error
    in its own: the CLI still prints just ours."""
    result = run_python(
        ["-m", "captioning", "fit", "-c", CONFIG, "--data.init_args.root", str(tmp_path),
         "--data.init_args.images", "null"],
        REPO,
    )  # fmt: skip
    assert result.returncode == 2, explain(result)
    assert result.stderr.strip().splitlines()[-1] == (
        "error: VQADataModule: images=None, image_pattern=None: give one, either images (a JSON map "
        "image_id -> path per split) or images: null with image_pattern"
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("question", ["", "   \t ", "??"])
def test_an_empty_question_is_refused(trained, tmp_path, capsys, question):
    """By the CLI before the checkpoint is read (exit 2, one error line), and by the Answerer
    (a ValueError naming the question), instead of being answered."""
    missing = tmp_path / "never-read.ckpt"
    code = answer_cli.main(["--checkpoint", str(missing), str(trained.image), "what colour?", question])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err == f"error: question 2 ({question!r}) is empty: ask something about the image, " \
        "e.g. 'what colour is the star?'\n"  # fmt: skip
    answerer = Answerer.from_checkpoint(trained.ckpt["blind"], "cpu")
    with pytest.raises(ValueError, match=r"question 1 .* is empty"):
        answerer.answer(trained.image, [question])
    assert answerer.answer(trained.image, ["how many shapes are there?"], top=1)[0].top


def test_the_image_is_never_an_output(trained, tmp_path, capsys):
    image = tmp_path / "image.png"
    shutil.copy(trained.image, image)
    before = image.read_bytes()
    code = answer_cli.main(["--checkpoint", str(trained.ckpt["attention"]), str(image), "what?",
                            "--output", str(image), "--overwrite"])  # fmt: skip
    assert code == 2 and "is the same file as the input" in capsys.readouterr().err
    assert image.read_bytes() == before


def test_an_ensemble_answers_with_the_mean_probability(trained, tmp_path):
    """Attention + blind: each answer's probability is the mean of the two models'; two copies of
    one checkpoint answer as it does (the CLI, `--checkpoint A.ckpt B.ckpt IMAGE QUESTION`)."""
    questions = ["what colour is the star?", "how many shapes are there?"]
    one = Answerer.from_checkpoint(trained.ckpt["attention"], "cpu")
    blind = Answerer.from_checkpoint(trained.ckpt["blind"], "cpu")
    pair = Answerer.from_checkpoint([trained.ckpt["attention"], trained.ckpt["blind"]], "cpu")
    k = len(trained.answers)
    found = [m.answer(trained.image, questions, top=k) for m in (one, blind, pair)]
    for a, b, both in zip(*found):
        pa, pb = dict(a.top), dict(b.top)
        for text, p in both.top:
            assert p == pytest.approx((pa[text] + pb[text]) / 2, abs=1e-6)
    copy = shutil.copy(trained.ckpt["attention"], tmp_path / "copy.ckpt")
    alone = answer(trained, trained.image.as_posix(), *questions)
    twice = run_python(
        ["-m", "captioning.vqa.cli", "--checkpoint", str(trained.ckpt["attention"]), str(copy),
         str(trained.image), *questions],
        REPO,
    )  # fmt: skip
    int8 = answer(trained, trained.image.as_posix(), *questions, "--quantize", "int8")
    assert alone.returncode == 0 and twice.returncode == 0 and int8.returncode == 0, explain(int8)
    for q in questions:  # int8 products: the same answers, probabilities close
        assert [t for _, t in parse(int8.stdout)[q]][:2] == [t for _, t in parse(alone.stdout)[q]][:2]
    assert parse(twice.stdout).keys() == parse(alone.stdout).keys()
    for q in questions:
        for (p, text), (r, ref) in zip(parse(twice.stdout)[q], parse(alone.stdout)[q]):
            assert text == ref and p == pytest.approx(r, abs=2e-3)
