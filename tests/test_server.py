"""`seqcap serve` (seqcap/server.py): every endpoint's answer equals the predictor's own on tiny
checkpoints that a test trained (tests/fixtures/legacy, made by make_legacy.py there); dynamic
batching gives each request what it gets alone and really batches; every error a request can cause
is a 4xx naming the limit or the problem, and the server answers the next request; the command runs
as a user starts it and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from seq2seq.predictor import Predictor
from seqcap.server import ModelSpec, ModelSpecError, ServerOptions, create_app, load_model, main
from tests.conftest import REPO, cli_env, free_port, train_tiny_multimodal, wait_for_health

pytestmark = pytest.mark.usefixtures("one_thread_per_module")  # conftest: torch on one thread

LEGACY = Path(__file__).parent / "fixtures" / "legacy"
TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SENTENCES = ["w1 w2 w3", "w4 w5 w6 w7 w8", "w9 w0 w3 w3", ""]


@pytest.fixture(scope="module")
def models() -> dict:
    return {
        "rev": Predictor.from_checkpoint(LEGACY / "translation.ckpt", device="cpu"),
        "lm": Predictor.from_checkpoint(LEGACY / "lm.ckpt", device="cpu"),
        "cap": Predictor.from_checkpoint(LEGACY / "caption_attention.ckpt", device="cpu"),
        "vqa": Predictor.from_checkpoint(LEGACY / "vqa.ckpt", device="cpu"),
    }


@pytest.fixture(scope="module")
def client(models):
    """The app with a token and small limits, as a client that sends the token."""
    options = ServerOptions(
        token=TOKEN, max_body_bytes=60_000, max_image_bytes=20_000, max_image_pixels=200 * 200, max_images=2,
        max_sentences=8, max_sentence_chars=100, max_beam=8, max_n_best=5, max_num=5, max_output_len=50,
    )  # fmt: skip
    app = create_app(models, options, {"rev": {"quantize": "none"}})
    with TestClient(app, headers=AUTH) as c:
        yield c


def png(path: Path | None = None, size: tuple[int, int] = (64, 64)) -> bytes:
    if path is not None:
        return path.read_bytes()
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def as_json(translations) -> list[list[dict]]:
    return [
        [{"text": t.text, "score": t.score, "tokens": t.tokens} for t in options] for options in translations
    ]


def test_translate_equals_the_translator(client, models):
    r = client.post(
        "/translate/rev", json={"sentences": SENTENCES, "beam_size": 3, "alpha": 0.6, "n_best": 2}
    )
    assert r.status_code == 200, r.text
    expected = models["rev"].translate(SENTENCES, beam_size=3, alpha=0.6, n_best=2)
    assert r.json() == {"model": "rev", "translations": as_json(expected)}
    assert r.json()["translations"][0][0]["text"] == "w3 w2 w1"  # the fixture's model reverses

    r = client.post("/translate/rev", json={"sentences": ["w1 w2 w3"], "attention": True})
    best = models["rev"].translate(["w1 w2 w3"], return_attention=True)[0][0]
    got = r.json()["translations"][0][0]
    assert got["source_tokens"] == ["w1", "w2", "w3"]
    assert got["attention"] == best.attention.tolist()
    assert len(got["attention"]) == len(got["tokens"]) and all(len(row) == 3 for row in got["attention"])


def test_lm_caption_and_vqa_equal_their_predictors(client, models):
    r = client.post("/generate/lm", json={"num": 3, "prompt": "w1", "max_len": 8, "seed": 1})
    assert r.json()["texts"] == models["lm"].generate(num=3, prompt="w1", max_len=8, seed=1)
    r = client.post("/score/lm", json={"sentences": ["w1 w2 w3", "w0 w5"]})
    expected = [{"log_prob": lp, "tokens": n} for lp, n in models["lm"].score(["w1 w2 w3", "w0 w5"])]
    assert r.json()["scores"] == expected and expected[0]["tokens"] == 4

    images = [LEGACY / "image0.png", LEGACY / "image1.png"]
    files = [("images", (p.name, png(p), "image/png")) for p in images]
    r = client.post(
        "/caption/cap", files=files, data={"method": "beam", "beam_size": "2", "attention": "true"}
    )
    assert r.status_code == 200, r.text
    expected = models["cap"].caption(images, method="beam", beam_size=2, return_attention=True)
    assert [c["text"] for c in r.json()["captions"]] == [c.text for c in expected]
    assert [c["score"] for c in r.json()["captions"]] == [c.score for c in expected]
    assert [c["image"] for c in r.json()["captions"]] == ["image0.png", "image1.png"]
    assert r.json()["captions"][0]["attention"] == expected[0].attention.tolist()

    questions = ["what colour is the star?", "what shape is it?"]
    r = client.post(
        "/answer/vqa", files={"image": ("a.png", png(images[0]), "image/png")},
        data={"questions": questions, "top": "2"},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    expected = models["vqa"].answer(images[0], questions, top=2)
    assert [a["question"] for a in r.json()["answers"]] == questions
    assert [[(t["answer"], t["probability"]) for t in a["top"]] for a in r.json()["answers"]] == [
        a.top for a in expected
    ]


def test_models_lists_tasks_options_limits_and_stats(client):
    body = client.get("/models").json()
    rev = body["models"]["rev"]
    assert rev["task"] == "translation" and rev["endpoints"] == ["/translate/rev"]
    assert rev["checkpoints"] == [str(LEGACY / "translation.ckpt")] and rev["ensemble"] is False
    assert rev["options"] == {"quantize": "none"} and rev["device"] == "cpu"
    assert set(rev["stats"]) == {"requests", "decode_calls", "sentences", "largest_batch", "batched_requests"}
    assert body["models"]["lm"]["endpoints"] == ["/generate/lm", "/score/lm"]
    assert (
        body["models"]["cap"]["task"] == "captioning" and body["models"]["cap"]["model_kind"] == "attention"
    )
    assert body["models"]["vqa"]["endpoints"] == ["/answer/vqa"]
    assert body["limits"]["max_beam"] == 8 and body["limits"]["max_sentences"] == 8
    assert "token" not in body["limits"] and TOKEN not in str(body)
    assert client.get("/health", headers={"Authorization": ""}).json() == {
        "status": "ok", "models": ["cap", "lm", "rev", "vqa"],
    }  # fmt: skip
    assert client.get("/openapi.json", headers={"Authorization": ""}).json()["paths"]["/translate/{name}"]
    docs = client.get("/docs", headers={"Authorization": ""})
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_bad_requests_get_a_4xx_that_says_why_and_the_server_goes_on(client, models):
    def check(response, status: int, *words: str) -> None:
        assert response.status_code == status, response.text
        detail = response.json()["detail"]
        assert all(w in detail for w in words), detail

    ok = {"sentences": ["w1 w2 w3"]}
    check(client.post("/translate/rev", json=ok, headers={"Authorization": ""}), 401, "Bearer TOKEN")
    check(client.post("/translate/rev", json=ok, headers={"Authorization": "Bearer nope"}), 401, "Bearer")
    check(client.get("/models", headers={"Authorization": ""}), 401, "Bearer")
    check(client.post("/translate/rev", json=ok, headers={"Authorization": f"Basic {TOKEN}"}), 401, "Bearer")
    # the token is checked before the body is read: no JSON error, no upload parsed, no model named
    no_token = {"Authorization": "", "content-type": "application/json"}
    check(client.post("/translate/nothing", content=b"{", headers=no_token), 401, "Bearer")
    check(client.post("/translate/nothing", json=ok), 404, "no model named 'nothing'", "cap, lm, rev, vqa")
    check(client.post("/generate/rev", json={}), 400, "translation model", "/generate", "use /translate")
    check(
        client.post("/caption/rev", files={"images": ("a.png", png(), "image/png")}), 400,
        "/caption does not serve it",
    )  # fmt: skip
    bad_json = {**AUTH, "content-type": "application/json"}
    check(client.post("/translate/rev", content=b'{"sentences": [', headers=bad_json), 422, "not valid JSON")
    check(client.post("/translate/rev", json={"sentence": ["x"]}), 422, "body.sentences", "Field required")
    check(client.post("/translate/rev", json={**ok, "beam_size": 0}), 422, "beam_size")
    check(
        client.post("/translate/rev", json={**ok, "beam_size": 50}),
        422,
        "beam_size 50",
        "limit of 8",
        "--max-beam",
    )
    check(
        client.post("/translate/rev", json={**ok, "n_best": 6, "beam_size": 8}),
        422,
        "n_best 6",
        "limit of 5",
        "--max-n-best",
    )
    check(client.post("/translate/rev", json={**ok, "n_best": 3, "beam_size": 2}), 422, "over beam_size 2")
    check(client.post("/translate/rev", json={"sentences": ["w1"] * 9}), 413, "count 9", "limit of 8")
    check(
        client.post("/translate/rev", json={"sentences": ["w1 " * 40]}), 413, "120 characters", "limit of 100"
    )
    check(client.post("/translate/rev", json={"sentences": ["w1" * 40_000]}), 413, "limit of 60000 bytes")

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"sentences": ["'
        yield from [b"w1 " * 1000] * 30
        yield b'"]}'

    chunked = client.post("/translate/rev", content=chunks(), headers={"content-type": "application/json"})
    check(chunked, 413, "limit of 60000 bytes", "--max-body-bytes")
    check(client.post("/generate/lm", json={"num": 6}), 422, "num 6", "limit of 5", "--max-num")
    check(client.post("/generate/lm", json={"temperature": 1e308}), 422, "body.temperature")
    check(client.post("/generate/lm", json={"seed": 2**70}), 422, "body.seed")
    check(client.post("/generate/lm", json={"max_len": 51}), 422, "max_len 51", "limit of 50")
    check(client.post("/score/lm", json={"sentences": "w1 w2"}), 422, "body.sentences")

    def caption(*images: tuple[str, bytes], **data: str):
        return client.post(
            "/caption/cap", files=[("images", (n, b, "image/png")) for n, b in images], data=data
        )

    check(caption(("x.png", b"not an image")), 400, "image 'x.png' cannot be decoded")
    check(caption(("cut.png", png()[:60])), 400, "image 'cut.png' cannot be decoded")
    check(caption(("big.png", png(size=(300, 300)))), 413, "300x300 = 90000 pixels", "limit of 40000")
    noise = io.BytesIO()
    Image.frombytes("RGB", (120, 120), os.urandom(3 * 120 * 120)).save(noise, format="PNG")
    check(
        caption(("noise.png", noise.getvalue())), 413, "noise.png", "over this server's limit of 20000 bytes"
    )
    check(caption(*[("a.png", png())] * 3), 413, "images: the count 3", "limit of 2", "--max-images")
    check(caption(("a.png", png()), max_len="51"), 422, "max_len 51", "--max-output-len")
    check(caption(("a.png", png()), method="sample"), 422, "method")
    check(client.post("/caption/cap", data={"method": "greedy"}), 422, "body.images", "Field required")
    answer = client.post(
        "/answer/vqa", files={"image": ("a.png", png(), "image/png")}, data={"questions": ["?"]}
    )
    check(answer, 400, "question 1", "empty")
    # a name is looked up among the loaded models, never opened: no route or no model, a 404 either way
    check(client.post("/translate/..%2F..%2Fetc%2Fpasswd", json=ok), 404, "Not Found")
    check(client.post(f"/translate/{LEGACY / 'lm.ckpt'}".replace("/", "%2F"), json=ok), 404, "Not Found")
    check(client.post("/translate/lm.ckpt", json=ok), 404, "no model named 'lm.ckpt'")

    r = client.post("/translate/rev", json={"sentences": SENTENCES})
    assert r.status_code == 200
    assert r.json()["translations"] == as_json(models["rev"].translate(SENTENCES))


async def send_concurrently(app, requests: list[tuple[str, dict]]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        return await asyncio.gather(*(c.post(path, **kwargs) for path, kwargs in requests))


def close(app) -> None:
    for worker in app.state.workers.values():
        worker.close()


def serve_concurrently(
    predictor, bodies: list[dict], options: ServerOptions, endpoint: str = "translate"
) -> tuple[list, dict]:
    """`bodies` sent at once to /ENDPOINT/m of an app serving `predictor` as m -> the responses and
    the model's batching stats. A body is the JSON of a /translate request, or httpx.post's keyword
    arguments (files=, data=) for the multipart endpoints."""
    app = create_app({"m": predictor}, options)
    requests = [(f"/{endpoint}/m", {"json": b} if endpoint == "translate" else b) for b in bodies]
    try:
        responses = asyncio.run(send_concurrently(app, requests))
        return responses, TestClient(app).get("/models").json()["models"]["m"]["stats"]
    finally:
        close(app)


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(models):
    """Six requests at once: the three with beam 3 are decoded in one call, the three with beam 2
    in another (their search differs); each response equals that request translated alone."""
    words = [f"w{i}" for i in range(10)]
    bodies = [
        {
            "sentences": [" ".join(words[k : k + 3 + k % 3]), " ".join(words[::-1][k : k + 4])],
            "beam_size": 3 - k % 2,
        }
        for k in range(6)
    ]
    responses, stats = serve_concurrently(models["rev"], bodies, ServerOptions(max_batch=6, max_wait_ms=3000))
    for body, response in zip(bodies, responses):
        assert response.status_code == 200, response.text
        alone = as_json(models["rev"].translate(body["sentences"], beam_size=body["beam_size"]))
        got = response.json()["translations"]
        # texts are the same; a score may differ by float rounding in another batch shape (~1e-7)
        assert [[t["text"] for t in o] for o in got] == [[t["text"] for t in o] for o in alone]
        assert [[t["tokens"] for t in o] for o in got] == [[t["tokens"] for t in o] for o in alone]
        assert [t["score"] for o in got for t in o] == pytest.approx(
            [t["score"] for o in alone for t in o], abs=1e-5
        )
    assert stats == {
        "requests": 6,
        "decode_calls": 2,
        "sentences": 12,
        "largest_batch": 6,
        "batched_requests": 6,
    }


def test_a_batched_request_gets_the_attention_over_its_own_words_only(models):
    """Batched with a longer sentence of another request, a short sentence's attention has one
    column per word of its own (not the batch's padding), as alone."""
    bodies = [
        {"sentences": ["w1 w2"], "attention": True},
        {"sentences": ["w3 w4 w5 w6 w7 w8 w9"], "attention": True},
    ]
    responses, stats = serve_concurrently(models["rev"], bodies, ServerOptions(max_batch=8, max_wait_ms=3000))
    assert stats["decode_calls"] == 1 and stats["batched_requests"] == 2
    for body, response in zip(bodies, responses):
        got = response.json()["translations"][0][0]
        alone = models["rev"].translate(body["sentences"], return_attention=True)[0][0]
        assert got["source_tokens"] == body["sentences"][0].split()
        assert [len(row) for row in got["attention"]] == [len(got["source_tokens"])] * len(got["tokens"])
        assert sum(got["attention"], []) == pytest.approx(sum(alone.attention.tolist(), []), abs=1e-5)


def test_a_request_cancelled_while_queued_leaves_the_worker_serving():
    """The worker answers a job whose future was cancelled meanwhile by skipping it, not by dying:
    the other job of its batch and the next ones are answered."""
    from seqcap.server_worker import Job, ModelWorker

    gate = threading.Event()

    class Slow:
        task, device = "lm", "cpu"

        def double(self, items):
            gate.wait(10)
            return [2 * x for x in items]

    worker = ModelWorker("m", Slow(), max_batch=8, max_wait_ms=0)
    try:
        blocker = worker.submit(Job(Future(), items=[1], key=("k",), batch=lambda p, items: p.double(items)))
        queued = [worker.submit(Job(Future(), items=[x], key=("k",), batch=lambda p, items: p.double(items)))
                  for x in (2, 3)]  # fmt: skip
        assert queued[0].cancel()  # still pending: the client went away
        gate.set()
        assert blocker.result(10) == [2] and queued[1].result(10) == [6]
        after = worker.submit(Job(Future(), items=[5], key=("k",), batch=lambda p, items: p.double(items)))
        assert after.result(10) == [10] and worker.thread.is_alive() and worker.in_flight == 0
    finally:
        worker.close()


def test_batching_off_decodes_each_request_alone(models):
    bodies = [{"sentences": ["w1 w2 w3"]}, {"sentences": ["w4 w5"]}, {"sentences": ["w6 w7 w8"]}]
    responses, stats = serve_concurrently(models["rev"], bodies, ServerOptions(max_batch=1, max_wait_ms=5))
    for body, response in zip(bodies, responses):
        assert response.json()["translations"] == as_json(models["rev"].translate(body["sentences"]))
    assert stats == {
        "requests": 3,
        "decode_calls": 3,
        "sentences": 3,
        "largest_batch": 1,
        "batched_requests": 0,
    }


def shapes(n: int) -> list[bytes]:
    """n PNG files of 64 x 64: the legacy fixture's two shapes scenes, then plain colours."""
    files = [png(LEGACY / "image0.png"), png(LEGACY / "image1.png")]
    for k in range(n - 2):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), (40 * k % 256, 200 - 30 * k % 200, 90)).save(buffer, format="PNG")
        files.append(buffer.getvalue())
    return files[:n]


def pil(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def test_concurrent_caption_requests_are_batched_and_each_gets_its_own_captions(models):
    """Five /caption requests at once: the four with beam 2 (six images) are captioned in one
    call, the greedy one in another; each response equals its images captioned alone."""
    files = shapes(7)
    groups = [[0], [1, 2], [3], [4, 5], [6]]
    bodies = [
        {"files": [("images", (f"{i}.png", files[i], "image/png")) for i in group],
         "data": {"method": "greedy" if k == 2 else "beam", "beam_size": "2"}}
        for k, group in enumerate(groups)
    ]  # fmt: skip
    options = ServerOptions(max_batch=6, max_wait_ms=3000)
    responses, stats = serve_concurrently(models["cap"], bodies, options, endpoint="caption")
    for k, (group, response) in enumerate(zip(groups, responses)):
        assert response.status_code == 200, response.text
        method = "greedy" if k == 2 else "beam"
        alone = models["cap"].caption([pil(files[i]) for i in group], method=method, beam_size=2)
        got = response.json()["captions"]
        assert [c["image"] for c in got] == [f"{i}.png" for i in group]
        assert [(c["text"], c["tokens"]) for c in got] == [(c.text, c.tokens) for c in alone]
        assert [c["score"] for c in got] == pytest.approx([c.score for c in alone], abs=1e-5)
    assert stats == {
        "requests": 5, "decode_calls": 2, "sentences": 7, "largest_batch": 6, "batched_requests": 4,
    }  # fmt: skip


def test_concurrent_answer_requests_are_batched_and_each_gets_its_own_answers(models):
    """Four /answer requests at once, each its own image: the three with top 2 (five questions) in
    one forward, the one with top 3 in another; each response equals the request alone."""
    files = shapes(4)
    asked = [["what colour is the star?"], ["what shape is it?", "is there a circle?"],
             ["what colour is the square?"], ["how many shapes?", "what is left of the star?"]]  # fmt: skip
    tops = [2, 2, 3, 2]
    bodies = [
        {"files": {"image": (f"{k}.png", files[k], "image/png")}, "data": {"questions": q, "top": str(t)}}
        for k, (q, t) in enumerate(zip(asked, tops))
    ]
    options = ServerOptions(max_batch=5, max_wait_ms=3000)
    responses, stats = serve_concurrently(models["vqa"], bodies, options, endpoint="answer")
    for k, response in enumerate(responses):
        assert response.status_code == 200, response.text
        alone = models["vqa"].answer(pil(files[k]), asked[k], top=tops[k])
        got = response.json()["answers"]
        assert [a["question"] for a in got] == asked[k] and [a["unknown"] for a in got] == [
            a.unknown for a in alone
        ]
        assert [[t["answer"] for t in a["top"]] for a in got] == [[w for w, _ in a.top] for a in alone]
        assert [t["probability"] for a in got for t in a["top"]] == pytest.approx(
            [p for a in alone for _, p in a.top], abs=1e-5
        )
    assert stats == {
        "requests": 4, "decode_calls": 2, "sentences": 6, "largest_batch": 5, "batched_requests": 3,
    }  # fmt: skip


def test_answer_each_equals_answer_one_image_at_a_time(models):
    files = shapes(3)
    images = [pil(files[0]), pil(files[1]), pil(files[1]), pil(files[2])]
    questions = ["what colour is the star?", "what shape is it?", "is it red?", "what colour is it?"]
    together = models["vqa"].answer_each(images, questions, top=3)
    for image, question, answer in zip(images, questions, together):
        (alone,) = models["vqa"].answer(image, [question], top=3)
        assert answer.question == question and [w for w, _ in answer.top] == [w for w, _ in alone.top]
        assert [p for _, p in answer.top] == pytest.approx([p for _, p in alone.top], abs=1e-6)
    with pytest.raises(ValueError, match="3 images for 4 questions"):
        models["vqa"].answer_each(images[:3], questions)


class Doubling:
    """A predictor for the worker alone: a batch of numbers doubled, refused whole when one is
    negative; every batch it was given is recorded."""

    task, device = "lm", "cpu"

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def double(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        if any(x < 0 for x in items):
            raise ValueError(f"a negative number in {items}")
        return [2 * x for x in items]


def test_a_bad_request_in_a_batch_fails_alone_and_the_others_get_their_results():
    from seqcap.server_worker import Job, ModelWorker

    doubling = Doubling()
    worker = ModelWorker("d", doubling, max_batch=6, max_wait_ms=60_000)
    try:
        jobs = [Job(Future(), items=items, key=("double",), batch=lambda p, xs: p.double(xs))
                for items in ([1, 2], [-3], [4, 5, 6])]  # fmt: skip
        for job in jobs:  # six items: the batch is full, no wait
            worker.submit(job)
        assert jobs[0].future.result(timeout=60) == [2, 4]
        assert jobs[2].future.result(timeout=60) == [8, 10, 12]
        with pytest.raises(ValueError, match=r"a negative number in \[-3\]"):
            jobs[1].future.result(timeout=60)
    finally:
        worker.close()
    assert doubling.batches == [[1, 2, -3, 4, 5, 6], [1, 2], [-3], [4, 5, 6]]
    assert worker.in_flight == 0 and worker.stats["decode_calls"] == 4


def test_the_gathering_waits_for_as_many_items_as_were_in_flight():
    """The worker's expectation (how many items a batch waits for, up to max_wait): max_batch
    before any batch; then the most items in flight (submitted, not answered) over the last two
    cycles, so a lone client's request is run at once, and a second group of clients that arrived
    while the first was decoded is waited for rather than left to alternate with it."""
    from seqcap.server_worker import Job, ModelWorker

    worker = ModelWorker("d", Doubling(), max_batch=8, max_wait_ms=5)
    worker.close()  # no thread: the test plays the cycles

    def submit(n: int) -> Job:
        job = Job(Future(), items=[0] * n, key=("double",), batch=lambda p, xs: p.double(xs))
        worker.submit(job)
        return job

    assert worker._expected() == 8  # nothing known yet: the whole window, as before
    worker._answered([submit(3)])  # a cycle with three items in flight at most
    assert worker._expected() == 8  # the cycle before still counts
    worker._answered([submit(1)])
    assert worker._expected() == 3
    for _ in range(2):  # a lone client
        worker._answered([submit(1)])
    assert worker._expected() == 1  # its requests run at once
    first = submit(4)  # 4 clients; while their batch is decoded 4 more arrive
    assert worker._expected() == 4
    second = submit(4)
    worker._answered([first])
    assert worker._expected() == 8  # the 4 queued wait for the 4 coming back: one batch of 8
    third = submit(4)
    worker._answered([second, third])
    assert worker.in_flight == 0 and worker._expected() == 8


@pytest.fixture(scope="module")
def multimodal(tmp_path_factory):
    """A tiny doubly attentive multimodal translator (conftest's train_tiny_multimodal) and its
    data folder."""
    ckpt, data = train_tiny_multimodal(tmp_path_factory.mktemp("mmt"))
    translator = load_model(ModelSpec.parse(f"mmt={ckpt}"), "cpu")  # served now, no longer refused
    assert translator.multimodal
    return translator, data


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_multimodal_translator_takes_base64_images_and_equals_the_translator(multimodal, models):
    translator, data = multimodal
    files = [(data / "images" / f"test_{i}.png").read_bytes() for i in range(3)]
    sentences = ["a [v] square in the picture", "", "a [v] square"]
    images = [b64(files[0]), None, b64(files[2])]
    with TestClient(create_app({"mmt": translator, "rev": models["rev"]})) as c:
        r = c.post("/translate/mmt", json={"sentences": sentences, "images": images, "beam_size": 3,
                                           "n_best": 2, "attention": True})  # fmt: skip
        assert r.status_code == 200, r.text
        expected = translator.translate(
            sentences, beam_size=3, n_best=2, return_attention=True,
            images=[pil(files[0]), None, pil(files[2])],
        )  # fmt: skip
        got = r.json()["translations"]
        assert [[{k: t[k] for k in ("text", "score", "tokens")} for t in o] for o in got] == as_json(expected)
        best = expected[0][0]
        assert got[0][0]["attention"] == best.attention.tolist()
        assert got[0][0]["image_attention"] == best.image_attention.tolist()  # doubly: over the regions
        # the same sentence with a different image is translated with that image
        r = c.post("/translate/mmt", json={"sentences": sentences[:1], "images": [b64(files[1])]})
        alone = translator.translate(sentences[:1], images=[pil(files[1])])
        assert r.json()["translations"] == as_json(alone)
        # as `base64` writes it (a line break every 76 characters), and as a browser's data URL
        wrapped = base64.encodebytes(files[1]).decode()
        for text in (wrapped, f"data:image/png;base64,{b64(files[1])}"):
            r = c.post("/translate/mmt", json={"sentences": sentences[:1], "images": [text]})
            assert r.json()["translations"] == as_json(alone)

        def check(body: dict, status: int, *words: str, model: str = "mmt") -> None:
            response = c.post(f"/translate/{model}", json=body)
            assert response.status_code == status, response.text
            assert all(w in response.json()["detail"] for w in words), response.json()

        one = {"sentences": sentences[:1]}
        check(one, 400, "model 'mmt' is a multimodal translator", "give `images`")
        check({**one, "images": [b64(files[0])]}, 400, "model 'rev' is a text-only translator", model="rev")
        check({**one, "images": ["not base64!"]}, 400, "images[0] is not valid base64")
        check({**one, "images": [b64(b"not an image")]}, 400, "image 'images[0]' cannot be decoded")
        check({**one, "images": [b64(files[0][:60])]}, 400, "image 'images[0]' cannot be decoded")
        big = png(size=(6000, 5000))
        check({**one, "images": [b64(big)]}, 413, "images[0]", "30000000 pixels", "--max-image-pixels")
        check({**one, "images": [b64(files[0])] * 2}, 422, "images: 2 for 1 sentences")
        check({**one, "images": [None]}, 422, "images[0] is null, but sentence 0 is not empty")
        assert c.post("/translate/mmt", json={**one, "images": [b64(files[0])]}).status_code == 200
        many = {"sentences": sentences[:1] * 17, "images": [b64(files[0])] * 17}  # --max-images: 16
        check(many, 413, "images: the count 17 is over this server's limit of 16 (--max-images)")


def test_concurrent_multimodal_requests_are_batched_with_their_images(multimodal):
    """Four requests at once, each sentence with its own image: one decode call, and each response
    equals the request translated alone with its images."""
    translator, data = multimodal
    files = [(data / "images" / f"test_{i}.png").read_bytes() for i in range(4)]
    requests = [([0], ["a [v] square in the picture"]), ([1, 2], ["a [v] square", "in the picture"]),
                ([3], ["the [v] square"]), ([2, 0], ["a square", "a [v] picture"])]  # fmt: skip
    bodies = [{"sentences": s, "images": [b64(files[i]) for i in k], "beam_size": 3} for k, s in requests]
    responses, stats = serve_concurrently(translator, bodies, ServerOptions(max_batch=6, max_wait_ms=3000))
    for (k, sentences), response in zip(requests, responses):
        assert response.status_code == 200, response.text
        alone = as_json(translator.translate(sentences, beam_size=3, images=[pil(files[i]) for i in k]))
        got = response.json()["translations"]
        assert [[(t["text"], t["tokens"]) for t in o] for o in got] == [
            [(t["text"], t["tokens"]) for t in o] for o in alone
        ]
        assert [t["score"] for o in got for t in o] == pytest.approx(
            [t["score"] for o in alone for t in o], abs=1e-5
        )
    assert stats == {
        "requests": 4, "decode_calls": 1, "sentences": 6, "largest_batch": 6, "batched_requests": 4,
    }  # fmt: skip


def test_model_spec_syntax():
    spec = ModelSpec.parse("de=a.ckpt,b.ckpt:quantize=int8:lm=lm.ckpt:lm_weight=0.2")
    assert (spec.name, spec.checkpoints) == ("de", ["a.ckpt", "b.ckpt"])
    assert spec.options == {"quantize": "int8", "lm": "lm.ckpt", "lm_weight": "0.2"}
    assert ModelSpec.parse("x=C:/runs/last.ckpt").checkpoints == ["C:/runs/last.ckpt"]
    for bad, words in [
        ("a.ckpt", "expected NAME=CKPT"),
        ("=a.ckpt", "expected NAME=CKPT"),
        ("de=a.ckpt:beam=3", "unknown option 'beam'"),
        ("d/e=a.ckpt", "the name 'd/e'"),
    ]:
        with pytest.raises(ModelSpecError, match=words):
            ModelSpec.parse(bad)


def test_ensemble_quantize_and_lm_options_load(models):
    path = str(LEGACY / "translation.ckpt")
    spec = ModelSpec.parse(f"ens={path},{path}:quantize=int8:lm={LEGACY / 'lm.ckpt'}:lm_weight=0.5")
    ensemble = load_model(spec, "auto")
    assert len(ensemble.members) == 2 and ensemble.lm.weight == 0.5 and ensemble.lm.mode == "rescore"
    with TestClient(create_app({"ens": ensemble}, model_options={"ens": spec.options})) as c:
        listed = c.get("/models").json()["models"]["ens"]
        r = c.post("/translate/ens", json={"sentences": SENTENCES[:2], "beam_size": 3})
    assert listed["ensemble"] is True and listed["checkpoints"] == [path, path]
    assert listed["options"]["quantize"] == "int8" and listed["lm"]["weight"] == 0.5
    assert r.json()["translations"] == as_json(ensemble.translate(SENTENCES[:2], beam_size=3))
    with pytest.raises(ModelSpecError, match="lm_weight and lm_mode need lm="):
        load_model(ModelSpec.parse(f"x={path}:lm_weight=0.5"), "cpu")


def test_models_are_loaded_in_a_thread_that_is_gone_before_serving(monkeypatch):
    """No torch work in the main thread (whose OpenMP threads would slow the workers' decoding):
    the models load in a thread that has exited when load_off_the_main_thread returns."""
    import threading

    import seqcap.server as server

    threads = []

    def load(spec, device):
        threads.append(threading.current_thread())
        return f"{spec.name} on {device}"

    monkeypatch.setattr(server, "load_model", load)
    specs = [ModelSpec("a", ["a.ckpt"]), ModelSpec("b", ["b.ckpt"])]
    assert server.load_off_the_main_thread(specs, "cpu") == {"a": "a on cpu", "b": "b on cpu"}
    assert len(threads) == 2 and threads[0] is threads[1] and threads[0] is not threading.main_thread()
    assert not threads[0].is_alive()


def test_serve_refuses_a_bad_checkpoint_with_a_message(tmp_path, capsys):
    assert main(["--model", f"x={tmp_path / 'missing.ckpt'}"]) == 2
    assert "missing.ckpt" in capsys.readouterr().err
    lm = LEGACY / "lm.ckpt"
    assert main(["--model", f"x={lm}", "--model", f"x={lm}"]) == 2
    assert "a name given twice" in capsys.readouterr().err


def test_seqcap_serve_runs_as_a_command_and_stops_on_sigterm(models):
    port = free_port()
    command = [sys.executable, "-m", "seqcap", "serve", "--model", f"rev={LEGACY / 'translation.ckpt'}",
               "--port", str(port), "--device", "cpu"]  # fmt: skip
    server = subprocess.Popen(
        command,
        cwd=REPO,
        env=cli_env(SEQCAP_TOKEN=TOKEN),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(server, base)
        assert (
            httpx.post(f"{base}/translate/rev", json={"sentences": ["w1 w2 w3"]}, timeout=30).status_code
            == 401
        )
        r = httpx.post(f"{base}/translate/rev", json={"sentences": SENTENCES}, headers=AUTH, timeout=30)
        assert r.status_code == 200 and r.json()["translations"] == as_json(
            models["rev"].translate(SENTENCES)
        )
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            _, err = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    assert server.returncode == 0, err
    assert "rev: translation model from" in err
    # uvicorn's graceful shutdown: the app's lifespan ends (the model workers stop), then the process
    assert "Application shutdown complete" in err and "seqcap serve: stopped (SIGTERM)" in err


def test_a_freshly_trained_checkpoint_is_served_as_its_translator_gives(trained_run):
    """The checkpoint conftest's trained_run writes today (the legacy ones above predate the task
    record in checkpoint["seqcap"]): served, it translates as Translator.from_checkpoint does."""
    from seq2seq.translation.predictor import Translator

    spec = ModelSpec.parse(f"fresh={trained_run.last_ckpt}")
    sentences = ["w1 w2 w3 w4", "w5 w6 w7", "w8 w9 w0 w1 w2"]
    with TestClient(create_app({"fresh": load_model(spec, "cpu")})) as c:
        r = c.post("/translate/fresh", json={"sentences": sentences, "beam_size": 4, "n_best": 2})
        assert c.get("/models").json()["models"]["fresh"]["checkpoints"] == [str(trained_run.last_ckpt)]
    expected = Translator.from_checkpoint(trained_run.last_ckpt, device="cpu").translate(
        sentences, beam_size=4, n_best=2
    )
    assert r.json()["translations"] == as_json(expected)


class Failing:
    """A predictor whose generate fails in a way no check foresaw."""

    task, device = "lm", "cpu"

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, **options) -> list[str]:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return ["fine"]


def test_an_unforeseen_failure_is_a_500_with_a_message_and_the_worker_goes_on():
    with TestClient(create_app({"lm": Failing()}), raise_server_exceptions=False) as c:
        r = c.post("/generate/lm", json={})
        assert r.status_code == 500
        assert r.json() == {"detail": "internal error: RuntimeError: CUDA out of memory (simulated)"}
        assert c.post("/generate/lm", json={}).json() == {"model": "lm", "texts": ["fine"]}
