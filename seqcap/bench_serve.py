"""Load benchmark of `seqcap serve` (issue 30): concurrent clients against a server, measured.

    seqcap bench serve --checkpoint CKPT [--clients 32] [--requests 300 | --duration S]
        [--malformed 0.1 --malformed-requests 10000] [--caption-checkpoint CKPT] [--src FILE]
    seqcap bench serve --url http://127.0.0.1:8000 --model NAME [--caption-model NAME] [--token T]
        [--server-pid PID]

Each client (an httpx.AsyncClient request loop on one asyncio event loop) sends one sentence per
request, beam 5, until --requests are done (or --duration seconds passed). With --checkpoint the
benchmark starts `python -m seqcap.server` itself on a free port, runs, and stops it (SIGTERM); it
measures in one run:

- idle: one client, one sentence at a time (--idle-requests), the batching server;
- batching on: --clients clients, --max-batch (32) and --max-wait-ms (5);
- malformed (with --malformed F): a share F of the requests malformed (random bytes, wrong JSON
  types, huge fields, unknown model names; with a captioning model, --caption-checkpoint (served as
  bench-caption) or --caption-model, also bad images to its /caption: random bytes, a truncated PNG,
  an image over the server's default --max-image-pixels), on the batching server: each must get a
  4xx, none a 5xx, the server must still answer /health; the server's RSS at the --rss-from'th
  request and the last;
- batching off: the same clients against a server started again with --max-batch 1.

With --url it measures idle, the load and (with --malformed) the malformed run against that server;
RSS needs --server-pid. Each run reports requests/s, sentences/s, p50/p95/p99 latency of the
well-formed requests, their errors by status, and the server's RSS (VmRSS of /proc/PID/status)
before and after. The clients share the machine with the server. The exit status is 1 when a
well-formed request got no 200, a malformed one no 4xx, or the server stopped answering.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from seqcap.bench_serve_malformed import malformed_request

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SRC = "data/corpora/gettext-en-de/test.en"
MODEL = "bench"
CAPTION_MODEL = "bench-caption"


@dataclass
class RunReport:
    """One run's numbers. Latencies (ms) and errors are of the well-formed requests; malformed_* count
    the malformed ones by status class."""

    name: str
    clients: int
    requests: int = 0
    seconds: float = 0.0
    requests_per_s: float = 0.0
    sentences_per_s: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)  # status (or "connection") -> count
    malformed: int = 0
    malformed_images: int = 0  # of the malformed: bad images sent to /caption
    malformed_4xx: int = 0
    malformed_5xx: int = 0
    malformed_other: int = 0  # 2xx, 3xx or no answer
    server_up: bool = True
    rss_before_mb: float | None = None
    rss_after_mb: float | None = None
    rss_mark_mb: float | None = None  # at the rss_from'th request
    rss_growth_mb: float | None = None  # from the mark to the end
    mean_batch: float | None = None  # sentences per decode call in the server's /models stats


def rss_mb(pid: int | None) -> float | None:
    """VmRSS of a process in MB (10^6 bytes), or None without a pid or /proc entry."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        return None
    return None


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (so p50 <= p95 <= p99 always); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


async def load(
    url: str,
    model: str,
    sentences: list[str],
    name: str,
    clients: int,
    requests: int,
    duration: float | None = None,
    malformed: float = 0.0,
    token: str | None = None,
    pid: int | None = None,
    rss_from: int = 1000,
    beam_size: int = 5,
    seed: int = 0,
    caption_model: str | None = None,
) -> RunReport:
    """`clients` concurrent request loops until `requests` are sent (or `duration` seconds passed);
    with `malformed`, that share of them (exactly, in request mode) is malformed (with
    `caption_model`, some of them bad images to its /caption)."""
    rng = random.Random(seed)
    malformed_at = set(rng.sample(range(requests), round(malformed * requests))) if not duration else set()
    report = RunReport(name, clients, rss_before_mb=rss_mb(pid))
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    state = {"next": 0, "done": 0}
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    def another() -> int | None:
        i = state["next"]
        if (duration and time.perf_counter() - start >= duration) or (not duration and i >= requests):
            return None
        state["next"] += 1
        return i

    async def client(http: httpx.AsyncClient) -> None:
        while (i := another()) is not None:
            bad = i in malformed_at if not duration else rng.random() < malformed
            if bad:
                path, kwargs = malformed_request(rng, model, caption_model)
            else:
                body = {"sentences": [sentences[i % len(sentences)]], "beam_size": beam_size}
                path, kwargs = f"/translate/{model}", {"json": body}
            t0 = time.perf_counter()
            try:
                status = (await http.post(path, **kwargs)).status_code
            except httpx.TransportError:
                status = None
            elapsed = time.perf_counter() - t0
            state["done"] += 1
            if state["done"] == rss_from:
                report.rss_mark_mb = rss_mb(pid)
            if bad:
                report.malformed += 1
                report.malformed_images += path.startswith("/caption/")
                if status is not None and 400 <= status < 500:
                    report.malformed_4xx += 1
                elif status is not None and status >= 500:
                    report.malformed_5xx += 1
                else:
                    report.malformed_other += 1
            elif status == 200:
                latencies.append(elapsed)
            else:
                errors["connection" if status is None else str(status)] += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits) as http:
        before = await decode_stats(http, model)
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        report.seconds = time.perf_counter() - start
        try:
            report.server_up = (await http.get("/health")).status_code == 200
        except httpx.TransportError:
            report.server_up = False
        after = await decode_stats(http, model) if report.server_up else None
    if before and after and after[0] > before[0]:
        report.mean_batch = (after[1] - before[1]) / (after[0] - before[0])
    report.requests = state["done"]
    report.requests_per_s = report.requests / report.seconds
    report.sentences_per_s = len(latencies) / report.seconds  # one sentence per well-formed request
    report.p50_ms, report.p95_ms, report.p99_ms = (percentile(latencies, p) * 1000 for p in (50, 95, 99))
    report.errors = dict(errors)
    report.rss_after_mb = rss_mb(pid)
    if report.rss_mark_mb is not None and report.rss_after_mb is not None:
        report.rss_growth_mb = report.rss_after_mb - report.rss_mark_mb
    return report


async def decode_stats(http: httpx.AsyncClient, model: str) -> tuple[int, int] | None:
    """(decode_calls, sentences) of the model in the server's GET /models, or None."""
    try:
        stats = (await http.get("/models")).json()["models"][model]["stats"]
        return stats["decode_calls"], stats["sentences"]
    except (httpx.TransportError, ValueError, KeyError, TypeError):
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m seqcap.server` serving one checkpoint as MODEL on a free port, until stop()."""

    def __init__(
        self,
        checkpoint: str,
        max_batch: int,
        max_wait_ms: float,
        device: str = "cpu",
        caption_checkpoint: str | None = None,
    ):
        """caption_checkpoint: also served, as CAPTION_MODEL."""
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = tempfile.TemporaryFile("w+")  # a file, not a pipe: a full pipe would block the server
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        env.pop("SEQCAP_TOKEN", None)
        command = [sys.executable, "-m", "seqcap.server", "--model", f"{MODEL}={checkpoint}",
                   "--port", str(port), "--device", device, "--max-batch", str(max_batch),
                   "--max-wait-ms", str(max_wait_ms), "--log-level", "warning"]  # fmt: skip
        if caption_checkpoint:
            command += ["--model", f"{CAPTION_MODEL}={caption_checkpoint}"]
        self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.pid = self.process.pid

    def wait_ready(self, timeout: float = 180) -> None:
        """Until /health answers; RuntimeError with the server's output if it exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        self.log.seek(0)
        raise RuntimeError(f"the server did not start:\n{self.log.read()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def measure(
    url: str,
    model: str,
    sentences: list[str],
    args: argparse.Namespace,
    pid: int | None,
    prefix: str = "",
    malformed: bool = True,
    caption_model: str | None = None,
) -> list[RunReport]:
    """The idle run, the load run and (when asked) the malformed run against one server (its bad
    images to caption_model's /caption)."""
    common = dict(token=args.token, pid=pid, rss_from=args.rss_from, beam_size=args.beam_size)
    runs = []
    if args.idle_requests:
        runs.append(asyncio.run(load(url, model, sentences, "idle", 1, args.idle_requests, **common)))
    name = f"{prefix}{args.clients} clients"
    runs.append(asyncio.run(load(url, model, sentences, name, args.clients, args.requests, args.duration,
                                 **common)))  # fmt: skip
    if malformed and args.malformed > 0:
        count = args.malformed_requests or args.requests
        name = f"malformed {args.malformed:g}"
        runs.append(asyncio.run(load(url, model, sentences, name, args.clients, count, None, args.malformed,
                                     seed=1, caption_model=caption_model, **common)))  # fmt: skip
    return runs


def benchmark(args: argparse.Namespace) -> list[RunReport]:
    """Every run of the benchmark as the options ask (see the module docstring)."""
    sentences = [s for s in Path(args.src).read_text(encoding="utf-8").splitlines() if s.strip()]
    if not sentences:
        raise ValueError(f"{args.src}: no sentences")
    if args.url:
        return measure(
            args.url, args.model, sentences, args, args.server_pid, caption_model=args.caption_model
        )
    runs = []
    settings = [("batching on: ", args.max_batch, args.max_wait_ms)]
    if args.compare:
        settings.append(("batching off: ", 1, 0.0))
    for prefix, max_batch, max_wait_ms in settings:
        first = not runs  # the malformed run (with its captioning model) and the idle run: once, here
        caption = args.caption_checkpoint if first and args.malformed > 0 else None
        server = Server(args.checkpoint, max_batch, max_wait_ms, args.device, caption_checkpoint=caption)
        try:
            server.wait_ready()
            if not first:
                args = argparse.Namespace(**{**vars(args), "idle_requests": 0})
            runs += measure(server.url, MODEL, sentences, args, server.pid, prefix, malformed=first,
                            caption_model=CAPTION_MODEL if caption else None)  # fmt: skip
        finally:
            server.stop()
    return runs


def table(runs: list[RunReport]) -> str:
    """The runs as a Markdown table."""
    lines = [
        "| run | requests | req/s | sentences/s | p50 ms | p95 ms | p99 ms | errors | malformed: 4xx / 5xx "
        "| RSS before -> after MB (growth from mark) | mean batch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(r.errors.items())) or "0"
        bad = f"{r.malformed}: {r.malformed_4xx} / {r.malformed_5xx}" if r.malformed else "-"
        rss = "-" if r.rss_before_mb is None else f"{r.rss_before_mb:.0f} -> {r.rss_after_mb:.0f}"
        if r.rss_growth_mb is not None:
            rss += f" ({r.rss_growth_mb:+.1f})"
        batch = "-" if r.mean_batch is None else f"{r.mean_batch:.1f}"
        lines.append(f"| {r.name} | {r.requests} | {r.requests_per_s:.1f} | {r.sentences_per_s:.1f} "
                     f"| {r.p50_ms:.1f} | {r.p95_ms:.1f} | {r.p99_ms:.1f} | {errors} | {bad} | {rss} "
                     f"| {batch} |")  # fmt: skip
    return "\n".join(lines)


def failures(runs: list[RunReport]) -> list[str]:
    """What went wrong in the runs: a well-formed request without a 200, a malformed one without a
    4xx, a server that stopped answering /health."""
    out = []
    for r in runs:
        if r.errors:
            out.append(f"{r.name}: well-formed requests failed ({r.errors})")
        if r.malformed_5xx or r.malformed_other:
            out.append(
                f"{r.name}: malformed requests answered 5xx: {r.malformed_5xx}, other: {r.malformed_other}"
            )
        if not r.server_up:
            out.append(f"{r.name}: the server no longer answers /health")
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seqcap bench serve", description=__doc__.split("\n")[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--checkpoint", help="start a server on this translation checkpoint (and stop it)")
    where.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000 (needs --model)")
    p.add_argument("--model", help="the model's name on the --url server")
    p.add_argument(
        "--caption-checkpoint",
        help="with --checkpoint and --malformed: also serve this captioning checkpoint, and send bad images "
        "to its /caption in the malformed run",
    )
    p.add_argument(
        "--caption-model", help="with --url and --malformed: a captioning model to send bad images"
    )
    p.add_argument("--token", default=os.environ.get("SEQCAP_TOKEN"), help="default: $SEQCAP_TOKEN")
    p.add_argument("--server-pid", type=int, help="the --url server's pid, for its RSS")
    p.add_argument("--src", default=DEFAULT_SRC, help=f"one sentence a line (default {DEFAULT_SRC})")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--requests", type=int, default=300, help="requests per load run")
    p.add_argument("--duration", type=float, help="seconds per load run, instead of --requests")
    p.add_argument("--idle-requests", type=int, default=30, help="the idle run's requests (0: none)")
    p.add_argument("--malformed", type=float, default=0.0, help="the malformed run's share (0: no such run)")
    p.add_argument("--malformed-requests", type=int, help="the malformed run's requests (default --requests)")
    p.add_argument("--rss-from", type=int, default=1000, help="RSS growth is measured from this request on")
    p.add_argument("--beam-size", type=int, default=5)
    p.add_argument("--max-batch", type=int, default=32, help="the started server's --max-batch")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="the started server's --max-wait-ms")
    p.add_argument("--no-compare", dest="compare", action="store_false", help="skip the batching-off run")
    p.add_argument("--device", default="cpu", help="the started server's --device")
    p.add_argument("--json", help="also write the runs as JSON to this file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.url and not args.model:
        parser().error("--url needs --model")
    if not 0 <= args.malformed <= 1:
        parser().error("--malformed is a share between 0 and 1")
    try:
        runs = benchmark(args)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(table(runs))
    by_name = {r.name.split(": ")[0]: r for r in runs if ": " in r.name and "clients" in r.name}
    if "batching on" in by_name and "batching off" in by_name:
        ratio = by_name["batching on"].sentences_per_s / by_name["batching off"].sentences_per_s
        print(f"batching on / off: {ratio:.2f}x the sentences/s")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in runs], indent=1))
    problems = failures(runs)
    for line in problems:
        print(f"FAILED {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
