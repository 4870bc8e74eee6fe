"""`make gpu-check` (`python -m seqcap.gpu_check`): everything that needs a GPU, in one command.

    python -m seqcap.gpu_check                     # on a CUDA machine: about 3-5 min on one H100
    python -m seqcap.gpu_check --device cpu --quick  # the same pipeline, short, on the CPU

Checks, in order, each timed on its own and none stopping the others:

- `tests -m cuda`: pytest over the tests marked `cuda` (they skip without a GPU in `make test`);
- `bench translation`: `python -m seq2seq.bench` on a synthetic 8k-word reversal corpus (the
  gettext corpus need not exist on the GPU machine), few steps: training target tokens/s;
- `fused = cells <cell>`: the fused path (torch.nn, cuDNN on a GPU) and the unrolled cells give the
  same outputs, final states and gradients (input and every parameter) for RNN, LSTM and GRU (two
  layers, bidirectional, ragged lengths), in fp32 with TF32 off; the figure is the largest
  difference scaled by max(1, |reference|), which must stay <= TOLERANCE;
- `fit <task>`: a short training run of each task (translation, multimodal translation, LM,
  captioning, VQA) through `python -m seqcap fit -c CONFIG`, the shipped config on tiny synthetic
  data built here, with `--trainer.precision bf16-mixed`, in a subprocess with a time limit; it
  passes when the run exits 0 and logged a finite training loss.

Prints one table (check | result | figure | time) and exits 1 if any check failed. Without CUDA
(and --device cuda, the default) it prints what torch sees and exits 0 at once. Every output goes
to a temporary folder that is removed at the end (--keep keeps it).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from seqcap.gpu_fits import FITS, FULL, QUICK, Profile, TinyData, train_losses

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4  # fused vs cells, fp32 with TF32 off: max |a - b| / max(1, max |b|)
CELLS = ("rnn", "lstm", "gru")


@dataclass
class Row:
    check: str
    result: str  # pass | fail | skip
    figure: str
    seconds: float


def no_gpu_message() -> str:
    built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    hint = f", CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
    return (
        f"gpu-check: no GPU: torch {torch.__version__} ({built}{hint}) sees "
        f"{torch.cuda.device_count()} CUDA devices (torch.cuda.is_available() is False); nothing to check. "
        "`python -m seqcap.gpu_check --device cpu --quick` runs the same checks on the CPU."
    )


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("WANDB_MODE", "disabled")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


class OutOfTime(Exception):
    pass


DEADLINE = math.inf  # time.monotonic() by which every check must end (--budget); main sets it


def run(args: list[str], timeout: float, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """`python ARGS` (this interpreter) from the repository, output captured; a timeout is exit 124.
    The time limit is `timeout` or what is left of the budget, whichever is less."""
    timeout = min(timeout, DEADLINE - time.monotonic())
    if timeout < 5:
        raise OutOfTime("no time left (--budget)")
    try:
        return subprocess.run(
            [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
            env=subprocess_env(),
        )  # fmt: skip
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return subprocess.CompletedProcess(e.cmd, 124, out, err + f"\ntimed out after {timeout:.0f} s")


def last_line(result: subprocess.CompletedProcess) -> str:
    """The last non-empty line of a failed subprocess's output, for the table."""
    lines = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    return (lines[-1] if lines else "no output")[:100]


# -- (a) the tests marked cuda -----------------------------------------------------------------
def check_tests(args, profile: Profile, tmp: Path) -> tuple[str, str]:
    result = run(
        ["-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp / "pytest"),
         *args.tests],
        timeout=args.timeout,
    )  # fmt: skip
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)",
                                               result.stdout)}  # fmt: skip
    figure = ", ".join(f"{counts[k]} {k}" for k in ("passed", "failed", "skipped") if k in counts)
    if result.returncode == 5:  # pytest: no tests collected
        return "fail", "no tests marked cuda"
    if result.returncode != 0:
        return "fail", figure or last_line(result)
    if not counts.get("passed"):
        return "skip", figure
    return "pass", figure


# -- (b) the translation benchmark -------------------------------------------------------------
def bench_corpus(out: Path, pairs: int, vocab: int, lengths: tuple[int, int]) -> Path:
    """A reversal corpus as {split}.{en,de}, the layout seq2seq.bench reads."""
    from data.builders.synthetic import build_synthetic_corpus

    raw = out.with_name(out.name + "-raw")
    build_synthetic_corpus("reverse", raw, vocab=vocab, train_len=lengths, test_len=lengths, n=pairs,
                           n_dev=64, n_test=max(64, pairs // 10))  # fmt: skip
    out.mkdir(parents=True)
    for split in ("train", "dev", "test"):
        (raw / f"{split}.src").rename(out / f"{split}.en")
        (raw / f"{split}.tgt").rename(out / f"{split}.de")
    return out


def check_bench(args, profile: Profile, tmp: Path) -> tuple[str, str]:
    pairs = max(profile.pairs, 64 * (profile.bench_steps + profile.bench_warmup))
    data = bench_corpus(tmp / "bench", pairs, profile.bench_vocab, profile.bench_len)
    result = run(
        ["-m", "seq2seq.bench", "--data", str(data), "--device", args.device,
         "--steps", str(profile.bench_steps), "--warmup", str(profile.bench_warmup),
         "--decode-sentences", str(profile.bench_decode)],
        timeout=args.timeout,
    )  # fmt: skip
    train = re.search(r"train: ([\d,]+) target tokens/s", result.stdout)
    decode = re.search(r"decode: ([\d,.]+) sentences/s", result.stdout)
    if result.returncode != 0 or not train or not decode:
        return "fail", last_line(result)
    return "pass", f"{train[1]} tok/s train, {decode[1]} sent/s beam 5"


# -- (c) fused and cells agree ----------------------------------------------------------------
@contextmanager
def strict_fp32() -> Iterator[None]:
    """fp32 matmuls and cuDNN RNNs without TF32 (cuDNN allows it by default), as before afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def public_grads(rnn) -> dict[str, torch.Tensor]:
    """Parameter gradients under the state dict's names (weight_ih_l0, ...), the same in both impls."""
    grads = {}
    for name, p in rnn.named_parameters():
        if name.startswith("fused."):
            name = name.removeprefix("fused.")
        else:  # cells.l0_reverse.weight_ih -> weight_ih_l0_reverse
            suffix, param = name.removeprefix("cells.").split(".", 1)
            name = f"{param}_{suffix}"
        grads[name] = p.grad
    return grads


def rnn_agreement(
    cell: str, device: str | torch.device, batch: int = 8, steps: int = 25, input_size: int = 32,
    hidden: int = 64, layers: int = 2, seed: int = 0,
) -> dict[str, float]:  # fmt: skip
    """Largest differences between impl="fused" and impl="cells" with the same weights on `device`
    (two layers, bidirectional, ragged lengths): {"outputs", "state", "gradients"}, each
    max |cells - fused| / max(1, max |fused|) over the tensors of that kind, in fp32, TF32 off."""
    from seq2seq.modules.rnn import RNN

    with strict_fp32():
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        fused = RNN(cell, input_size, hidden, layers, bidirectional=True, impl="fused").to(device)
        cells = RNN(cell, input_size, hidden, layers, bidirectional=True, impl="cells").to(device)
        cells.load_state_dict(fused.state_dict())
        x = torch.randn(batch, steps, input_size, generator=gen).to(device)
        lengths = torch.randint(1, steps + 1, (batch,), generator=gen)
        lengths[0] = steps
        w_out = torch.randn(batch, steps, 2 * hidden, generator=gen).to(device)
        w_state = torch.randn(2 * layers, batch, hidden, generator=gen).to(device)
        got = {}
        for name, rnn in (("fused", fused), ("cells", cells)):
            xi = x.clone().requires_grad_()
            out, state = rnn(xi, lengths.to(device))
            states = list(state) if isinstance(state, tuple) else [state]
            loss = (out * w_out).sum() + sum((s * w_state).sum() for s in states)
            loss.backward()
            got[name] = {
                "outputs": [out],
                "state": states,
                "gradients": [xi.grad, *public_grads(rnn).values()],
            }
            if name == "cells":  # the same parameter order: compare by name
                assert list(public_grads(rnn)) == list(public_grads(fused)), "parameter names differ"

    def scaled(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).abs().max()) / max(1.0, float(b.abs().max()))

    return {
        kind: max(scaled(c.detach(), f.detach()) for c, f in zip(got["cells"][kind], got["fused"][kind]))
        for kind in ("outputs", "state", "gradients")
    }


def check_agreement(cell: str) -> Callable:
    def check(args, profile: Profile, tmp: Path) -> tuple[str, str]:
        diffs = rnn_agreement(cell, args.device)
        worst = max(diffs.values())
        kernel = ""
        if args.device == "cuda":
            kernel = (
                f", cuDNN {torch.backends.cudnn.version()}" if torch.backends.cudnn.is_available() else ""
            )
        figure = " ".join(f"{k} {v:.1e}" for k, v in diffs.items()) + f" (tol {TOLERANCE:.0e}{kernel})"
        return ("pass" if worst <= TOLERANCE else "fail"), figure

    return check


# -- (d) a short bf16-mixed fit of each task (the configs and their data: gpu_fits.py) ----------
def check_fit(task: str) -> Callable:
    def check(args, profile: Profile, tmp: Path) -> tuple[str, str]:
        config, overrides = FITS[task]
        work = tmp / f"fit-{task}"
        extra = overrides(args.data, work)
        accelerator = "gpu" if args.device == "cuda" else args.device
        result = run(
            ["-m", "seqcap", "fit", "-c", config, *extra,
             "--trainer.precision", args.precision, "--trainer.accelerator", accelerator,
             "--trainer.devices", "1", "--trainer.max_steps", str(profile.fit_steps),
             "--trainer.max_epochs", "1000", "--trainer.limit_val_batches", "2",
             "--trainer.log_every_n_steps", "1", "--trainer.default_root_dir", str(work / "runs"),
             *([] if profile.sanity_val else ["--trainer.num_sanity_val_steps", "0"]),
             "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"],
            timeout=args.timeout,
        )  # fmt: skip
        if result.returncode != 0:
            return "fail", last_line(result)
        losses = train_losses(work / "runs")
        if not losses or not all(math.isfinite(v) for v in losses):
            return "fail", f"train losses {losses[-3:]}"
        return "pass", f"{len(losses)} steps, loss {losses[0]:.2f} -> {losses[-1]:.2f}, {args.precision}"

    return check


# -- the table ---------------------------------------------------------------------------------
def checks() -> list[tuple[str, Callable]]:
    return [
        ("tests -m cuda", check_tests),
        ("bench translation", check_bench),
        *((f"fused = cells {cell}", check_agreement(cell)) for cell in CELLS),
        *((f"fit {task}", check_fit(task)) for task in FITS),
    ]


def table(rows: list[Row]) -> str:
    head = ("check", "result", "figure", "time")
    cells = [head] + [(r.check, r.result, r.figure, f"{r.seconds:.1f} s") for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    lines = [" | ".join(c[i].ljust(widths[i]) for i in range(4)).rstrip() for c in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m seqcap.gpu_check", description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                   help="cuda (default; exits 0 with a message when there is none) or cpu")  # fmt: skip
    p.add_argument("--quick", action="store_true",
                   help="tiny data and models, a few steps (the CPU form the tests run)")  # fmt: skip
    p.add_argument("--precision", default="bf16-mixed", help="the fits' --trainer.precision")
    p.add_argument("--timeout", type=float, default=300, help="seconds each subprocess may run")
    budget = "seconds all checks together may run (default 450: 7.5 min); the checks after it fail"
    p.add_argument("--budget", type=float, default=450, help=budget)
    only = "run only the checks whose names start with one of these (tests, bench, fused, fit, fit lm, ...)"
    p.add_argument("--only", nargs="+", metavar="CHECK", help=only)
    p.add_argument("--tests", nargs="+", default=["tests"], help="where pytest looks for the cuda tests")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(no_gpu_message())
        return 0
    global DEADLINE
    DEADLINE = time.monotonic() + args.budget
    profile = QUICK if args.quick else FULL
    where = (
        torch.cuda.get_device_name(0) if args.device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    )
    print(f"gpu-check on {where}, torch {torch.__version__}{' (quick)' if args.quick else ''}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="seqcap-gpu-check-"))
    args.data = TinyData(tmp / "data", profile)
    rows = []
    try:
        for name, check in checks():
            if args.only and not any(name.startswith(o) for o in args.only):
                continue
            start = time.perf_counter()
            try:
                result, figure = check(args, profile, tmp)
            except Exception as error:  # a check that breaks is a failed row, the others still run
                result, figure = "fail", f"{type(error).__name__}: {error}"[:100]
            rows.append(Row(name, result, figure, time.perf_counter() - start))
            print(f"{name}: {result} ({figure}) {rows[-1].seconds:.1f} s", flush=True)
    finally:
        if args.keep:
            print(f"outputs kept in {tmp}")
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(table(rows))
    failed = [r.check for r in rows if r.result == "fail"]
    print(f"\n{len(failed)} failed: {', '.join(failed)}" if failed else "\nall checks passed (or skipped)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
