"""The demo page of `seqcap serve` (seqcap/server_demo.py, seqcap/demo/) in a real headless Chromium,
driven by Playwright: the server runs as a user starts it, on a translator and an attention
captioner this module trained (plus the committed VQA and LM fixtures), behind a token; the test
types a sentence, drops an image, asks a question, and checks what the page shows against the
predictors' own answers: the words, the attention heatmap's weights and the overlay's pixels.

Without Chromium the test is skipped with how to install it; `.ci/run` installs Debian's chromium
and sets SEQCAP_REQUIRE_BROWSER=1, which turns that skip into a failure. SEQCAP_CHROMIUM names
another browser binary. The README's picture is taken by `python -m seqcap.demo_screenshot`, which
the test runs too."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

from data.builders.shapes import build_shapes_dataset
from seqcap.demo_screenshot import INSTALL, find_browser
from tests.conftest import REPO, cli_env, explain, free_port, train_tiny_multimodal, wait_for_health

LEGACY = Path(__file__).parent / "fixtures" / "legacy"
TOKEN = "demo-token"
CAPTION_FIT = (
    "--data.init_args.batch_size", "16",
    "--data.init_args.image_size", "96",  # EfficientNet-Lite0's stride 32: a 3 x 3 grid
    "--trainer.max_steps", "3",
    "--trainer.limit_val_batches", "1",
    "--trainer.num_sanity_val_steps", "0",
    "--trainer.enable_progress_bar", "false",
    "--model.init_args.model", "attention",
    "--model.init_args.image.pretrained", "false",
    "--model.init_args.rnn.embed_dim", "16",
    "--model.init_args.rnn.hidden_size", "16",
    "--model.init_args.search.max_len", "6",
)  # fmt: skip


def browser_path() -> str:
    """The Chromium binary, or a skip (a failure under SEQCAP_REQUIRE_BROWSER) that says how to get one."""
    found, why = find_browser()
    if found is None:
        message = f"the demo page's browser test needs headless Chromium: {why}; {INSTALL}"
        if os.environ.get("SEQCAP_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def captioner_ckpt(tmp_path_factory) -> Path:
    """A tiny attention captioner (ShowAttendTell) trained by `python -m captioning fit` for 3 steps."""
    base = tmp_path_factory.mktemp("demo_captioner")
    build_shapes_dataset(base / "data", n_train=16, n_val=2, n_test=2, size=96, progress=False)
    args = [
        "-m", "captioning", "fit", "-c", "configs/captioning/shapes_attention.yaml",
        "--data.init_args.source", str(base / "data" / "dataset_shapes.json"),
        "--data.init_args.cache_dir", str(base / "cache"),
        "--trainer.default_root_dir", str(base / "runs"), *CAPTION_FIT,
    ]  # fmt: skip
    result = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, explain(result)
    return next((base / "runs").rglob("last.ckpt"))


@pytest.fixture(scope="module")
def multimodal_ckpt(tmp_path_factory) -> Path:
    """A tiny multimodal translator (conftest's train_tiny_multimodal)."""
    return train_tiny_multimodal(tmp_path_factory.mktemp("demo_mmt"))[0]


@contextmanager
def serving(models: dict[str, Path], token: str) -> Iterator[str]:
    """`python -m seqcap serve --model NAME=CKPT ...` with SEQCAP_TOKEN set, as a user starts it;
    yields its base URL once /health answers; SIGTERM afterwards."""
    port = free_port()
    command = [sys.executable, "-m", "seqcap", "serve", "--port", str(port), "--device", "cpu"]
    for name, ckpt in models.items():
        command += ["--model", f"{name}={ckpt}"]
    server = subprocess.Popen(
        command, cwd=REPO, env=cli_env(SEQCAP_TOKEN=token), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(server, base)
        yield base
    finally:
        server.terminate()
        try:
            server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()


def overlay_alphas(page, side: int) -> list[float]:
    """The attention overlay's opacity (0..1) at the centre of each of the side x side grid cells,
    row by row, read from the canvas's pixels."""
    return page.evaluate(
        """(side) => {
            const canvas = document.getElementById("image-overlay");
            const context = canvas.getContext("2d");
            const alphas = [];
            for (let k = 0; k < side * side; k++) {
                const x = Math.floor(((k % side) + 0.5) * canvas.width / side);
                const y = Math.floor((Math.floor(k / side) + 0.5) * canvas.height / side);
                alphas.push(context.getImageData(x, y, 1, 1).data[3] / 255);
            }
            return alphas;
        }""",
        side,
    )


def expected_alphas(weights: list[float]) -> list[float]:
    """The page's shading of one word's attention: 0.75 * weight / the word's largest weight."""
    most = max(weights)
    return [0.75 * w / most for w in weights]


def drop_file(page, selector: str, path: Path) -> None:
    """Drops the file at `path` onto `selector` as a user's drag and drop does (a DataTransfer)."""
    data = base64.b64encode(path.read_bytes()).decode()
    transfer = page.evaluate_handle(
        """([data, name]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "image/png" }));
            return transfer;
        }""",
        [data, path.name],
    )
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def test_the_demo_page_translates_captions_and_answers_in_a_real_browser(
    trained_run, captioner_ckpt, multimodal_ckpt, tmp_path, one_thread
):
    from playwright.sync_api import expect, sync_playwright

    from captioning.captioner.predictor import Captioner
    from captioning.vqa.predictor import Answerer
    from seq2seq.translation.predictor import Translator

    chromium = browser_path()
    models = {
        "rev": trained_run.last_ckpt,
        "cap": captioner_ckpt,
        "vqa": LEGACY / "vqa.ckpt",
        "lm": LEGACY / "lm.ckpt",
        "mmt": multimodal_ckpt,
    }
    sentence, question = "w1 w2 w3 w4 w5", "what colour is the star?"
    images = [LEGACY / "image0.png", LEGACY / "image1.png"]
    translation = Translator.from_checkpoint(models["rev"], device="cpu").translate(
        [sentence], beam_size=5, return_attention=True
    )[0][0]
    captioner = Captioner.from_checkpoint(models["cap"], device="cpu")
    captions = captioner.caption(images, beam_size=3, return_attention=True)
    mmt_sentence = "a [v] square in the picture"
    mmt = Translator.from_checkpoint(models["mmt"], device="cpu")
    mmt_translation = mmt.translate([mmt_sentence], beam_size=5, images=[images[1]])[0][0]
    answers = Answerer.from_checkpoint(models["vqa"], device="cpu").answer(images[1], [question], top=3)[0]

    with serving(models, TOKEN) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(base + "/")

        # behind a token: the page asks for it and shows no panel before
        expect(page.locator("#token-form")).to_be_visible()
        expect(page.locator("#translate-panel")).to_be_hidden()
        page.fill("#token-input", "wrong")
        page.click("#token-form button")
        expect(page.locator("#status")).to_have_text("That token was refused.")
        page.fill("#token-input", TOKEN)
        page.click("#token-form button")
        expect(page.locator("#models-line")).to_contain_text("rev (translation), cap (captioning)")
        for panel in ("#translate-panel", "#image-panel", "#caption-part", "#answer-part", "#generate-panel"):
            expect(page.locator(panel)).to_be_visible()
        expect(page.locator("#token-form")).to_be_hidden()

        # translate: the words and the heatmap are the translator's
        page.fill("#translate-input", sentence)
        page.click("#translate-button")
        expect(page.locator("#translate-output")).to_have_text(translation.text)
        table = page.locator("#translate-attention table")
        assert table.locator("thead th[scope=col]").all_inner_texts() == sentence.split()
        assert table.locator("tbody th").all_inner_texts() == translation.tokens
        shown = [
            [float(w) for w in row.locator("td").evaluate_all("cells => cells.map(c => c.dataset.weight)")]
            for row in table.locator("tbody tr").all()
        ]
        expected = translation.attention.tolist()
        assert [len(row) for row in shown] == [len(row) for row in expected]
        assert sum(shown, []) == pytest.approx(sum(expected, []), abs=1e-6)

        # an error the server answers (a beam over --max-beam) is shown, and the page goes on
        page.fill("#translate-beam", "99")
        page.click("#translate-button")
        expect(page.locator("#status")).to_contain_text("beam_size")
        expect(page.locator("#status")).to_have_class("error")
        page.fill("#translate-beam", "5")

        # a multimodal translator needs the image panel's image: none is chosen yet
        expect(page.locator("#translate-image-note")).to_be_hidden()
        page.select_option("#translate-model", "mmt")
        expect(page.locator("#translate-image-note")).to_be_visible()
        page.click("#translate-button")
        expect(page.locator("#status")).to_contain_text("mmt is a multimodal translator: choose an image")

        # choose an image: it is captioned at once, the first word's attention drawn over it
        page.set_input_files("#image-input", str(images[0]))
        words = page.locator("#caption-output .word")
        expect(words).to_have_count(len(captions[0].tokens))
        assert words.all_inner_texts() == captions[0].tokens
        side = int(page.get_attribute("#image-overlay", "data-side"))
        assert side * side == captions[0].attention.shape[1] == 9
        assert page.get_attribute("#image-overlay", "data-word") == "0"
        attention = captions[0].attention.tolist()
        assert overlay_alphas(page, side) == pytest.approx(expected_alphas(attention[0]), abs=0.01)
        words.nth(1).hover()  # pointing at a word shows where the model looked for it
        assert page.get_attribute("#image-overlay", "data-word") == "1"
        assert overlay_alphas(page, side) == pytest.approx(expected_alphas(attention[1]), abs=0.01)

        # drop another image onto the page: captioned too; then a question about it
        drop_file(page, "#drop-zone", images[1])
        expect(page.locator("#caption-output")).to_have_text(captions[1].text)
        # now the multimodal translator reads the sentence with the dropped image
        page.fill("#translate-input", mmt_sentence)
        page.click("#translate-button")
        expect(page.locator("#translate-output")).to_have_text(mmt_translation.text)
        expect(page.locator("#translate-attention tbody tr")).to_have_count(len(mmt_translation.tokens))

        page.fill("#question-input", question)
        page.click("#answer-button")
        items = page.locator("#answer-output li")
        expect(items).to_have_count(3)
        assert items.evaluate_all("items => items.map(i => i.dataset.answer)") == [a for a, _ in answers.top]
        assert items.nth(0).inner_text().endswith(f"{answers.top[0][1] * 100:.1f}%")

        # the language model's panel samples
        page.click("#generate-button")
        expect(page.locator("#generate-output li")).to_have_count(3)

        browser.close()
        assert errors == []

        # the screenshot command (the README's picture) on the same server, as a user runs it
        shot = tmp_path / "shots" / "demo.png"
        args = ["-m", "seqcap.demo_screenshot", base, str(shot), "--sentence", sentence,
                "--image", str(images[0]), "--word", captions[0].tokens[-1]]  # fmt: skip
        env = cli_env(SEQCAP_TOKEN=TOKEN)
        result = subprocess.run(
            [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, explain(result)
        with Image.open(shot) as picture:
            assert picture.format == "PNG" and picture.width == 1000 and picture.height > 900
        assert sorted(p.name for p in shot.parent.iterdir()) == ["demo.png"]  # no partial file left
        result = subprocess.run(
            [sys.executable, *args], cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=120
        )
        assert (
            result.returncode == 2 and "needs a token" in result.stderr and "Traceback" not in result.stderr
        )
        wrong = cli_env(SEQCAP_TOKEN="wrong")
        result = subprocess.run(
            [sys.executable, *args], cwd=REPO, env=wrong, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 2, explain(result)
        assert "refused the token" in result.stderr and "Traceback" not in result.stderr
        assert sorted(p.name for p in shot.parent.iterdir()) == ["demo.png"]


def test_with_only_a_multimodal_translator_the_page_offers_the_image_it_needs(multimodal_ckpt, one_thread):
    """No captioner or VQA model: the image panel still shows (without their parts), so the
    multimodal translator can be given its image."""
    from playwright.sync_api import expect, sync_playwright

    from seq2seq.translation.predictor import Translator

    chromium = browser_path()
    sentence, image = "a [v] square in the picture", LEGACY / "image1.png"
    expected = Translator.from_checkpoint(multimodal_ckpt, device="cpu").translate([sentence], images=[image])
    with serving({"mmt": multimodal_ckpt}, TOKEN) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(base + "/")
        page.fill("#token-input", TOKEN)
        page.click("#token-form button")
        expect(page.locator("#translate-image-note")).to_be_visible()
        expect(page.locator("#image-panel")).to_be_visible()
        for part in ("#caption-part", "#answer-part", "#generate-panel"):
            expect(page.locator(part)).to_be_hidden()
        page.set_input_files("#image-input", str(image))
        page.fill("#translate-input", sentence)
        page.click("#translate-button")
        expect(page.locator("#translate-output")).to_have_text(expected[0][0].text)
        browser.close()


def test_the_page_and_its_files_need_no_token_and_the_api_still_does():
    """The page's own files are open (they hold no model); every API call behind them is not."""
    from fastapi.testclient import TestClient

    from seq2seq.predictor import Predictor
    from seqcap.server import ServerOptions, create_app

    app = create_app(
        {"lm": Predictor.from_checkpoint(LEGACY / "lm.ckpt", device="cpu")}, ServerOptions(token=TOKEN)
    )
    with TestClient(app) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script src="/demo/demo.js"' in page.text
        for name, kind in [("demo.js", "text/javascript"), ("demo.css", "text/css")]:
            r = client.get(f"/demo/{name}")
            assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
            assert r.text == (REPO / "seqcap" / "demo" / name).read_text()
        assert client.get("/models").status_code == 401
        assert client.get("/demo/index.html").status_code == 401  # only the page's own files are open
        assert client.get("/models", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_serve_quickstart_finds_the_quickstarts_checkpoints_or_names_the_command(
    tmp_path, monkeypatch, capsys
):
    """`make serve-demo` = `seqcap serve --quickstart`: the newest quickstart run's best checkpoint
    (else its last.ckpt) per task; with none, exit 2 naming the make target; trains nothing."""
    from seqcap.server import main, quickstart_models

    monkeypatch.chdir(tmp_path)
    assert main(["--quickstart"]) == 2
    err = capsys.readouterr().err
    assert "make quickstart-translation" in err and "make quickstart-captioning" in err
    assert not (tmp_path / "runs").exists()  # nothing was made

    runs = tmp_path / "runs"
    older = runs / "quickstart" / "version_1" / "checkpoints"
    newer = runs / "quickstart" / "version_10" / "checkpoints"  # 10 after 1, not after "1" as text
    for folder in (older, newer):
        folder.mkdir(parents=True)
        shutil.copy(LEGACY / "translation.ckpt", folder / "last.ckpt")
    shutil.copy(LEGACY / "translation.ckpt", newer / "best-epoch=03-val_bleu=20.00.ckpt")
    (runs / "quickstart" / "version_11").mkdir()  # a run killed before its first checkpoint
    found, missing = quickstart_models(Path("runs"))
    assert found == [f"de={Path('runs/quickstart/version_10/checkpoints/best-epoch=03-val_bleu=20.00.ckpt')}"]
    assert len(missing) == 1 and "make quickstart-captioning" in missing[0]

    captions = runs / "quickstart_captioning" / "version_0" / "checkpoints"
    captions.mkdir(parents=True)
    shutil.copy(LEGACY / "caption_showtell.ckpt", captions / "last.ckpt")
    assert (
        quickstart_models(Path("runs"))[0][1]
        == f"caption={Path('runs/quickstart_captioning/version_0/checkpoints/last.ckpt')}"
    )
    served = {}
    monkeypatch.setattr(
        "uvicorn.run", lambda app, **kw: served.update(models=sorted(app.state.workers), **kw)
    )
    assert main(["--quickstart", "--device", "cpu"]) == 0
    assert served == {"models": ["caption", "de"], "host": "127.0.0.1", "port": 8000, "log_level": "info"}
    assert "demo page: http://127.0.0.1:8000/" in capsys.readouterr().err
    mine = f"de={LEGACY / 'translation.ckpt'}"  # a --model named like a quickstart model replaces it
    assert main(["--quickstart", "--model", mine, "--device", "cpu"]) == 0
    assert served["models"] == ["caption", "de"]
    assert f"de: translation model from {LEGACY / 'translation.ckpt'}" in capsys.readouterr().err


def test_without_chromium_the_browser_test_skips_saying_how_to_install_it_or_fails_in_ci(monkeypatch):
    monkeypatch.delenv("SEQCAP_CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    found, why = find_browser()
    assert found is None and "no Chromium found" in why
    monkeypatch.delenv("SEQCAP_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        browser_path()
    monkeypatch.setenv("SEQCAP_REQUIRE_BROWSER", "1")  # what .ci/run sets
    with pytest.raises(pytest.fail.Exception, match="apt-get install chromium"):
        browser_path()
