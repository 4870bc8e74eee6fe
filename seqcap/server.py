"""`seqcap serve`: trained models behind a JSON HTTP API (FastAPI on uvicorn), over predictors only.

    seqcap serve --model de=runs/.../last.ckpt --model lm=lm.ckpt [--port 8000] [--token T]

    POST /translate/{name}   {"sentences": [...], "beam_size": 5, "alpha": 0.6, "n_best": 1,
                              "attention": false}
    POST /caption/{name}     multipart: one or more `images` files; form fields method, beam_size, max_len
    POST /answer/{name}      multipart: one `image` file and `questions` (the field repeated); top
    POST /generate/{name}    {"num": 5, "prompt": "", "max_len": 50, "temperature": 1.0, "top_k": 0,
                              "seed": 0}
    POST /score/{name}       {"sentences": [...]}
    GET  /models             what is loaded: each model's task, checkpoints, options and batching stats
    GET  /health             {"status": "ok"}; never needs the token
    GET  /docs               FastAPI's OpenAPI page

A `--model` value is NAME=CKPT[,CKPT...][:KEY=VALUE...]: several checkpoints make an ensemble
(Predictor.from_checkpoint with a list), and the options after colons are quantize=int8, and for a
translator or captioner lm=LM_CKPT, lm_weight=W, lm_mode=rescore|fusion (seq2seq.lm.rescoring).
Models come from the command line only: no request names a file, so none can make the server read
one from disk (images arrive as uploaded bytes and are decoded by PIL, never unpickled).

Every model has one worker thread that owns it: torch runs one forward pass at a time per model.
Concurrent /translate requests to one model that share their search options are decoded together
(dynamic batching): the worker takes a request, then waits up to --max-wait-ms for more until
--max-batch sentences are queued, and translates them in one call. Each response equals that of the
request alone (texts exactly; scores to float rounding, ~1e-7). --max-batch 1 or --max-wait-ms 0
turns the waiting off. The counts of decode calls and batch sizes are in GET /models ("stats").

Limits (ServerOptions, each a command-line option) answer 413 for a body, an image or a list too
large and 422 for a search option over its cap, with a message that names the limit and its value.
Any error a request can cause is a 4xx with a JSON {"detail": "..."}; the server stays up.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import ipaddress
import logging
import os
import queue
import secrets
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, Field

log = logging.getLogger("seqcap.server")

TOKEN_ENV = "SEQCAP_TOKEN"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
ENDPOINT_TASKS = {  # endpoint -> the tasks whose models it serves
    "translate": ("translation",),
    "caption": ("captioning",),
    "answer": ("vqa",),
    "generate": ("lm",),
    "score": ("lm",),
}
MODEL_OPTIONS = ("quantize", "lm", "lm_weight", "lm_mode")
# module level: the route signatures are strings here (from __future__ import annotations), read in
# this module's globals
BEARER = HTTPBearer(auto_error=False, description="the --token / SEQCAP_TOKEN of the server")


# the requests' defaults that a limit must allow: beam_size 5, top 5, num 5, max_len 50
REQUEST_DEFAULTS = {"max_beam": 5, "max_n_best": 5, "max_num": 5, "max_output_len": 50}


@dataclass(frozen=True)
class ServerOptions:
    """How the server batches, whom it lets in, and the limits on one request (each one a
    `seqcap serve` option of the same name with hyphens)."""

    max_batch: int = 32  # sentences decoded together per model (1: no batching)
    max_wait_ms: float = 5.0  # how long the worker waits for more requests to batch (0: none)
    # when set, every request but /health, /docs and /openapi.json needs `Authorization: Bearer TOKEN`
    token: str | None = None
    max_body_bytes: int = 20_000_000
    max_image_bytes: int = 10_000_000  # one uploaded image file
    max_image_pixels: int = 25_000_000  # width x height of one image
    max_images: int = 16  # images in one /caption request
    max_sentences: int = 64  # sentences (or questions) in one request
    max_sentence_chars: int = 2000  # characters in one sentence, question or prompt
    max_beam: int = 16  # beam_size
    max_n_best: int = 16  # n_best (and /answer's top)
    max_num: int = 64  # /generate's num
    max_output_len: int = 200  # /generate's and /caption's max_len

    def __post_init__(self) -> None:
        """ValueError for a limit below the default of what it limits (a request that leaves the
        option out would be refused) or a batch below 1."""
        if self.max_batch < 1 or self.max_wait_ms < 0:
            raise ValueError(
                f"max_batch must be >= 1 and max_wait_ms >= 0, got {self.max_batch}, {self.max_wait_ms}"
            )
        for name, least in REQUEST_DEFAULTS.items():
            if getattr(self, name) < least:
                option = "--" + name.replace("_", "-")
                raise ValueError(
                    f"{option} must be at least {least} (the requests' default), got {getattr(self, name)}"
                )


class ModelSpecError(ValueError):
    """A --model value that cannot be read; the message shows the syntax."""


@dataclass
class ModelSpec:
    """One --model value: NAME=CKPT[,CKPT...][:KEY=VALUE...]."""

    name: str
    checkpoints: list[str]
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        """ModelSpecError naming the value when the name, a checkpoint or an option is missing or
        unknown. A colon starts an option only when KEY=VALUE follows with a known KEY, so a path
        with a colon (C:/x.ckpt) stays a path."""
        syntax = (
            "expected NAME=CKPT[,CKPT...][:quantize=int8][:lm=LM_CKPT][:lm_weight=W][:lm_mode=rescore|fusion]"
        )
        name, eq, rest = text.partition("=")
        if not eq or not name or not rest:
            raise ModelSpecError(f"--model {text!r}: {syntax}")
        if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ModelSpecError(
                f"--model {text!r}: the name {name!r} may hold letters, digits, '-', '_', '.'"
            )
        parts = rest.split(":")
        options: dict[str, str] = {}
        while len(parts) > 1 and "=" in parts[-1]:
            key, _, value = parts.pop().partition("=")
            if key not in MODEL_OPTIONS:
                raise ModelSpecError(
                    f"--model {text!r}: unknown option {key!r} (known: {', '.join(MODEL_OPTIONS)})"
                )
            options[key] = value
        checkpoints = [p for p in ":".join(parts).split(",") if p]
        if not checkpoints:
            raise ModelSpecError(f"--model {text!r}: no checkpoint; {syntax}")
        return cls(name, checkpoints, dict(reversed(options.items())))


def load_model(spec: ModelSpec, device: str = "auto"):
    """The predictor of a ModelSpec (an ensemble for several checkpoints), with its LM attached;
    CheckpointError / ModelSpecError with the file or option named."""
    from seq2seq.lm.rescoring import LanguageModelScoring
    from seq2seq.predictor import Predictor

    quantize = spec.options.get("quantize")
    if quantize not in (None, "int8"):
        raise ModelSpecError(f"--model {spec.name}: quantize must be int8, got {quantize!r}")
    predictor = Predictor.from_checkpoint(spec.checkpoints, device=device, quantize=quantize)
    if "lm" in spec.options:
        if not hasattr(predictor, "use_lm"):
            raise ModelSpecError(f"--model {spec.name}: a {predictor.task} model takes no lm option")
        try:
            weight = float(spec.options.get("lm_weight", "0.3"))
        except ValueError:
            raise ModelSpecError(f"--model {spec.name}: lm_weight must be a number") from None
        mode = spec.options.get("lm_mode", "rescore")
        if mode not in ("rescore", "fusion"):
            raise ModelSpecError(f"--model {spec.name}: lm_mode must be rescore or fusion, got {mode!r}")
        predictor.use_lm(
            LanguageModelScoring.from_checkpoint(spec.options["lm"], weight, mode, predictor.device)
        )
    elif set(spec.options) & {"lm_weight", "lm_mode"}:
        raise ModelSpecError(f"--model {spec.name}: lm_weight and lm_mode need lm=LM_CKPT")
    if getattr(predictor, "multimodal", False):
        raise ModelSpecError(
            f"--model {spec.name}: a multimodal translator (one image a sentence) is not served yet"
        )
    return predictor


# ---------------------------------------------------------------------------------------------------
# the worker that owns a model


@dataclass
class Job:
    """One request's work for a model's worker: `run(predictor)` for a plain job; for a batchable
    translate job the sentences and the search options (`key`) it shares with others."""

    future: Future
    run: Callable[[Any], Any] | None = None
    sentences: list[str] | None = None
    key: tuple | None = None


class ModelWorker:
    """A thread that owns one predictor: it runs one job at a time and translates compatible
    /translate jobs together (up to max_batch sentences, waiting up to max_wait_ms for them)."""

    def __init__(self, name: str, predictor, max_batch: int, max_wait_ms: float):
        self.name, self.predictor = name, predictor
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.queue: queue.Queue[Job | None] = queue.Queue()
        self.held: deque[Job] = deque()  # taken while batching but not compatible: next in line
        self.stats = {
            "requests": 0,
            "decode_calls": 0,
            "sentences": 0,
            "largest_batch": 0,
            "batched_requests": 0,
        }
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, name=f"seqcap-model-{name}", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> Future:
        with self.lock:
            self.stats["requests"] += 1
        self.queue.put(job)
        return job.future

    def close(self) -> None:
        """Stops the thread after the job in hand; queued jobs fail with "shutting down"."""
        self.queue.put(None)
        self.thread.join(timeout=10)

    def _fail_rest(self, jobs: list[Job]) -> None:
        """Fails `jobs`, the held ones and every queued one: the server is closing."""
        rest = [*jobs, *self.held]
        self.held.clear()
        while True:
            try:
                rest.append(self.queue.get_nowait())
            except queue.Empty:
                break
        for j in rest:
            if j is not None and not j.future.done():
                j.future.set_exception(RuntimeError("the server is shutting down"))

    def _next(self, timeout: float | None) -> Job | None:
        if self.held:
            return self.held.popleft()
        return self.queue.get(timeout=timeout)

    def _loop(self) -> None:
        while True:
            job = self._next(None)
            if job is None:
                self._fail_rest([])
                return
            if job.run is not None:
                self._settle([job], lambda job=job: [job.run(self.predictor)])
                continue
            jobs = self._gather(job)
            if jobs is None:
                return
            self._settle(jobs, lambda jobs=jobs: self._translate(jobs))

    def _gather(self, first: Job) -> list[Job] | None:
        """`first` and the compatible translate jobs that come within max_wait, up to max_batch
        sentences; None when the server is closing (the jobs then fail)."""
        jobs, size = [first], len(first.sentences)
        deadline = time.monotonic() + self.max_wait
        skipped: list[Job] = []
        while size < self.max_batch and self.max_wait > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0 and not self.held:
                break
            try:
                job = self.held.popleft() if self.held else self.queue.get(timeout=max(remaining, 0))
            except queue.Empty:
                break
            if job is None:
                self._fail_rest(jobs + skipped)
                return None
            if job.key == first.key and size + len(job.sentences) <= self.max_batch:
                jobs.append(job)
                size += len(job.sentences)
            else:
                skipped.append(job)
                if job.key == first.key:
                    break  # the batch is full
        self.held.extendleft(reversed(skipped))
        return jobs

    def _translate(self, jobs: list[Job]) -> list:
        """One Translator.translate call over every job's sentences -> each job's share."""
        sentences = [s for j in jobs for s in j.sentences]
        beam_size, alpha, n_best, attention = jobs[0].key
        results = self.predictor.translate(
            sentences, beam_size=beam_size, alpha=alpha, n_best=n_best,
            batch_size=self.max_batch, return_attention=attention,
        )  # fmt: skip
        with self.lock:
            self.stats["sentences"] += len(sentences)
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(sentences))
            self.stats["batched_requests"] += len(jobs) if len(jobs) > 1 else 0
        out, start = [], 0
        for j in jobs:
            out.append(results[start : start + len(j.sentences)])
            start += len(j.sentences)
        return out

    def _settle(self, jobs: list[Job], work: Callable[[], list]) -> None:
        with self.lock:
            self.stats["decode_calls"] += 1
        try:
            values = work()
        except BaseException as e:  # handed to the request, which answers it; the worker goes on
            for j in jobs:
                j.future.set_exception(e)
            return
        for j, value in zip(jobs, values):
            j.future.set_result(value)


# ---------------------------------------------------------------------------------------------------
# request bodies


class TranslateRequest(BaseModel):
    sentences: list[str] = Field(description="source sentences, raw text (tokenized by the model)")
    beam_size: int = Field(5, ge=1)
    alpha: float = Field(0.6, ge=0, le=10, description="GNMT length penalty exponent")
    n_best: int = Field(1, ge=1, description="translations per sentence, best first (<= beam_size)")
    attention: bool = Field(False, description="also return each translation's attention over the source")


class GenerateRequest(BaseModel):
    num: int = Field(5, ge=1)
    prompt: str = ""
    max_len: int = Field(50, ge=1)
    temperature: float = Field(1.0, ge=0, le=100, description="0: greedy")
    top_k: int = Field(0, ge=0, description="0: all tokens")
    seed: int | None = Field(
        0, ge=0, le=2**63 - 1, description="the same seed gives the same samples; null: random"
    )


class ScoreRequest(BaseModel):
    sentences: list[str]


class BodyLimit:
    """ASGI middleware: 413 for a request body over `limit` bytes, from Content-Length or, for a
    chunked body, as soon as the bytes received pass it."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = f"the request body is over this server's limit of {self.limit} bytes (--max-body-bytes)"
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await JSONResponse({"detail": message}, status_code=413)(scope, receive, send)
        received = 0

        async def limited():
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, message)
            return event

        return await self.app(scope, limited, send)


def _limit(value: int, cap: int, what: str, option: str, status: int = 422) -> None:
    if value > cap:
        raise HTTPException(status, f"{what} {value} is over this server's limit of {cap} ({option})")


def _check_texts(texts: list[str], options: ServerOptions, what: str) -> None:
    _limit(len(texts), options.max_sentences, f"{what}: the count", "--max-sentences", 413)
    for i, text in enumerate(texts):
        if len(text) > options.max_sentence_chars:
            raise HTTPException(
                413,
                f"{what} {i}: {len(text)} characters, over this server's limit of "
                f"{options.max_sentence_chars} (--max-sentence-chars)",
            )


def decode_image(data: bytes, filename: str, options: ServerOptions) -> Image.Image:
    """Uploaded bytes -> an RGB PIL image; 413 over the byte or pixel limit, 400 when PIL cannot
    decode it (the message names the upload)."""
    if len(data) > options.max_image_bytes:  # the caller reads at most one byte more than the limit
        raise HTTPException(
            413,
            f"image {filename!r}: over this server's limit of {options.max_image_bytes} bytes "
            "(--max-image-bytes)",
        )
    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only
            width, height = img.size
            if width * height > options.max_image_pixels:
                raise HTTPException(
                    413,
                    f"image {filename!r}: {width}x{height} = {width * height} pixels, over this server's "
                    f"limit of {options.max_image_pixels} (--max-image-pixels)",
                )
            img.load()
            return img.convert("RGB")
    except UnidentifiedImageError:
        raise HTTPException(
            400, f"image {filename!r} cannot be decoded: not an image format PIL reads"
        ) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise HTTPException(400, f"image {filename!r} cannot be decoded: {e}") from None


# ---------------------------------------------------------------------------------------------------
# the app


def describe(name: str, predictor, options: dict | None = None) -> dict:
    """A loaded model as GET /models lists it."""
    members = getattr(predictor, "members", [predictor])
    info = {
        "task": predictor.task,
        "endpoints": [f"/{e}/{name}" for e, tasks in ENDPOINT_TASKS.items() if predictor.task in tasks],
        "checkpoints": [str(getattr(m, "checkpoint", None)) for m in members],
        "ensemble": len(members) > 1,
        "device": str(predictor.device),
        "options": dict(options or {}),
    }
    if getattr(predictor, "lm", None) is not None:
        info["lm"] = {"checkpoint": str(predictor.lm.lm.checkpoint), "weight": predictor.lm.weight,
                      "mode": predictor.lm.mode}  # fmt: skip
    if hasattr(predictor, "model_kind"):
        info["model_kind"] = predictor.model_kind
    return info


def create_app(
    models: dict[str, Any], options: ServerOptions | None = None, model_options: dict[str, dict] | None = None
) -> FastAPI:
    """The FastAPI app serving `models` (name -> Predictor), each owned by a ModelWorker that starts
    here and stops when the app shuts down. model_options: what /models shows as each model's
    options (the --model options it was loaded with)."""
    options = options or ServerOptions()
    model_options = model_options or {}
    workers = {
        name: ModelWorker(name, p, options.max_batch, options.max_wait_ms) for name, p in models.items()
    }

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        for worker in workers.values():
            await asyncio.to_thread(worker.close)

    async def authorize(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> None:
        if options.token is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not secrets.compare_digest(given.encode(), options.token.encode()):
            raise HTTPException(
                401,
                "this server needs `Authorization: Bearer TOKEN` (the token it was started with)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    app = FastAPI(
        title="seqcap",
        summary="translation, language model, captioning and VQA checkpoints over HTTP",
        lifespan=lifespan,
    )
    protected = [Depends(authorize)]  # every route but /health (and FastAPI's /docs, /openapi.json)
    app.state.workers = workers
    app.add_middleware(BodyLimit, limit=options.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 with one readable line ("body.beam_size: Input should be ...") per problem."""
        lines = []
        for error in exc.errors():
            if error.get("type") == "json_invalid":
                at, why = error.get("loc", ("", "?"))[-1], (error.get("ctx") or {}).get("error", "")
                lines.append(f"the body is not valid JSON (at character {at}: {why})")
                continue
            where = ".".join(str(p) for p in error.get("loc", ()))
            lines.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
        return JSONResponse({"detail": "; ".join(lines)}, status_code=422)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        """500 with a JSON message for what no check foresaw (logged with its traceback); the server
        goes on."""
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    def worker_for(name: str, endpoint: str) -> ModelWorker:
        worker = workers.get(name)
        if worker is None:
            known = ", ".join(sorted(workers)) or "none"
            raise HTTPException(404, f"no model named {name!r} (loaded: {known})")
        task = worker.predictor.task
        if task not in ENDPOINT_TASKS[endpoint]:
            right = [f"/{e}" for e, tasks in ENDPOINT_TASKS.items() if task in tasks]
            raise HTTPException(
                400,
                f"model {name!r} is a {task} model: /{endpoint} does not serve it (use {' or '.join(right)})",
            )
        return worker

    async def run(worker: ModelWorker, job: Job):
        """The job's result from the worker; a ValueError of the predictor (bad input) -> 400."""
        try:
            return await asyncio.wrap_future(worker.submit(job))
        except ValueError as e:
            raise HTTPException(400, str(e)) from None

    @app.get("/health", tags=["server"])
    async def health() -> dict:
        """Liveness: {"status": "ok"} with the names of the loaded models. Needs no token."""
        return {"status": "ok", "models": sorted(workers)}

    @app.get("/models", dependencies=protected, tags=["server"])
    async def list_models() -> dict:
        """Each loaded model: task, endpoints, checkpoints, options, and its worker's stats
        (requests, decode_calls, sentences, largest_batch, batched_requests)."""
        out = {}
        for name, worker in workers.items():
            with worker.lock:
                stats = dict(worker.stats)
            out[name] = {**describe(name, worker.predictor, model_options.get(name)), "stats": stats}
        return {
            "models": out,
            "batching": {"max_batch": options.max_batch, "max_wait_ms": options.max_wait_ms},
            "limits": {
                k: v
                for k, v in asdict(options).items()
                if k.startswith("max_") and k not in ("max_batch", "max_wait_ms")
            },
        }

    @app.post("/translate/{name}", dependencies=protected, tags=["translation"])
    async def translate(name: str, body: TranslateRequest) -> dict:
        """Translations of each sentence (n_best, best first) with their scores (log-probability
        over the length penalty); with attention, the (target x source) weights and source tokens."""
        worker = worker_for(name, "translate")
        _check_texts(body.sentences, options, "sentences")
        _limit(body.beam_size, options.max_beam, "beam_size", "--max-beam")
        _limit(body.n_best, options.max_n_best, "n_best", "--max-n-best")
        if body.n_best > body.beam_size:
            raise HTTPException(422, f"n_best {body.n_best} is over beam_size {body.beam_size}: a beam keeps "
                                "beam_size hypotheses")  # fmt: skip
        key = (body.beam_size, body.alpha, body.n_best, body.attention)
        results = await run(worker, Job(Future(), sentences=list(body.sentences), key=key))
        out = []
        for sentence, options_of in zip(body.sentences, results):
            entries = []
            for t in options_of:
                entry = {"text": t.text, "score": float(t.score), "tokens": list(t.tokens)}
                if body.attention:
                    entry["attention"] = None if t.attention is None else t.attention.float().tolist()
                    entry["source_tokens"] = worker.predictor.encode(sentence)[1]
                entries.append(entry)
            out.append(entries)
        return {"model": name, "translations": out}

    @app.post("/caption/{name}", dependencies=protected, tags=["captioning"])
    async def caption(
        name: str,
        images: Annotated[list[UploadFile], File(description="one or more image files (PNG, JPEG, ...)")],
        method: Annotated[Literal["greedy", "beam"], Form()] = "beam",
        beam_size: Annotated[int, Form(ge=1)] = 3,
        max_len: Annotated[int | None, Form(ge=1, description="default: the checkpoint's")] = None,
        attention: Annotated[bool, Form(description="attention over the image grid")] = False,
    ) -> dict:
        """One caption per uploaded image, in order: text, tokens, score (and attention over the
        image grid for an attention captioner)."""
        worker = worker_for(name, "caption")
        _limit(len(images), options.max_images, "images: the count", "--max-images", 413)
        _limit(beam_size, options.max_beam, "beam_size", "--max-beam")
        if max_len is not None:
            _limit(max_len, options.max_output_len, "max_len", "--max-output-len")
        pictures = []
        for i, f in enumerate(images):
            data = await f.read(options.max_image_bytes + 1)
            pictures.append(decode_image(data, f.filename or f"<image {i}>", options))

        def work(captioner):
            return captioner.caption(
                pictures, method=method, beam_size=beam_size, max_len=max_len, return_attention=attention
            )

        captions = await run(worker, Job(Future(), run=work))
        out = []
        for f, c in zip(images, captions):
            entry = {"image": f.filename, "text": c.text, "tokens": c.tokens, "score": float(c.score)}
            if attention:
                entry["attention"] = None if c.attention is None else c.attention.tolist()
            out.append(entry)
        return {"model": name, "captions": out}

    @app.post("/answer/{name}", dependencies=protected, tags=["vqa"])
    async def answer(
        name: str,
        image: Annotated[UploadFile, File(description="one image file")],
        questions: Annotated[list[str], Form(description="the questions (repeat the field for several)")],
        top: Annotated[int, Form(ge=1)] = 5,
    ) -> dict:
        """The `top` answers of each question about the image, with their probabilities, and the
        question words the model never saw."""
        worker = worker_for(name, "answer")
        _check_texts(questions, options, "questions")
        _limit(top, options.max_n_best, "top", "--max-n-best")
        picture = decode_image(
            await image.read(options.max_image_bytes + 1), image.filename or "<image>", options
        )
        answers = await run(worker, Job(Future(), run=lambda a: a.answer(picture, questions, top=top)))
        return {
            "model": name,
            "image": image.filename,
            "answers": [
                {"question": a.question, "top": [{"answer": w, "probability": p} for w, p in a.top],
                 "unknown": a.unknown}
                for a in answers
            ],
        }  # fmt: skip

    @app.post("/generate/{name}", dependencies=protected, tags=["language model"])
    async def generate(name: str, body: GenerateRequest) -> dict:
        """`num` samples continuing the prompt (the same seed, the same samples)."""
        worker = worker_for(name, "generate")
        _check_texts([body.prompt], options, "prompt")
        _limit(body.num, options.max_num, "num", "--max-num")
        _limit(body.max_len, options.max_output_len, "max_len", "--max-output-len")
        args = body.model_dump()
        texts = await run(worker, Job(Future(), run=lambda lm: lm.generate(**args)))
        return {"model": name, "texts": texts}

    @app.post("/score/{name}", dependencies=protected, tags=["language model"])
    async def score(name: str, body: ScoreRequest) -> dict:
        """log P(sentence <eos> | <bos>) in nats of each sentence, with the tokens it counted."""
        worker = worker_for(name, "score")
        _check_texts(body.sentences, options, "sentences")
        scores = await run(worker, Job(Future(), run=lambda lm: lm.score(body.sentences)))
        return {"model": name, "scores": [{"log_prob": float(lp), "tokens": n} for lp, n in scores]}

    return app


# ---------------------------------------------------------------------------------------------------
# the command


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="seqcap serve",
        description="Serve checkpoints over a JSON HTTP API (docs at /docs). Models come from the command "
        "line only.",
    )
    p.add_argument(
        "--model", action="append", required=True, metavar="NAME=CKPT[,CKPT...][:KEY=VALUE...]",
        help="a model to serve, repeatable; several checkpoints make an ensemble; options: quantize=int8, "
        "lm=LM_CKPT, lm_weight=W, lm_mode=rescore|fusion (e.g. de=a.ckpt,b.ckpt:quantize=int8)",
    )  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="the address to bind (default: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--token", default=None, help=f"require `Authorization: Bearer TOKEN` (default: ${TOKEN_ENV})"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    defaults = ServerOptions()
    for f in [f.name for f in fields(ServerOptions) if f.name.startswith("max_")]:
        value = getattr(defaults, f)
        p.add_argument("--" + f.replace("_", "-"), type=type(value), default=value, help=f"(default {value})")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """`seqcap serve ...`: load every --model, then run uvicorn until SIGINT/SIGTERM."""
    import uvicorn

    from seq2seq.training.checkpoint import CheckpointError

    args = parser().parse_args(argv)
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    try:
        options = ServerOptions(token=token, **{k: v for k, v in vars(args).items() if k.startswith("max_")})
        specs = [ModelSpec.parse(m) for m in args.model]
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ModelSpecError(f"--model: a name given twice ({', '.join(names)})")
        models = {s.name: load_model(s, args.device) for s in specs}
    except (ValueError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback and token is None:
        print(f"warning: serving on {args.host} without a token: anyone who can reach it can use it "
              f"(--token or ${TOKEN_ENV})", file=sys.stderr)  # fmt: skip
    for s in specs:
        print(f"{s.name}: {models[s.name].task} model from {', '.join(s.checkpoints)}", file=sys.stderr)
    app = create_app(models, options, {s.name: s.options for s in specs})
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again with the handler
    # that was there before: this one records it, so a requested stop exits 0 rather than -15
    stopped: list[int] = []
    previous = {sig: signal.signal(sig, lambda number, frame: stopped.append(number)) for sig in STOP_SIGNALS}
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopped:
        print(f"seqcap serve: stopped ({signal.Signals(stopped[0]).name})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
