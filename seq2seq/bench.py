"""Translation benchmark: `python -m seq2seq.bench [--steps 100] [--checkpoint CKPT] [--anchor joeynmt]`.

Prints, side by side from one run on this machine:
- the sgemm peak: GFLOP/s of a 2048x2048 float32 matrix product, measured here first;
- training of the gettext_attention model (BiLSTM 256, embeddings 256, 8k-word vocabularies,
  batches of 64 sentences; configs/translation/gettext_attention.yaml): target tokens/s, the
  GFLOP/s that torch's FlopCounterMode counts in those steps, their share of the sgemm peak, and
  the process's peak RSS. A step is TranslationModule's: its loss, its (fused) Adam, gradient
  norm clipped at 1, without the Trainer around it;
- beam-5 decoding of a trained checkpoint (`--checkpoint`, e.g. the quickstart's:
  `make quickstart-translation`), sentences/s over the test set through the Translator, in this
  process and (on the CPU) in `--decode-workers` forked processes of one thread each;
- with `--anchor joeynmt` (JoeyNMT installed in this interpreter or in `--joeynmt-python`, never a
  dependency): one epoch of `seqcap fit` and of JoeyNMT on the same files, each as a whole process,
  wall time and peak RSS, and their ratio (seq2seq/bench_anchor.py).

Numbers, not a test: run it on an idle machine.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from data.datamodules.translation import ParallelTextDataModule
from data.prepared.store import cores
from seq2seq.modules.rnn import RecurrentOptions
from seq2seq.training.checkpoint import resolve_device
from seq2seq.translation.module import TranslationModule


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sgemm_gflops(device: torch.device, n: int = 2048, seconds: float = 2.0) -> float:
    """GFLOP/s of an n x n float32 matrix product, repeated for `seconds` after a warm-up: all
    products over all their time, as the training figure is all steps over all their time."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    sync(device)
    products, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        sync(device)
        products += 1
    return products * 2 * n**3 / (time.perf_counter() - start) / 1e9


def train(data: str, steps: int, warmup: int, device: torch.device, profile_steps: int = 0) -> dict:
    """Times `steps` training steps after `warmup`, then counts their FLOPs in a second pass (and
    with `profile_steps`, profiles that many)."""
    torch.manual_seed(0)
    dm = ParallelTextDataModule(data, max_vocab_size=8000, max_len=50, batch_size=64)
    dm.setup("fit")
    rnn = RecurrentOptions(embed_dim=256, hidden_size=256, dropout=0.2)
    module = TranslationModule(dm.src_vocab_size, dm.tgt_vocab_size, rnn=rnn).to(device).train()
    optimizer = module.configure_optimizers()
    batches = []
    for batch in dm.train_dataloader():
        batches.append({k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)})
        if len(batches) == warmup + steps:
            break

    def step(batch: dict, phases: dict | None = None) -> int:
        clock = Phases(phases, device)
        loss, tokens = module.eval_loss(batch)
        clock("forward (loss included)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clock("backward")
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        clock("gradient clipping")
        optimizer.step()
        clock("optimizer (fused Adam)")
        return tokens

    for batch in batches[:warmup]:
        step(batch)
    sync(device)
    times, tokens = [], 0
    for batch in batches[warmup:]:
        start = time.perf_counter()
        tokens += step(batch)
        sync(device)
        times.append(time.perf_counter() - start)
    with FlopCounterMode(display=False) as counter:
        for batch in batches[warmup:]:
            step(batch)
    elapsed = sum(times)
    profile = None
    if profile_steps:
        profile = profile_table(step, batches[warmup : warmup + profile_steps], dm.tgt_vocab_size, device)
    return {
        "profile": profile,
        "module": module.eval(),
        "dm": dm,
        "tokens_per_s": tokens / elapsed,
        "ms_per_step": elapsed / len(times) * 1000,
        "median_ms": statistics.median(times) * 1000,
        "gflops": counter.get_total_flops() / elapsed / 1e9,
        "gflop_per_step": counter.get_total_flops() / len(times) / 1e9,
        "tokens_per_step": tokens / len(times),
    }


class Phases:
    """Wall time of a step's phases, added into `into` (name -> seconds); a no-op for None."""

    def __init__(self, into: dict | None, device: torch.device):
        self.into, self.device, self.last = into, device, time.perf_counter()

    def __call__(self, name: str) -> None:
        if self.into is not None:
            sync(self.device)
            now = time.perf_counter()
            self.into[name] = self.into.get(name, 0.0) + now - self.last
            self.last = now


def op_category(name: str, shapes: list, vocab: int) -> str:
    """The part of a training step an aten op belongs to, by its name (and a product's shapes)."""
    if name in ("aten::mm", "aten::addmm", "aten::bmm"):
        if any(vocab in shape for shape in shapes if isinstance(shape, list)):
            return "output layer: matrix products with the 8k-word W_out"
        return "matrix products of the recurrences and attention"
    if "softmax" in name and any(vocab in shape for shape in shapes if isinstance(shape, list)):
        return "output softmax and loss"
    if "rnn" in name or "lstm" in name or "gru" in name:
        return "fused recurrent kernels (mkldnn/cuDNN: their products and gates)"
    if "nll_loss" in name:
        return "output softmax and loss"
    if "adam" in name:
        return "optimizer (fused Adam)"
    if name in ("aten::bernoulli_", "aten::native_dropout", "aten::native_dropout_backward"):
        return "dropout masks"
    elementwise = ("tanh", "sigmoid", "mul", "add", "sub", "div", "softmax", "sum", "norm", "where", "clamp")
    if any(word in name for word in elementwise):
        return "elementwise: gates, attention energies, clipping, their gradients"
    return "copies, fills, index and shape ops"


def profile_table(step, batches: list[dict], vocab: int, device: torch.device) -> list[tuple[str, float]]:
    """Where a step's time goes: phases (wall clock) and aten ops by kind (torch.profiler, self
    time), in ms per step; the step's time outside any aten op is Python and framework overhead."""
    from torch.profiler import ProfilerActivity, profile

    phases: dict[str, float] = {}
    for batch in batches:
        step(batch, phases)
    rows = [(f"phase: {name}", seconds / len(batches) * 1000) for name, seconds in phases.items()]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    start = time.perf_counter()
    with profile(activities=activities, record_shapes=True) as prof:
        for batch in batches:
            step(batch)
        sync(device)
    wall = (time.perf_counter() - start) / len(batches) * 1000
    kinds: dict[str, float] = {}
    for event in prof.events():
        if event.name.startswith("aten::"):
            kind = op_category(event.name, event.input_shapes, vocab)
            kinds[kind] = kinds.get(kind, 0.0) + event.self_cpu_time_total / 1000 / len(batches)
    rows += sorted(kinds.items(), key=lambda kv: -kv[1])
    rest = wall - sum(kinds.values())
    rows.append(("Python, autograd engine, dispatch (the rest of the profiled step)", rest))
    rows.append(("profiled step (the profiler adds its own overhead)", wall))
    return rows


def decode(translator, data: str, sentences: int, beam_size: int, workers: int = 1, repeats: int = 2) -> dict:
    """Beam search over the test set's first `sentences` sources (0: all) with the Translator: one
    process, and (workers > 1) `workers` forked processes of one thread (seq2seq/workers.py), the
    two passes taking turns `repeats` times; the best pass of each."""
    src = Path(data, "test.en").read_text(encoding="utf-8").splitlines()
    src = src[:sentences] if sentences else src
    translator.translate(src[:64], beam_size=beam_size)  # warm-up
    best: dict[int, float] = {}
    for _ in range(repeats):
        for n in sorted({1, workers}):
            sync(translator.device)
            start = time.perf_counter()
            out = translator.translate(src, beam_size=beam_size, batch_size=64, workers=n)
            sync(translator.device)
            best[n] = min(best.get(n, float("inf")), time.perf_counter() - start)
    words = sum(len(t[0].tokens) for t in out)
    return {
        "sentences_per_s": len(src) / best[1],
        "workers_sentences_per_s": len(src) / best[workers],
        "sentences": len(src),
        "words_per_sentence": words / len(src),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m seq2seq.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="data/corpora/gettext-en-de")
    parser.add_argument("--steps", type=int, default=100, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--checkpoint", help="a trained translation checkpoint to decode with")
    parser.add_argument("--decode-sentences", type=int, default=0, help="0: the whole test set")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument(
        "--decode-workers", type=int, default=cores(), metavar="N",
        help="also decode in N forked one-thread processes (CPU; default: this process's cores; 1: not)",
    )  # fmt: skip
    parser.add_argument("--device", default="auto")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="profile N training steps")
    parser.add_argument("--anchor", choices=["joeynmt"], help="also train one epoch of JoeyNMT and of seqcap")
    parser.add_argument("--joeynmt-python", help="the interpreter that has joeynmt (default: this one)")
    args = parser.parse_args(argv)
    if args.decode_workers < 1:
        parser.error(f"--decode-workers must be >= 1, got {args.decode_workers}")
    device = resolve_device(args.device)

    peak = sgemm_gflops(device)
    print(f"machine: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, {device}")
    print(f"sgemm 2048x2048: {peak:,.1f} GFLOP/s (the peak below)")
    t = train(args.data, args.steps, args.warmup, device, args.profile)
    rows = [
        ("training, target tokens/s", f"{t['tokens_per_s']:,.0f} ({t['ms_per_step']:.0f} ms/step, "
         f"median {t['median_ms']:.0f}; {t['tokens_per_step']:.0f} tokens/step)"),
        ("training, GFLOP/s counted", f"{t['gflops']:,.1f} ({t['gflop_per_step']:.2f} GFLOP/step)"),
        ("share of the sgemm peak", f"{t['gflops'] / peak:.0%}"),
        ("peak RSS, this process", f"{peak_rss_mb():,.0f} MB"),
    ]  # fmt: skip
    from seq2seq.translation.predictor import Translator

    if args.checkpoint:
        translator, which = Translator.from_checkpoint(args.checkpoint, device=args.device), "trained"
    else:  # outputs of a model trained for a few steps: their lengths say little about a real model's
        translator, which = benchmark_translator(t["module"], t["dm"]), f"the {args.steps}-step"
    workers = args.decode_workers if translator.device.type == "cpu" else 1
    d = decode(
        translator, args.data, sentences=args.decode_sentences, beam_size=args.beam_size, workers=workers
    )
    print(f"train: {t['tokens_per_s']:,.0f} target tokens/s; decode: {d['sentences_per_s']:,.1f} sentences/s")
    rows.append(
        (
            f"beam-{args.beam_size} decoding, sentences/s",
            f"{d['sentences_per_s']:,.1f} ({which} model, {d['sentences']} test sentences, batches of 64, "
            f"{d['words_per_sentence']:.1f} words out; best of 2 passes)",
        )
    )
    if workers > 1:
        forked = d["workers_sentences_per_s"]
        rows.append(
            (
                f"the same in {workers} worker processes of one thread (`--workers {workers}`)",
                f"{forked:,.1f} ({forked / d['sentences_per_s']:.2f}x)",
            )
        )
    if args.anchor:
        rows += anchor_rows(args)
    print(f"\n| gettext_attention, {args.steps} steps | seqcap |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    if t["profile"]:
        print(f"\n| where a training step's time goes ({args.profile} steps) | ms/step |\n|---|---|")
        for name, ms in t["profile"]:
            print(f"| {name} | {ms:.1f} |")


def benchmark_translator(module: TranslationModule, dm: ParallelTextDataModule):
    """A Translator around the benchmark's own (barely trained) model, for a bench without --checkpoint."""
    from seq2seq.translation.predictor import Translator

    return Translator(module.model, dm.vocab_state(), device=next(module.parameters()).device)


def anchor_rows(args) -> list[tuple[str, str]]:
    """One epoch of `seqcap fit` and of JoeyNMT, each a whole process, back to back, on one
    pre-tokenised copy of the corpus (seq2seq/bench_anchor.py says what is the same and what not)."""
    from seq2seq import bench_anchor

    python = bench_anchor.joeynmt_python(args.joeynmt_python)
    if python is None:
        return [("JoeyNMT anchor", "not run: joeynmt is not installed here (give --joeynmt-python)")]
    version = bench_anchor.joeynmt_version(python)
    with tempfile.TemporaryDirectory(prefix="seqcap-bench-") as work:
        data = Path(work, "data")
        pairs = bench_anchor.pretokenize(Path(args.data), data)
        ours = bench_anchor.seqcap_epoch(bench_anchor.CONFIG, data, Path(work, "seqcap"))
        theirs = bench_anchor.anchor_epoch(data, Path(work, "joeynmt"), python)
    for name, run in (("seqcap", ours), (f"JoeyNMT {version}", theirs)):
        if run.returncode != 0:
            return [(f"one epoch of {name}", f"failed (exit {run.returncode})")]
    return [
        (f"one epoch ({pairs:,} pairs), whole process: seqcap / JoeyNMT {version}",
         f"{ours.seconds:,.1f} s / {theirs.seconds:,.1f} s: JoeyNMT takes "
         f"{theirs.seconds / ours.seconds:.2f}x as long"),
        ("peak RSS of that process: seqcap / JoeyNMT",
         f"{ours.peak_rss_mb:,.0f} MB / {theirs.peak_rss_mb:,.0f} MB"),
    ]  # fmt: skip


if __name__ == "__main__":
    main()
