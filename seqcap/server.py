"""`seqcap serve`: trained models behind a JSON HTTP API (FastAPI on uvicorn), over predictors only.

    seqcap serve --model de=runs/.../last.ckpt --model lm=lm.ckpt [--port 8000] [--token T]
    seqcap serve --quickstart        (make serve-demo: the quickstarts' checkpoints under ./runs)

    POST /translate/{name}   {"sentences": [...], "beam_size": 5, "alpha": 0.6, "n_best": 1,
                              "attention": false, "images": null}  (a multimodal model: "images",
                              one base64-encoded image file a sentence, null for an empty one)
    POST /caption/{name}     multipart: one or more `images` files; form fields method, beam_size, max_len
    POST /answer/{name}      multipart: one `image` file and `questions` (the field repeated); top
    POST /generate/{name}    {"num": 5, "prompt": "", "max_len": 50, "temperature": 1.0, "top_k": 0,
                              "seed": 0}
    POST /score/{name}       {"sentences": [...]}
    GET  /models             what is loaded: each model's task, checkpoints, options and batching stats
    GET  /health             {"status": "ok"}; never needs the token
    GET  /docs               FastAPI's OpenAPI page
    GET  /                   the demo page (seqcap/server_demo.py): a panel per loaded task

A `--model` value is NAME=CKPT[,CKPT...][:KEY=VALUE...]: several checkpoints make an ensemble
(Predictor.from_checkpoint with a list), and the options after colons are quantize=int8, and for a
translator or captioner lm=LM_CKPT, lm_weight=W, lm_mode=rescore|fusion (seq2seq.lm.rescoring).
Models come from the command line only: no request names a file, so none can make the server read
one from disk (images arrive as uploaded bytes, or base64 in /translate's JSON, and are decoded by
PIL, never unpickled). A multimodal translator reads each sentence with its image; a multimodal
model given no images, or a text-only one given some, is a 400 that says so.

Every model has one worker thread that owns it: torch runs one forward pass at a time per model.
Concurrent requests to one model that share their options run in one predictor call (dynamic
batching): /translate's sentences (with their images), /caption's images, /answer's (image,
question) pairs. The worker takes a request, then gathers more, up to --max-batch items, for up to
--max-wait-ms while fewer are in hand than were in flight at the busiest moment of the last two
batches (a lone client's request runs at once; the first two batches wait the whole window), and
runs them in one call; when that call fails, each request is run again alone. Each response
equals that of the request alone (texts exactly; scores to float rounding, ~1e-7). --max-batch 1 or
--max-wait-ms 0 turns the batching off. The counts of calls and batch sizes are in GET /models
("stats").

Limits (ServerOptions, each a command-line option) answer 413 for a body, an image or a list too
large and 422 for a search option over its cap, with a message that names the limit and its value.
Any error a request can cause is a 4xx with a JSON {"detail": "..."}; the server stays up.

This module holds the command and the --model syntax; the app is seqcap/server_app.py
(`create_app(models, ServerOptions(...))`, re-exported here), the worker seqcap/server_worker.py and
the limits seqcap/server_limits.py.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path

from seqcap.server_app import create_app
from seqcap.server_limits import ServerOptions

__all__ = [
    "ModelSpec",
    "ModelSpecError",
    "ServerOptions",
    "create_app",
    "load_model",
    "load_off_the_main_thread",
    "main",
]

TOKEN_ENV = "SEQCAP_TOKEN"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
MODEL_OPTIONS = ("quantize", "lm", "lm_weight", "lm_mode")
LIMIT_HELP = {
    "max_batch": "items (sentences, images, questions) run together per model (1: no batching)",
    "max_wait_ms": "the longest a model's worker gathers requests while more are expected (0: none)",
    "max_body_bytes": "a request body, in bytes (413)",
    "max_image_bytes": "one uploaded image, in bytes (413)",
    "max_image_pixels": "one image's width x height (413)",
    "max_images": "images in one /caption request (413)",
    "max_sentences": "sentences or questions in one request (413)",
    "max_sentence_chars": "characters in one sentence, question or prompt (413)",
    "max_beam": "beam_size (422)",
    "max_n_best": "n_best, and /answer's top (422)",
    "max_num": "/generate's num (422)",
    "max_output_len": "/generate's and /caption's max_len (422)",
}


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
    return predictor


# `seqcap serve --quickstart` (`make serve-demo`): model name -> (run_name of the quickstart's config, the
# command that trains it)
QUICKSTARTS = {
    "de": ("quickstart", "make quickstart-translation (about 7 minutes on 2 CPU cores)"),
    "caption": ("quickstart_captioning", "make quickstart-captioning (about 8 minutes on 2 CPU cores)"),
}


def quickstart_checkpoint(root: Path, run_name: str) -> Path | None:
    """The checkpoint a quickstart printed: in the newest root/run_name/version_N holding one, its
    best-*.ckpt (the newest, if several), else last.ckpt; None when no run has one."""
    versions = sorted(
        (int(p.name.removeprefix("version_")), p)
        for p in (root / run_name).glob("version_*")
        if p.name.removeprefix("version_").isdigit()
    )
    for _, version in reversed(versions):
        best = sorted(version.glob("checkpoints/best-*.ckpt"), key=lambda p: p.stat().st_mtime)
        if best or (version / "checkpoints" / "last.ckpt").is_file():
            return best[-1] if best else version / "checkpoints" / "last.ckpt"
    return None


def quickstart_models(root: Path) -> tuple[list[str], list[str]]:
    """--model values for the quickstarts' checkpoints under `root`, and for each quickstart without
    one a line naming the command that makes it."""
    found, missing = [], []
    for name, (run_name, command) in QUICKSTARTS.items():
        ckpt = quickstart_checkpoint(root, run_name)
        if ckpt is None:
            missing.append(f"no {run_name} checkpoint under {root / run_name}: `{command}` makes one")
        else:
            found.append(f"{name}={ckpt}")
    return found, missing


def load_off_the_main_thread(specs: list[ModelSpec], device: str) -> dict:
    """{name: predictor} of the specs, loaded in a thread that then exits, so the main thread (the
    event loop's) never starts OpenMP threads. With the models loaded in the main thread, decoding
    in a model's worker thread was ~1.5x slower (the quickstart translator on a 2-core CPU: 20-30 ms
    a sentence alone against 11-19 ms); with OMP_NUM_THREADS=1 the difference went away, and with
    OMP_WAIT_POLICY=PASSIVE the main thread was as slow: likely libgomp, which stops spinning
    between parallel regions when it runs more threads than cores (the main thread's team and the
    worker's). Errors are raised here as loading raises them."""
    with ThreadPoolExecutor(1, thread_name_prefix="seqcap-load") as pool:
        return pool.submit(lambda: {s.name: load_model(s, device) for s in specs}).result()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="seqcap serve",
        description="Serve checkpoints over a JSON HTTP API (docs at /docs). Models come from the command "
        "line only.",
    )
    p.add_argument(
        "--model", action="append", default=[], metavar="NAME=CKPT[,CKPT...][:KEY=VALUE...]",
        help="a model to serve, repeatable; several checkpoints make an ensemble; options: quantize=int8, "
        "lm=LM_CKPT, lm_weight=W, lm_mode=rescore|fusion (e.g. de=a.ckpt,b.ckpt:quantize=int8)",
    )  # fmt: skip
    p.add_argument(
        "--quickstart", action="store_true",
        help="also serve the quickstarts' checkpoints found under ./runs (de: the translator, caption: the "
        "captioner); trains nothing, says which make command makes a missing one",
    )  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="the address to bind (default: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--token",
        default=None,
        help=f"require `Authorization: Bearer TOKEN` (default: ${TOKEN_ENV}, which `ps` does not show)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    defaults = ServerOptions()
    for f in [f.name for f in fields(ServerOptions) if f.name.startswith("max_")]:
        value = getattr(defaults, f)
        what = LIMIT_HELP.get(f, "")
        p.add_argument(
            "--" + f.replace("_", "-"), type=type(value), default=value, help=f"{what} (default {value})"
        )
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """`seqcap serve ...`: load every --model, then run uvicorn until SIGINT/SIGTERM."""
    import uvicorn

    from seq2seq.predictor import TASKS
    from seq2seq.training.checkpoint import CheckpointError

    args = parser().parse_args(argv)
    if args.quickstart:
        found, missing = quickstart_models(Path("runs"))
        for line in missing:
            print(("error: " if not found and not args.model else "note: ") + line, file=sys.stderr)
        if not found and not args.model:
            return 2
        given = {m.partition("=")[0] for m in args.model}  # a --model of the same name wins
        args.model += [f for f in found if f.partition("=")[0] not in given]
    if not args.model:
        print("error: nothing to serve: give --model NAME=CKPT (repeatable) or --quickstart", file=sys.stderr)
        return 2
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    try:
        options = ServerOptions(token=token, **{k: v for k, v in vars(args).items() if k.startswith("max_")})
        specs = [ModelSpec.parse(m) for m in args.model]
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ModelSpecError(f"--model: a name given twice ({', '.join(names)})")
        models = load_off_the_main_thread(specs, args.device)
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
        what = TASKS.get(models[s.name].task, (models[s.name].task,))[0]
        print(f"{s.name}: {what} model from {', '.join(s.checkpoints)}", file=sys.stderr)
    app = create_app(models, options, {s.name: s.options for s in specs})
    print(f"demo page: http://{args.host}:{args.port}/   API docs: http://{args.host}:{args.port}/docs",
          file=sys.stderr)  # fmt: skip
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
