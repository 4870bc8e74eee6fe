"""The FastAPI app of `seqcap serve` (seqcap/server.py describes the endpoints): routes over
predictors, each model behind its ModelWorker (seqcap/server_worker.py), the limits of
seqcap/server_limits.py, the bearer token."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import secrets
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from seqcap.server_demo import DEMO_PATHS, add_demo
from seqcap.server_limits import BodyLimit, ServerOptions, check_texts, decode_image, limit
from seqcap.server_worker import Job, ModelWorker

log = logging.getLogger("seqcap.server")

ENDPOINT_TASKS = {  # endpoint -> the tasks whose models it serves
    "translate": ("translation",),
    "caption": ("captioning",),
    "answer": ("vqa",),
    "generate": ("lm",),
    "score": ("lm",),
}
# module level: the route signatures are strings here (from __future__ import annotations), read in
# this module's globals
BEARER = HTTPBearer(auto_error=False, description="the --token / SEQCAP_TOKEN of the server")


class TranslateRequest(BaseModel):
    sentences: list[str] = Field(description="source sentences, raw text (tokenized by the model)")
    beam_size: int = Field(5, ge=1)
    alpha: float = Field(0.6, ge=0, le=10, description="GNMT length penalty exponent")
    n_best: int = Field(1, ge=1, description="translations per sentence, best first (<= beam_size)")
    attention: bool = Field(False, description="also return each translation's attention over the source")
    images: list[str | None] | None = Field(
        None,
        description="a multimodal model's images: one base64-encoded image file (PNG, JPEG, ...) a "
        "sentence (line breaks and a data:...;base64, prefix allowed), null for an empty sentence; a "
        "text-only model takes none",
    )


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


# no token needed: liveness, the API's docs and the demo page's files (neither holds a model or data)
OPEN_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc", *DEMO_PATHS})
UNAUTHORIZED = "this server needs `Authorization: Bearer TOKEN` (the token it was started with)"


def token_matches(authorization: str | None, token: str) -> bool:
    """Whether an Authorization header value is `Bearer TOKEN` (compared in constant time)."""
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), token.encode())


class TokenCheck:
    """ASGI middleware: 401 for a request without `Authorization: Bearer TOKEN`, except OPEN_PATHS,
    before anything of its body is read."""

    def __init__(self, app, token: str):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            if not token_matches(header, self.token):
                response = JSONResponse({"detail": UNAUTHORIZED}, 401, headers={"WWW-Authenticate": "Bearer"})
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


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
    if predictor.task == "translation":
        info["multimodal"] = bool(getattr(predictor, "multimodal", False))  # takes one image a sentence
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
        """The token again (TokenCheck checked it first): this dependency puts the bearer scheme in
        the OpenAPI description, so /docs has an Authorize button."""
        if options.token is not None and not token_matches(
            None if credentials is None else f"Bearer {credentials.credentials}", options.token
        ):
            raise HTTPException(401, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})

    app = FastAPI(
        title="seqcap",
        summary="translation, language model, captioning and VQA checkpoints over HTTP",
        lifespan=lifespan,
    )
    protected = [Depends(authorize)]  # every route but /health (and FastAPI's /docs, /openapi.json)
    app.state.workers = workers
    app.add_middleware(BodyLimit, limit=options.max_body_bytes)
    if options.token is not None:  # added last, so it runs first: no body is read before the token
        app.add_middleware(TokenCheck, token=options.token)

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

    add_demo(app)

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
        over the length penalty); with attention, the (target x source) weights and source tokens
        (and a multimodal model's (target x regions) image_attention). A multimodal model takes one
        base64-encoded image a sentence in `images`."""
        worker = worker_for(name, "translate")
        check_texts(body.sentences, options, "sentences")
        limit(body.beam_size, options.max_beam, "beam_size", "--max-beam")
        limit(body.n_best, options.max_n_best, "n_best", "--max-n-best")
        if body.n_best > body.beam_size:
            raise HTTPException(422, f"n_best {body.n_best} is over beam_size {body.beam_size}: a beam keeps "
                                "beam_size hypotheses")  # fmt: skip
        pictures = await translate_images(name, worker.predictor, body)
        beam_size, alpha, n_best, attention = body.beam_size, body.alpha, body.n_best, body.attention

        def batch(translator, items: list[tuple]) -> list:
            return translator.translate(
                [s for s, _ in items], beam_size=beam_size, alpha=alpha, n_best=n_best,
                batch_size=options.max_batch, return_attention=attention,
                images=None if pictures is None else [p for _, p in items],
            )  # fmt: skip

        items = list(zip(body.sentences, pictures or [None] * len(body.sentences)))
        key = ("translate", beam_size, alpha, n_best, attention, pictures is not None)
        results = await run(worker, Job(Future(), items=items, key=key, batch=batch))
        out = []
        for sentence, options_of in zip(body.sentences, results):
            entries = []
            for t in options_of:
                entry = {"text": t.text, "score": float(t.score), "tokens": list(t.tokens)}
                if body.attention:
                    entry["attention"] = None if t.attention is None else t.attention.float().tolist()
                    entry["source_tokens"] = worker.predictor.encode(sentence)[1]
                    if t.image_attention is not None:
                        entry["image_attention"] = t.image_attention.float().tolist()
                entries.append(entry)
            out.append(entries)
        return {"model": name, "translations": out}

    async def translate_images(name: str, translator, body: TranslateRequest) -> list | None:
        """The request's images decoded (PIL, None for a null entry), or None for a text-only
        model; a 4xx when a multimodal model gets none, a text-only one some, or an entry is missing,
        not base64 or not an image (named images[i])."""
        multimodal = getattr(translator, "multimodal", False)
        if body.images is None:
            if multimodal:
                raise HTTPException(
                    400,
                    f"model {name!r} is a multimodal translator: give `images`, one base64-encoded image "
                    "a sentence (null for an empty sentence)",
                )
            return None
        if not multimodal:
            raise HTTPException(400, f"model {name!r} is a text-only translator: it takes no `images`")
        limit(
            sum(i is not None for i in body.images),
            options.max_images,
            "images: the count",
            "--max-images",
            413,
        )
        if len(body.images) != len(body.sentences):
            raise HTTPException(422, f"images: {len(body.images)} for {len(body.sentences)} sentences: give "
                                "one image a sentence")  # fmt: skip
        pictures = []
        for i, (sentence, text) in enumerate(zip(body.sentences, body.images)):
            if text is None:
                if sentence.strip():
                    raise HTTPException(422, f"images[{i}] is null, but sentence {i} is not empty: give "
                                        "its image")  # fmt: skip
                pictures.append(None)
                continue
            if text.startswith("data:") and ";base64," in text[:100]:  # a data URL (FileReader's)
                text = text.partition(";base64,")[2]
            try:  # line breaks (`base64` wraps at 76 characters) and spaces are ignored
                data = base64.b64decode("".join(text.split()), validate=True)
            except (binascii.Error, ValueError):
                raise HTTPException(400, f"images[{i}] is not valid base64") from None
            pictures.append(await asyncio.to_thread(decode_image, data, f"images[{i}]", options))
        return pictures

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
        limit(len(images), options.max_images, "images: the count", "--max-images", 413)
        limit(beam_size, options.max_beam, "beam_size", "--max-beam")
        if max_len is not None:
            limit(max_len, options.max_output_len, "max_len", "--max-output-len")
        pictures = []
        for i, f in enumerate(images):
            data = await f.read(options.max_image_bytes + 1)
            name_of = f.filename or f"<image {i}>"
            pictures.append(await asyncio.to_thread(decode_image, data, name_of, options))  # off the loop

        def batch(captioner, items: list) -> list:
            return captioner.caption(
                items, method=method, beam_size=beam_size, max_len=max_len, return_attention=attention,
                batch_size=options.max_batch,
            )  # fmt: skip

        key = ("caption", method, beam_size, max_len, attention)
        captions = await run(worker, Job(Future(), items=pictures, key=key, batch=batch))
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
        check_texts(questions, options, "questions")
        limit(top, options.max_n_best, "top", "--max-n-best")
        from captioning.vqa.predictor import check_questions

        try:  # refused here rather than failing a batch with other requests' questions
            check_questions(questions)
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        data = await image.read(options.max_image_bytes + 1)
        picture = await asyncio.to_thread(decode_image, data, image.filename or "<image>", options)

        def batch(answerer, items: list[tuple]) -> list:
            return answerer.answer_each([p for p, _ in items], [q for _, q in items], top=top)

        items = [(picture, q) for q in questions]
        answers = await run(worker, Job(Future(), items=items, key=("answer", top), batch=batch))
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
        check_texts([body.prompt], options, "prompt")
        limit(body.num, options.max_num, "num", "--max-num")
        limit(body.max_len, options.max_output_len, "max_len", "--max-output-len")
        args = body.model_dump()
        texts = await run(worker, Job(Future(), run=lambda lm: lm.generate(**args)))
        return {"model": name, "texts": texts}

    @app.post("/score/{name}", dependencies=protected, tags=["language model"])
    async def score(name: str, body: ScoreRequest) -> dict:
        """log P(sentence <eos> | <bos>) in nats of each sentence, with the tokens it counted."""
        worker = worker_for(name, "score")
        check_texts(body.sentences, options, "sentences")
        scores = await run(worker, Job(Future(), run=lambda lm: lm.score(body.sentences)))
        return {"model": name, "scores": [{"log_prob": float(lp), "tokens": n} for lp, n in scores]}

    return app
