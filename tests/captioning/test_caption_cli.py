"""`python -m captioning.captioner.cli`, `python -m captioning.captioner.evaluate` and the Captioner API, on
two tiny checkpoints (ShowTell and ShowAttendTell) trained once by `python -m captioning fit` on a tiny
shapes set. After training the dataset folder is moved away, so every use of a checkpoint here
shows that it is self-contained.

The subprocess runs (the two fits, then two CLI runs) start in pairs: each
is mostly Python start-up and one-thread work, so the 2-core machine runs two at once. The
error paths that stop before any model work are run in-process through `main(argv)`.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import shutil
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

from captioning.captioner import cli as caption_cli
from captioning.captioner import evaluate as evaluate_cli
from captioning.captioner import metrics as caption_metrics_module
from captioning.captioner.cli import plot_names
from captioning.captioner.metrics import caption_metrics
from captioning.captioner.predictor import Captioner, image_problem, load_captioning_checkpoint
from data.builders.shapes import build_shapes_dataset
from data.core.images import ImageFileError, load_rgb
from data.core.vocab import BOS, EOS, PAD, SPECIALS
from seq2seq import search
from seq2seq.search import SearchOptions
from seq2seq.training.checkpoint import CheckpointError
from seq2seq.training.metrics import nltk_bleu
from tests.conftest import REPO, cli_env, explain

CONFIGS = {
    "showtell": "configs/captioning/shapes_showtell.yaml",
    "attention": "configs/captioning/shapes_attention.yaml",
}
MAX_LEN = 8
N_TEST = 3
# no pretrained weights (nothing is loaded), tiny sizes: each fit takes a few seconds of compute
TINY_FIT = (
    "--data.init_args.batch_size", "16",  # 40 training pairs: 2 steps
    "--data.init_args.image_size", "64",  # EfficientNet-Lite0's stride 32: a 2 x 2 grid, HW = 4
    "--trainer.max_steps", "2",
    "--trainer.limit_val_batches", "1",
    "--trainer.num_sanity_val_steps", "0",
    "--trainer.enable_progress_bar", "false",
    "--model.init_args.image.pretrained", "false",
    "--model.init_args.rnn.embed_dim", "16",
    "--model.init_args.rnn.hidden_size", "16",
    "--model.init_args.search.max_len", str(MAX_LEN),
)  # fmt: skip
GRID_HW = 4
NOT_WORDS = set(SPECIALS) - {"<unk>"}  # "<unk>" is a documented possible caption word


pytestmark = pytest.mark.usefixtures("one_thread_per_module")  # conftest: torch on one thread


def run_parallel(jobs: dict[str, tuple[list[str], Path]], logs: Path, timeout: float = 300):
    """`python ARGS` for every job at once (cwd per job); {name: CompletedProcess}. Output goes to
    files, so no process can block on a full pipe while another is waited for."""
    logs.mkdir(parents=True, exist_ok=True)
    procs = {}
    for name, (args, cwd) in jobs.items():
        out, err = open(logs / f"{name}.out", "w"), open(logs / f"{name}.err", "w")
        proc = subprocess.Popen(
            [sys.executable, *args], cwd=cwd, stdout=out, stderr=err, text=True, env=cli_env()
        )
        procs[name] = (proc, out, err)
    results = {}
    for name, (proc, out, err) in procs.items():
        try:
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            out.close()
            err.close()
        stdout = (logs / f"{name}.out").read_text()
        stderr = (logs / f"{name}.err").read_text()
        results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return results


@dataclass
class Trained:
    data: Path  # the dataset's folder now (moved away from where it was trained)
    json: Path  # data / dataset_shapes.json
    test_images: list[Path]
    ckpt: dict[str, Path]  # "showtell" / "attention" -> last.ckpt
    vocab: dict[str, list[str]]
    gone: Path  # the folder the fits read, which no longer exists


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Trained:
    base = tmp_path_factory.mktemp("captioning_cli")
    data = base / "data"
    build_shapes_dataset(data, n_train=8, n_val=2, n_test=N_TEST, size=64, progress=False)
    jobs = {}
    for kind, config in CONFIGS.items():
        args = [
            "-m", "captioning", "fit", "-c", config,
            "--data.init_args.source", str(data / "dataset_shapes.json"),
            "--data.init_args.cache_dir", str(base / f"cache-{kind}"),
            "--trainer.default_root_dir", str(base / f"runs-{kind}"),
            *TINY_FIT,
        ]  # fmt: skip
        jobs[kind] = (args, REPO)
    jobs["attention"][0].extend(["--model.init_args.model", "attention"])  # the config's, said again
    results = run_parallel(jobs, base / "logs", timeout=400)
    ckpts, vocab = {}, {}
    for kind, result in results.items():
        assert result.returncode == 0, explain(result)
        run_name = Path(CONFIGS[kind]).stem
        ckpt = base / f"runs-{kind}" / run_name / "version_0" / "checkpoints" / "last.ckpt"
        assert ckpt.is_file(), explain(result)
        loaded = torch.load(ckpt, map_location="cpu", weights_only=True)
        assert loaded["hyper_parameters"]["model"] == kind
        ckpts[kind], vocab[kind] = ckpt, loaded["seqcap"]["vocab"]
    moved = base / "data-moved-away"
    shutil.move(str(data), str(moved))
    test_images = sorted((moved / "images").glob("test_*.png"))
    assert len(test_images) == N_TEST
    return Trained(moved, moved / "dataset_shapes.json", test_images, ckpts, vocab, data)


@dataclass
class CliRuns:
    fresh: Path  # the cwd of the caption run: a copy of the attention checkpoint and images, nothing else
    attention_inputs: list[str]  # as given on its command line (relative to fresh)
    attention: subprocess.CompletedProcess
    evaluate: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def cli(trained, tmp_path_factory) -> CliRuns:
    """The CLIs as a user runs them, side by side: captions with attention plots from a folder
    that holds only the checkpoint and the images, and the test-set BLEU."""
    base = tmp_path_factory.mktemp("cli_runs")
    fresh = base / "fresh"  # no dataset, no config, no repository
    (fresh / "one").mkdir(parents=True)
    (fresh / "two").mkdir()
    shutil.copy(trained.ckpt["attention"], fresh / "model.ckpt")
    shutil.copy(trained.test_images[0], fresh / "one" / "pic.png")
    shutil.copy(trained.test_images[1], fresh / "two" / "pic.png")  # the same stem again
    shutil.copy(trained.test_images[2], fresh / "third.png")
    attention_inputs = ["one/pic.png", "two/pic.png", "third.png"]
    jobs = {
        "attention": (
            ["-m", "captioning.captioner.cli", "--checkpoint", "model.ckpt", *attention_inputs,
             "--greedy", "--attention-plot", "plots", "--device", "cpu"],
            fresh,
        ),
        "evaluate": (
            ["-m", "captioning.captioner.evaluate", "--checkpoint", str(trained.ckpt["showtell"]),
             "--data", str(trained.json), "--split", "test", "--device", "cpu"],
            base,
        ),
    }  # fmt: skip
    results = run_parallel(jobs, base / "logs")
    return CliRuns(fresh, attention_inputs, results["attention"], results["evaluate"])


@pytest.fixture(scope="module")
def load_captioner():
    """Captioner.from_checkpoint on the CPU, once per checkpoint file."""
    cache: dict[str, Captioner] = {}

    def load(path) -> Captioner:
        key = str(Path(path).resolve())
        if key not in cache:
            cache[key] = Captioner.from_checkpoint(path, device="cpu")
        return cache[key]

    return load


def parse_lines(stdout: str) -> list[tuple[str, list[str]]]:
    """`path<TAB>caption` lines -> [(path, words)], checking the format of each line."""
    assert stdout.endswith("\n"), repr(stdout)
    rows = []
    for line in stdout.splitlines():
        fields = line.split("\t")
        assert len(fields) == 2, repr(line)
        path, text = fields
        words = text.split(" ") if text else []
        assert " ".join(words) == text and all(words), f"not single-space separated: {text!r}"
        rows.append((path, words))
    return rows


def assert_vocabulary_words(words: list[str], vocab: list[str]) -> None:
    assert set(words) <= set(vocab), set(words) - set(vocab)
    assert not set(words) & NOT_WORDS, words


def run_main(main, argv: list, capsys) -> tuple[int, str, str]:
    """A CLI's main(argv) in this process, on the CPU: (exit status, stdout, stderr)."""
    rc = main([*map(str, argv), "--device", "cpu"])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def decoded(monkeypatch) -> list[dict]:
    """The arguments of every seq2seq.search.decode call while the test runs (defaults filled
    in, the SearchOptions' fields among them): what the flags of a CLI became by the time they
    reached the decoder."""
    calls = []
    real, signature = search.decode, inspect.signature(search.decode)

    def spy(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        calls.append({**bound.arguments, **dataclasses.asdict(bound.arguments["search"])})
        return real(*args, **kwargs)

    monkeypatch.setattr(search, "decode", spy)
    return calls


# -- python -m captioning.captioner.cli --------------------------------------------------------------


def test_cli_prints_one_line_per_image_in_input_order_with_vocabulary_words(cli, trained):
    assert cli.attention.returncode == 0, explain(cli.attention)
    rows = parse_lines(cli.attention.stdout)
    assert [path for path, _ in rows] == cli.attention_inputs
    for _, words in rows:
        assert 1 <= len(words) <= MAX_LEN  # the model's max_len is the default limit
        assert_vocabulary_words(words, trained.vocab["attention"])


def _pixels_by_hand(path: Path, size: int, mean, std) -> torch.Tensor:
    """An image file -> the (3, H, W) input of the CNN, without torchvision: RGB bytes / 255,
    minus mean, over std (the shapes images are drawn at the checkpoint's size: no resize)."""
    import numpy as np

    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    assert rgb.shape == (size, size, 3)
    x = torch.from_numpy(rgb).permute(2, 0, 1)
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def _beam_by_hand(model, features: torch.Tensor, beam_size: int, max_len: int) -> tuple[list[int], float]:
    """Textbook beam search for one image over the network's own init_state/step, one beam at a
    time: each step ranks every continuation of the live beams; among the best 2K, an <eos> in
    the first K finishes its beam, the best K others live on; at max_len the K best finish as
    they are; done at K finished. <pad> and <bos> are never words. -> (ids, sum of log-probs)."""
    live = [([], 0.0, model.init_state(features))]
    finished: list[tuple[list[int], float]] = []
    for t in range(max_len):
        candidates = []
        for words, score, state in live:
            logits, new_state = model.step(torch.tensor([words[-1] if words else BOS]), state)
            logits[0, [PAD, BOS]] = float("-inf")
            log_probs = torch.log_softmax(logits[0].double(), -1).tolist()
            candidates += [(score + lp, words, w, new_state) for w, lp in enumerate(log_probs)]
        candidates.sort(key=lambda c: -c[0])
        best = candidates[: 2 * beam_size]
        last = t + 1 == max_len
        for score, words, w, _ in best[:beam_size]:
            if w == EOS or last:
                finished.append((words if w == EOS else words + [w], score))
        if len(finished) >= beam_size or last:
            break
        live = [(words + [w], score, state) for score, words, w, state in best if w != EOS][:beam_size]
    return max(finished, key=lambda f: f[1])


def test_cli_beam_caption_equals_a_beam_search_written_out_by_hand(trained, capsys, load_captioner):
    """Default decoding is beam search, size 3, to the model's max_len: the CLI's captions (in
    the order given, not sorted) are those of a beam search written out here over the network's
    step function, on images preprocessed here from the pixels and the checkpoint's image size;
    the Python API gives the same words, with the hand search's score."""
    inputs = [str(p) for p in reversed(trained.test_images)]
    rc, out, err = run_main(caption_cli.main, ["--checkpoint", trained.ckpt["showtell"], *inputs], capsys)
    assert rc == 0, err
    rows = parse_lines(out)
    assert [path for path, _ in rows] == inputs

    from data.core.images import IMAGENET_MEAN, IMAGENET_STD

    ckpt = load_captioning_checkpoint(trained.ckpt["showtell"])
    assert ckpt["hyper_parameters"]["image"]["pretrained"] is False  # a random CNN: ImageNet mean/std
    size, itos = ckpt["seqcap"]["image_size"], ckpt["seqcap"]["vocab"]
    captioner = load_captioner(trained.ckpt["showtell"])
    by_hand = []
    with torch.no_grad():
        for path in inputs:
            pixels = _pixels_by_hand(Path(path), size, IMAGENET_MEAN, IMAGENET_STD)
            features = captioner.encoder(pixels[None])
            ids, score = _beam_by_hand(captioner.model, features, beam_size=3, max_len=MAX_LEN)
            by_hand.append(([itos[i] for i in ids], score))
    assert [words for _, words in rows] == [words for words, _ in by_hand]
    for _, words in rows:
        assert 1 <= len(words) <= MAX_LEN
        assert_vocabulary_words(words, trained.vocab["showtell"])

    api = load_captioner(trained.ckpt["showtell"]).caption(inputs, method="beam", beam_size=3)
    assert [(c.source, c.tokens) for c in api] == rows
    assert [c.score for c in api] == pytest.approx([score for _, score in by_hand], abs=1e-4)


def test_checkpoint_alone_captions_in_a_fresh_folder_like_the_api(cli, trained, load_captioner):
    """The attention run had only a copy of the checkpoint and of the images in its cwd (the data
    folder the fit read is gone); its greedy captions are the API's greedy captions."""
    assert not trained.gone.exists()
    assert cli.attention.returncode == 0, explain(cli.attention)
    rows = parse_lines(cli.attention.stdout)
    captioner = load_captioner(cli.fresh / "model.ckpt")
    assert captioner.has_attention and captioner.max_len == MAX_LEN
    expected = captioner.caption([cli.fresh / p for p in cli.attention_inputs], method="greedy")
    assert [words for _, words in rows] == [c.tokens for c in expected]
    # one/pic.png and test image 0 are the same bytes: the same caption
    original = load_captioner(trained.ckpt["attention"]).caption([trained.test_images[0]], method="greedy")
    assert rows[0][1] == original[0].tokens


def test_cli_attention_plot_writes_one_png_per_image_with_distinct_names(cli):
    assert cli.attention.returncode == 0, explain(cli.attention)
    rows = parse_lines(cli.attention.stdout)
    names = plot_names(cli.attention_inputs)
    assert names == ["pic.png", "pic-2.png", "third.png"]
    plots = cli.fresh / "plots"
    assert sorted(p.name for p in plots.iterdir()) == sorted(names)
    for name, (_, words) in zip(names, rows):
        path = plots / name
        assert path.stat().st_size > 5000
        with Image.open(path) as img:
            img.load()
            assert img.format == "PNG"
            width, height = img.size
        # the image panel then one panel per word, at most 5 a row, 2.2 inches (220 px) a panel
        panels = 1 + len(words)
        cols = min(5, panels)
        rows_ = -(-panels // cols)
        assert abs(width - 220 * cols) <= 1, (name, img.size, words)
        assert abs(height - rows_ * 255) <= 1, (name, img.size, words)


def test_cli_missing_image_exits_2_naming_it_and_prints_nothing(trained, tmp_path, capsys):
    missing = tmp_path / "no-such-image.png"
    rc, out, err = run_main(
        caption_cli.main, ["--checkpoint", trained.ckpt["showtell"], trained.test_images[0], missing], capsys
    )
    assert rc == 2 and out == ""
    assert f"error: cannot read image {missing}" in err
    assert "--skip-bad" in err  # the way out


def test_cli_beam_size_1_equals_greedy(trained, capsys, decoded):
    images = [str(p) for p in trained.test_images]
    for kind in ("showtell", "attention"):
        ckpt = trained.ckpt[kind]
        rc, greedy, err = run_main(caption_cli.main, ["--checkpoint", ckpt, *images, "--greedy"], capsys)
        assert rc == 0, err
        rc, beam1, err = run_main(
            caption_cli.main, ["--checkpoint", ckpt, *images, "--beam-size", "1"], capsys
        )
        assert rc == 0, err
        assert beam1 == greedy and len(parse_lines(greedy)) == len(images)
    # the flags reach the decoder: equal captions alone would also come from both being ignored
    assert [(c["method"], c["beam_size"]) for c in decoded][1::2] == [("beam", 1)] * 2
    assert [c["method"] for c in decoded][::2] == ["greedy"] * 2


def test_cli_sampling_with_a_seed_is_reproducible(trained, capsys):
    ckpt = trained.ckpt["showtell"]
    args = ["--checkpoint", ckpt, *trained.test_images, "--method", "sample", "--seed", "3"]
    rc, first, err = run_main(caption_cli.main, args, capsys)
    assert rc == 0, err
    rc, second, err = run_main(caption_cli.main, args, capsys)
    assert rc == 0, err
    assert first == second
    for _, words in parse_lines(first):
        assert_vocabulary_words(words, trained.vocab["showtell"])
    # the seed picks the draw, and it is a draw: temperature 5 is close to uniform, so two seeds
    # (and beam search) give other captions over 3 images
    hot = ["--checkpoint", ckpt, *trained.test_images, "--method", "sample", "--temperature", "5"]
    _, seed3, _ = run_main(caption_cli.main, [*hot, "--seed", "3"], capsys)
    _, seed4, _ = run_main(caption_cli.main, [*hot, "--seed", "4"], capsys)
    _, beam, _ = run_main(caption_cli.main, ["--checkpoint", ckpt, *trained.test_images], capsys)
    assert seed3 != seed4 and seed3 != beam and len(parse_lines(seed3)) == N_TEST


def test_cli_skip_bad_captions_the_others_and_warns(trained, tmp_path, capsys):
    good = [str(p) for p in trained.test_images[:2]]
    missing = str(tmp_path / "gone.png")
    rc, out, err = run_main(
        caption_cli.main,
        ["--checkpoint", trained.ckpt["showtell"], good[0], missing, good[1], "--skip-bad"],
        capsys,
    )
    assert rc == 0, err
    assert [path for path, _ in parse_lines(out)] == good
    assert f"warning: skipping: cannot read image {missing}" in err
    # all of them bad: an error, not an empty success
    rc, out, err = run_main(
        caption_cli.main, ["--checkpoint", trained.ckpt["showtell"], missing, "--skip-bad"], capsys
    )
    assert rc == 2 and out == ""
    assert "no readable image" in err


def test_cli_text_file_named_png_is_an_error_naming_it(trained, tmp_path, capsys):
    fake = tmp_path / "notes.png"
    fake.write_text("this is not an image\n")
    good = str(trained.test_images[0])
    rc, out, err = run_main(caption_cli.main, ["--checkpoint", trained.ckpt["showtell"], good, fake], capsys)
    assert rc == 2 and out == ""
    assert f"error: cannot read image {fake}" in err
    rc, out, err = run_main(
        caption_cli.main, ["--checkpoint", trained.ckpt["showtell"], good, fake, "--skip-bad"], capsys
    )
    assert rc == 0, err
    assert [path for path, _ in parse_lines(out)] == [good]
    assert f"skipping: cannot read image {fake}" in err


def undecodable_png(source: Path, out: Path) -> Path:
    """A copy of the PNG `source` whose pixel data is garbage under valid chunk CRCs: it passes
    PIL's verify() (the CLI's cheap check) and fails only when decoded."""
    raw = source.read_bytes()
    chunks, i = [raw[:8]], 8
    while i < len(raw):
        (n,) = struct.unpack(">I", raw[i : i + 4])
        kind, body = raw[i + 4 : i + 8], raw[i + 8 : i + 8 + n]
        if kind == b"IDAT":
            body = bytes(b ^ 0x5A for b in body)
        chunks.append(struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body)))
        i += 12 + n
    out.write_bytes(b"".join(chunks))
    return out


def test_cli_image_that_passes_the_check_but_does_not_decode(trained, tmp_path, capsys):
    broken = undecodable_png(trained.test_images[0], tmp_path / "broken.png")
    assert image_problem(broken) is None  # only decoding finds it
    good = [str(p) for p in trained.test_images[1:]]
    ckpt = trained.ckpt["attention"]
    rc, out, err = run_main(caption_cli.main, ["--checkpoint", ckpt, good[0], broken, good[1]], capsys)
    assert rc == 2 and out == ""
    assert f"error: cannot read image {broken}" in err and "Traceback" not in err
    plots = tmp_path / "plots"
    rc, out, err = run_main(
        caption_cli.main,
        ["--checkpoint", ckpt, good[0], broken, good[1], "--skip-bad", "--greedy", "--attention-plot", plots],
        capsys,
    )
    assert rc == 0, err
    assert [path for path, _ in parse_lines(out)] == good
    assert f"warning: skipping: cannot read image {broken}" in err
    assert sorted(p.name for p in plots.iterdir()) == sorted(Path(g).name for g in good)


def test_cli_directory_as_image_is_an_error(trained, tmp_path, capsys):
    rc, out, err = run_main(caption_cli.main, ["--checkpoint", trained.ckpt["showtell"], tmp_path], capsys)
    assert rc == 2 and out == ""
    assert f"cannot read image {tmp_path}: it is a directory" in err


def test_cli_attention_plot_with_showtell_is_refused_before_any_work(trained, tmp_path, capsys, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("captioning ran although --attention-plot cannot be honoured")

    monkeypatch.setattr(Captioner, "caption", no_work)
    plots = tmp_path / "plots"
    ckpt = trained.ckpt["showtell"]
    rc, out, err = run_main(
        caption_cli.main, ["--checkpoint", ckpt, trained.test_images[0], "--attention-plot", plots], capsys
    )
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and str(ckpt) in err
    assert "model='attention'" in err
    assert not plots.exists()


def test_cli_attention_plot_onto_a_file_is_a_usage_error(trained, tmp_path, capsys):
    taken = tmp_path / "plots"
    taken.write_text("mine\n")
    code = caption_cli.main(["--checkpoint", str(trained.ckpt["attention"]), str(trained.test_images[0]),
                             "--attention-plot", str(taken)])  # fmt: skip
    assert code == 2
    assert "not a folder" in capsys.readouterr().err
    assert taken.read_text() == "mine\n"


def test_cli_attention_plot_never_overwrites_an_input_image(trained, tmp_path, capsys):
    image = tmp_path / "cat.png"
    shutil.copy(trained.test_images[0], image)
    before = image.read_bytes()
    rc, out, err = run_main(
        caption_cli.main,
        ["--checkpoint", trained.ckpt["attention"], image, "--greedy", "--attention-plot", tmp_path],
        capsys,
    )
    # refused before any work (exit 2, nothing written), --overwrite or not: the image stays
    assert rc == 2 and "is the same file as the input" in err and out == "", (rc, out, err)
    assert image.read_bytes() == before, (rc, out, err)
    rc, out, err = run_main(
        caption_cli.main,
        ["--checkpoint", trained.ckpt["attention"], image, "--attention-plot", tmp_path, "--overwrite"],
        capsys,
    )
    assert rc == 2 and "is the same file as the input" in err and image.read_bytes() == before


def test_cli_output_file_is_written_whole_and_never_replaced_without_overwrite(trained, tmp_path, capsys):
    out = tmp_path / "captions.tsv"
    out.write_text("earlier captions\n")
    argv = ["--checkpoint", trained.ckpt["showtell"], trained.test_images[0], "--greedy", "--output", out]
    rc, stdout, err = run_main(caption_cli.main, argv, capsys)
    assert (
        rc == 2
        and err == f"error: --output {out} exists; pass --overwrite to replace it, or choose another path\n"
    )
    assert out.read_text() == "earlier captions\n"
    rc, stdout, err = run_main(caption_cli.main, [*argv, "--overwrite"], capsys)
    assert rc == 0 and stdout == "", err
    (line,) = out.read_text(encoding="utf-8").splitlines()
    assert line.startswith(f"{trained.test_images[0]}\t")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["captions.tsv"]
    rc, _, err = run_main(caption_cli.main, [*argv[:-1], tmp_path], capsys)
    assert rc == 2 and f"--output {tmp_path} is a folder" in err


def test_plot_names_never_collide():
    """plot_names gives every image its own file, whatever the stems are."""
    assert plot_names(["a/x.png", "b/x.jpg", "x"]) == ["x.png", "x-2.png", "x-3.png"]
    for paths in (
        ["a/x.png", "b/x.png", "c/x.png"],
        ["a/x.png", "b/x.png", "c/x-2.png"],
        ["x-2.png", "x.png", "x.png"],
    ):
        names = plot_names(paths)
        assert len(set(names)) == len(names), (paths, names)


# -- the Captioner API and the checkpoint loader -------------------------------------------------


def test_captioner_attention_rows_are_distributions_over_the_grid(trained, load_captioner):
    captioner = load_captioner(trained.ckpt["attention"])
    captions = captioner.caption(trained.test_images, method="greedy", return_attention=True)
    for c in captions:
        assert c.attention is not None and c.attention.shape == (len(c.tokens), GRID_HW)
        assert (c.attention >= 0).all()
        assert torch.allclose(c.attention.sum(-1), torch.ones(len(c.tokens)), atol=1e-4)
        assert c.text == " ".join(c.tokens)
    # PIL images work too, named by position, with the same caption as their file
    with Image.open(trained.test_images[1]) as img:
        from_pil = captioner.caption([img.copy()], method="greedy")[0]
    assert from_pil.source == "<image 0>" and from_pil.tokens == captions[1].tokens


def test_captioner_attention_rows_stay_with_their_words(trained, load_captioner):
    """Decoding never emits <pad> or <bos> (vocab.decode would drop them and leave their attention
    rows behind): even hot sampling gives one attention row per word."""
    captioner = load_captioner(trained.ckpt["attention"])
    images = trained.test_images * 4
    captions = captioner.caption(images, method="sample", temperature=20.0, seed=1, return_attention=True)
    assert len({tuple(c.tokens) for c in captions}) > 1
    for c in captions:
        assert c.attention.shape == (len(c.tokens), GRID_HW)
    features = captioner.encoder(torch.stack([captioner.transform(load_rgb(p)) for p in images]))
    hyps = captioner.model.caption(
        features, SearchOptions(method="sample", max_len=MAX_LEN, temperature=20.0)
    )
    ids = {t for h in hyps for t in h[0].tokens}
    assert ids and not ids & {PAD, BOS}


def test_sampled_captions_have_vocabulary_words_even_when_hot(trained, load_captioner):
    """Temperature 5 is close to uniform over the vocabulary, so <pad> and <bos> get drawn too: they
    never reach the caption (only "<unk>" may), and a seed gives the same draw again."""
    captioner = load_captioner(trained.ckpt["attention"])
    images = trained.test_images * 4
    first = captioner.caption(images, method="sample", temperature=5.0, seed=7)
    again = captioner.caption(images, method="sample", temperature=5.0, seed=7)
    assert [c.tokens for c in first] == [c.tokens for c in again]
    assert len({tuple(c.tokens) for c in first}) > 1  # real draws, not one caption repeated
    for c in first:
        assert_vocabulary_words(c.tokens, trained.vocab["attention"])
        assert len(c.tokens) <= MAX_LEN


def test_captioner_refuses_attention_from_showtell_and_names_a_bad_image(trained, tmp_path, load_captioner):
    captioner = load_captioner(trained.ckpt["showtell"])
    assert not captioner.has_attention and captioner.model_kind == "showtell"
    with pytest.raises(ValueError, match="attention"):
        captioner.caption(trained.test_images[:1], return_attention=True)
    missing = tmp_path / "missing.png"
    with pytest.raises(ImageFileError, match=str(missing)):
        captioner.caption([trained.test_images[0], missing])
    seen = []
    out = captioner.caption([missing, trained.test_images[0]], method="greedy", on_bad_image=seen.append)
    assert out[0] is None and out[1] is not None and len(seen) == 1 and str(missing) in str(seen[0])


def test_load_captioning_checkpoint_refuses_other_files_naming_them(trained, tmp_path):
    assert (
        load_captioning_checkpoint(trained.ckpt["showtell"])["seqcap"]["vocab"] == trained.vocab["showtell"]
    )
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint at all\n")
    weights = tmp_path / "weights.pt"
    torch.save({"layer.weight": torch.zeros(2, 2)}, weights)
    translation = tmp_path / "translation.ckpt"  # what `python -m seq2seq fit` keeps in "seqcap"
    torch.save(
        {"state_dict": {"model.x": torch.zeros(1)}, "hyper_parameters": {"vocab_size": 9},
         "seqcap": {"src_vocab": SPECIALS + ["a"], "tgt_vocab": SPECIALS + ["b"]}},
        translation,
    )  # fmt: skip
    for path in (text, weights, translation, tmp_path / "absent.ckpt"):
        with pytest.raises(CheckpointError) as error:
            load_captioning_checkpoint(path)
        assert str(path) in str(error.value)
        with pytest.raises(CheckpointError, match=str(path)):
            Captioner.from_checkpoint(path, device="cpu")
    with pytest.raises(CheckpointError, match="translation"):
        load_captioning_checkpoint(translation)


def language_model_checkpoint(path: Path) -> Path:
    """The shape of what `python -m seq2seq fit` writes for seq2seq.lm.module.LanguageModule: a Lightning
    checkpoint whose "seqcap" holds a "vocab" list too (data.datamodules.text's vocab_state)."""
    vocab = SPECIALS + ["a", "b"]
    torch.save(
        {
            "state_dict": {
                "model.embedding.weight": torch.zeros(6, 4),
                "model.output.weight": torch.zeros(6, 4),
            },
            "hyper_parameters": {"vocab_size": 6, "embed_dim": 4, "hidden_size": 4, "cell": "lstm"},
            "seqcap": {"vocab": vocab, "tokenizer": {"type": "word"}, "level": "word", "unit": "line"},
        },
        path,
    )
    return path


def test_captioner_refuses_a_language_model_checkpoint_naming_it(tmp_path):
    lm = language_model_checkpoint(tmp_path / "lm.ckpt")
    with pytest.raises(CheckpointError, match=str(lm)):
        Captioner.from_checkpoint(lm, device="cpu")


def test_load_captioning_checkpoint_refuses_a_language_model_checkpoint(tmp_path):
    lm = language_model_checkpoint(tmp_path / "lm.ckpt")
    with pytest.raises(CheckpointError, match=str(lm)):
        load_captioning_checkpoint(lm)


def test_cli_names_a_bad_checkpoint(trained, tmp_path, capsys):
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    rc, out, err = run_main(caption_cli.main, ["--checkpoint", text, trained.test_images[0]], capsys)
    assert rc == 2 and out == ""
    assert err.startswith(f"error: {text}")


# -- python -m captioning.captioner.evaluate ---------------------------------------------------------------


def references(json_path: Path, split: str) -> tuple[list[str], list[list[list[str]]]]:
    """The split's image paths and tokenized captions, read from the Karpathy JSON directly."""
    data = json.loads(json_path.read_text())
    paths, refs = [], []
    for entry in data["images"]:
        if entry["split"] == split:
            paths.append(str(json_path.parent / entry.get("filepath", "") / entry["filename"]))
            refs.append([[t.lower() for t in s["tokens"]] for s in entry["sentences"]])
    return paths, refs


def test_evaluate_prints_every_metric_of_the_api_captions(cli, trained, load_captioner):
    result = cli.evaluate
    assert result.returncode == 0, explain(result)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    scores = json.loads(lines[0])
    assert scores["images"] == N_TEST and scores["split"] == "test"
    assert scores["method"] == "beam" and scores["beam_size"] == 3
    assert "skipped" not in scores
    keys = {f"bleu{n}" for n in range(1, 5)} | {f"nltk_bleu{n}" for n in range(1, 5)}
    assert keys | {"meteor", "rouge_l", "cider"} <= set(scores)
    for key in keys | {"rouge_l"}:
        assert 0.0 <= scores[key] <= 100.0
    # the known answer: the COCO metrics and nltk corpus BLEU of the API's beam captions against
    # every reference
    paths, refs = references(trained.json, "test")
    assert len(paths) == N_TEST and all(len(r) == 5 for r in refs)
    captioner = load_captioner(trained.ckpt["showtell"])
    hyps = [c.tokens for c in captioner.caption(paths, method="beam", beam_size=3)]
    expected = nltk_bleu(hyps, refs)
    assert expected["bleu1"] > 0  # "a" and friends occur in every reference: a real check
    for n in range(1, 5):
        assert scores[f"nltk_bleu{n}"] == pytest.approx(expected[f"bleu{n}"], abs=1e-3)
    coco = caption_metrics(hyps, refs)
    for key in ("bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider"):
        assert scores[key] == pytest.approx(coco[key], abs=1e-3), key
    if coco["meteor"] is None:
        assert scores["meteor"] == "needs java"
    else:
        assert scores["meteor"] == pytest.approx(coco["meteor"], abs=1e-3)


def test_evaluate_limit_and_greedy(trained, capsys, load_captioner, decoded, monkeypatch):
    monkeypatch.setattr(caption_metrics_module.shutil, "which", lambda name: None)  # no java here
    rc, out, err = run_main(
        evaluate_cli.main,
        ["--checkpoint", trained.ckpt["attention"], "--data", trained.json, "--greedy", "--limit", "1"],
        capsys,
    )
    assert rc == 0, err
    assert [c["method"] for c in decoded] == ["greedy"]  # the flag reaches the decoder, not just the JSON
    scores = json.loads(out)
    assert scores["images"] == 1 and scores["method"] == "greedy" and scores["beam_size"] is None
    paths, refs = references(trained.json, "test")
    captioner = load_captioner(trained.ckpt["attention"])
    expected = nltk_bleu([captioner.caption(paths[:1], method="greedy")[0].tokens], refs[:1])
    for n in range(1, 5):
        assert scores[f"nltk_bleu{n}"] == pytest.approx(expected[f"bleu{n}"], abs=1e-3)
    assert scores["meteor"] == "needs java"  # and nothing failed


def test_evaluate_bad_image_stops_or_is_skipped(trained, tmp_path, capsys):
    data = json.loads(trained.json.read_text())
    test_entries = [e for e in data["images"] if e["split"] == "test"]
    test_entries[0]["filename"] = "missing.png"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(data))
    missing = trained.data / "images" / "missing.png"
    ckpt = trained.ckpt["showtell"]
    args = ["--checkpoint", ckpt, "--data", broken, "--image-root", trained.data, "--greedy"]
    rc, out, err = run_main(evaluate_cli.main, args, capsys)
    assert rc == 2 and out == ""
    assert f"cannot read image {missing}" in err
    rc, out, err = run_main(evaluate_cli.main, [*args, "--skip-bad"], capsys)
    assert rc == 0, err
    scores = json.loads(out)
    assert scores["images"] == N_TEST - 1 and scores["skipped"] == 1
    assert f"warning: skipping: cannot read image {missing}" in err


def test_captioner_preprocesses_like_training(trained, load_captioner):
    """The image size from the checkpoint and the backbone's mean/std, as the datamodule had them."""
    from torchvision import transforms as T

    from data.core.images import IMAGENET_MEAN, IMAGENET_STD

    captioner = load_captioner(trained.ckpt["showtell"])
    resize, _, norm = captioner.transform.transforms
    assert isinstance(resize, T.Resize) and isinstance(norm, T.Normalize)
    assert tuple(resize.size) == (64, 64)  # TINY_FIT's image_size, from checkpoint["seqcap"]
    meta = torch.load(trained.ckpt["showtell"], map_location="cpu", weights_only=True)["seqcap"]
    assert (tuple(norm.mean), tuple(norm.std)) == (tuple(meta["image_mean"]), tuple(meta["image_std"]))
    assert (tuple(norm.mean), tuple(norm.std)) == (
        IMAGENET_MEAN,
        IMAGENET_STD,
    )  # trained with pretrained: false


@pytest.mark.parametrize(
    "hparams, expected",
    [
        ({"pretrained": True}, "lite"),  # the packaged weights: (x - 127) / 128
        ({"pretrained": False}, "imagenet"),  # random init
        ({"pretrained": True, "weights_path": "my_weights.pth"}, "imagenet"),  # the user's file
    ],
)
def test_captioner_normalises_as_the_trained_cnn_though_it_loads_no_pretrained_weights(
    trained, tmp_path, hparams, expected
):
    """The Captioner rebuilds the CNN with pretrained=False (the state dict holds its weights), which
    alone would give ImageNet mean/std; a checkpoint of the packaged EfficientNet-Lite0 weights was
    trained on (x - 127) / 128 inputs and must be captioned on them (a mismatch cost 5 BLEU-4).
    Checkpoints record the mean/std; this is the rule for older ones, which do not."""
    from data.core.images import IMAGENET_MEAN, IMAGENET_STD
    from seq2seq.modules import pretrained

    ckpt = torch.load(trained.ckpt["showtell"], map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"].update(hparams)
    for key in ("image_mean", "image_std"):
        del ckpt["seqcap"][key]
    path = tmp_path / "variant.ckpt"
    torch.save(ckpt, path)
    norm = Captioner.from_checkpoint(path, device="cpu").transform.transforms[-1]
    mean, std = {
        "lite": (pretrained.LITE_MEAN, pretrained.LITE_STD),
        "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    }[expected]
    assert (tuple(norm.mean), tuple(norm.std)) == (mean, std)
    assert pretrained.input_normalization("efficientnet_lite0", **hparams) == (mean, std)
    assert pretrained.input_normalization("resnet18", True) == (IMAGENET_MEAN, IMAGENET_STD)


def test_an_ensemble_of_two_copies_captions_as_the_model(trained, tmp_path, load_captioner):
    """`--checkpoint A.ckpt B.ckpt IMG...`: copies of one checkpoint caption (words and scores) as
    the checkpoint alone; a ShowTell + attention ensemble captions too (one search, its own CNN
    each) and its score is not either model's."""
    attention = trained.ckpt["attention"]
    copy = shutil.copy(attention, tmp_path / "copy.ckpt")
    images = [str(p) for p in trained.test_images]
    alone = load_captioner(attention).caption(images, beam_size=3)
    pair = Captioner.from_checkpoint([attention, copy], device="cpu")
    assert len(pair.members) == 2
    for a, b in zip(pair.caption(images, beam_size=3), alone):
        assert a.tokens == b.tokens and a.score == pytest.approx(b.score, abs=1e-4)
    mixed = Captioner.from_checkpoint([trained.ckpt["showtell"], attention], device="cpu")
    showtell = load_captioner(trained.ckpt["showtell"]).caption(images, beam_size=1)
    both = mixed.caption(images, beam_size=1)
    assert [c.score for c in both] != [c.score for c in showtell]
    result = subprocess.run(
        [sys.executable, "-m", "seqcap", "caption", "--checkpoint", str(attention), str(copy), *images,
         "--beam-size", "3", "--device", "cpu"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=cli_env(),
    )  # fmt: skip
    assert result.returncode == 0, explain(result)
    assert [words for _, words in parse_lines(result.stdout)] == [c.tokens for c in alone]


def test_caption_and_evaluate_take_an_lm_int8_and_an_ensemble(trained, capsys):
    """--lm with weight 0 captions as without; rescoring and fusion with a word LM (the legacy
    fixture's: every caption word is its <unk>) and --quantize int8 give captions of vocabulary
    words; captioning evaluate scores an int8 ensemble with an LM."""
    lm = REPO / "tests" / "fixtures" / "legacy" / "lm.ckpt"
    images, attention = trained.test_images, trained.ckpt["attention"]
    base = ["--checkpoint", attention, *images, "--beam-size", "3"]
    rc, plain, err = run_main(caption_cli.main, base, capsys)
    assert rc == 0, err
    rc, out, err = run_main(caption_cli.main, [*base, "--lm", lm, "--lm-weight", "0"], capsys)
    assert rc == 0 and out == plain, err
    for extra in (
        ["--lm", lm, "--lm-weight", "0.5"],
        ["--lm", lm, "--lm-mode", "fusion"],
        ["--quantize", "int8"],
    ):
        rc, out, err = run_main(caption_cli.main, [*base, *extra], capsys)
        assert rc == 0, err
        lines = parse_lines(out)
        assert len(lines) == len(images), extra
        for _, words in lines:
            assert_vocabulary_words(words, trained.vocab["attention"])
    showtell = trained.ckpt["showtell"]
    rc, out, err = run_main(
        evaluate_cli.main,
        ["--checkpoint", showtell, showtell, "--data", trained.json, "--split", "test", "--lm", lm,
         "--lm-weight", "0.3", "--quantize", "int8"],
        capsys,
    )  # fmt: skip
    assert rc == 0, err
    scores = json.loads(out)
    assert scores["images"] == N_TEST and 0 <= scores["bleu4"] <= 100
