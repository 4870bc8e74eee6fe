"""`seqcap bench serve` (seqcap/bench_serve.py) on the tiny legacy translator: the benchmark starts
its own servers (batching on, then off), and its report holds what it measured: no 5xx, every
malformed request a 4xx, the server up, ordered latency percentiles, batches on the batching server
only, and the server's RSS."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from seqcap.bench_serve import Server, main, parser, percentile, rss_mb
from seqcap.bench_serve_malformed import malformed_image_request, malformed_request
from seqcap.cli import GROUPS

LEGACY = Path(__file__).parent / "fixtures" / "legacy"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    """The benchmark run once as `seqcap bench serve` runs it: 40 requests of 4 clients a run, a
    quarter of the malformed run's malformed (some of them bad images to the legacy captioner's
    /caption); its JSON report by run name."""
    tmp = tmp_path_factory.mktemp("bench_serve")
    src = tmp / "src.txt"
    src.write_text("w1 w2 w3\nw4 w5 w6 w7 w8\n\nw9 w0 w3 w3\n")
    out = tmp / "runs.json"
    argv = ["--checkpoint", str(LEGACY / "translation.ckpt"), "--src", str(src), "--clients", "4",
            "--requests", "40", "--idle-requests", "10", "--malformed", "0.25", "--rss-from", "10",
            "--caption-checkpoint", str(LEGACY / "caption_attention.ckpt"), "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    return {r["name"]: r for r in json.loads(out.read_text())}


def test_every_run_is_reported_with_its_fields(report):
    assert list(report) == ["idle", "batching on: 4 clients", "malformed 0.25", "batching off: 4 clients"]
    for r in report.values():
        assert r["requests"] == (10 if r["name"] == "idle" else 40)
        assert r["seconds"] > 0 and r["requests_per_s"] == pytest.approx(r["requests"] / r["seconds"])
        assert r["rss_before_mb"] > 50 and r["rss_after_mb"] > 50  # a torch process, read from /proc
        assert r["server_up"] is True


def test_no_errors_and_the_percentiles_are_ordered(report):
    for r in report.values():
        assert r["errors"] == {}, r  # every well-formed request got a 200
        assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]
        well_formed = r["requests"] - r["malformed"]
        assert r["sentences_per_s"] == pytest.approx(well_formed / r["seconds"])


def test_every_malformed_request_gets_a_4xx_and_none_a_5xx(report):
    r = report["malformed 0.25"]
    assert r["malformed"] == 10  # exactly a quarter of 40
    assert (r["malformed_4xx"], r["malformed_5xx"], r["malformed_other"]) == (10, 0, 0)
    # of the 10 (seed 1; the malformed requests draw from one generator in turn): a bad image to
    # /caption, a 4xx too; each kind is checked against the server's decoding below
    assert r["malformed_images"] == 1
    assert r["rss_mark_mb"] > 50 and r["rss_growth_mb"] == pytest.approx(r["rss_after_mb"] - r["rss_mark_mb"])
    for name in ("idle", "batching on: 4 clients", "batching off: 4 clients"):
        assert report[name]["malformed"] == 0 and report[name]["malformed_images"] == 0


def test_the_bad_images_are_each_refused_as_the_server_decodes_them():
    """Every kind of bad image the malformed run sends: a 4xx from server_limits.decode_image under
    the server's default limits, with its reason."""
    from fastapi import HTTPException

    from seqcap.server_limits import ServerOptions, decode_image

    rng = random.Random(0)
    requests = [malformed_image_request(rng, "cap") for _ in range(60)]
    reasons = set()
    for path, kwargs in requests:
        ((field, (name, data, kind)),) = kwargs["files"]
        assert (path, field, kind) == ("/caption/cap", "images", "image/png")
        with pytest.raises(HTTPException) as refused:
            decode_image(data, name, ServerOptions())
        assert 400 <= refused.value.status_code < 500
        reasons.add((name, refused.value.status_code, "pixels" in refused.value.detail))
    assert reasons == {
        ("random.png", 400, False),
        ("truncated.png", 400, False),
        ("oversized.png", 413, True),
    }
    without = [malformed_request(random.Random(3), "m")[0] for _ in range(50)]
    assert not any(p.startswith("/caption") for p in without)  # no captioning model: no images


def test_batching_on_batches_and_off_does_not(report):
    assert report["idle"]["mean_batch"] == 1.0  # one client: nothing to batch
    assert report["batching off: 4 clients"]["mean_batch"] == 1.0
    assert 1.0 <= report["batching on: 4 clients"]["mean_batch"] <= 4


def test_malformed_requests_cover_each_kind():
    rng = random.Random(0)
    requests = [malformed_request(rng, "m") for _ in range(200)]
    paths = {path for path, _ in requests}
    assert "/translate/m" in paths and any(p.startswith("/translate/no-such-model") for p in paths)
    bodies = [kw.get("json") for _, kw in requests]
    assert any(isinstance(b, dict) and len(b.get("sentences", "")) == 5000 for b in bodies)
    assert any(isinstance(b, dict) and b.get("beam_size") == 10**6 for b in bodies)
    assert any(isinstance(b, dict) and len(b["sentences"][0]) == 100_000 for b in bodies if b and
               isinstance(b, dict) and isinstance(b.get("sentences"), list) and b["sentences"]
               and isinstance(b["sentences"][0], str))  # fmt: skip
    assert any("content" in kw for _, kw in requests)


def test_helpers_and_command_registration():
    assert percentile([], 50) == 0.0
    assert [percentile([3.0, 1.0, 2.0, 4.0], p) for p in (50, 95, 99)] == [2.0, 4.0, 4.0]
    assert rss_mb(None) is None and rss_mb(2**22 + 12345) is None  # no such process
    assert GROUPS["bench"][1]["serve"] == "seqcap.bench_serve"
    args = parser().parse_args(["--url", "http://127.0.0.1:1", "--model", "de"])
    assert (args.clients, args.beam_size, args.max_batch, args.max_wait_ms) == (32, 5, 32, 5.0)
    with pytest.raises(SystemExit):
        main(["--url", "http://127.0.0.1:1"])  # --url needs --model


def test_against_a_running_server_by_url(tmp_path, capsys):
    """--url mode for a duration, RSS by --server-pid; a wrong model name is an error in every
    request, and the exit status says so."""
    src = tmp_path / "src.txt"
    src.write_text("w1 w2 w3\n")
    server = Server(str(LEGACY / "translation.ckpt"), max_batch=32, max_wait_ms=5)
    try:
        server.wait_ready()
        common = ["--url", server.url, "--src", str(src), "--clients", "2", "--idle-requests", "0"]
        out = tmp_path / "runs.json"
        argv = [*common, "--model", "bench", "--duration", "0.5", "--server-pid", str(server.pid)]
        assert main([*argv, "--json", str(out)]) == 0
        (run,) = json.loads(out.read_text())
        assert run["name"] == "2 clients" and run["requests"] > 0 and run["errors"] == {}
        assert 0.5 <= run["seconds"] < 10 and run["rss_before_mb"] > 50
        assert main([*common, "--model", "nope", "--requests", "4", "--json", str(out)]) == 1
        assert json.loads(out.read_text())[0]["errors"] == {"404": 4}
        assert "FAILED 2 clients: well-formed requests failed ({'404': 4})" in capsys.readouterr().err
    finally:
        server.stop()
    assert server.process.returncode == 0
