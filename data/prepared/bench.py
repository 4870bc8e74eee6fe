"""Benchmark: raw-text start-up against a prepared, memory-mapped corpus.

    python -m data.prepared.bench [--pairs 1000000] [--source data/corpora/gettext-en-de] [--work DIR]

Builds corpora of copies of the gettext en-de training set (33.7k pairs a copy; dev and test as
they are), then prints, each measured in a fresh process:

- raw path: ``ParallelTextDataModule.build()`` at 1 and 8 copies (and at --pairs with --raw-large):
  seconds, training pairs/s and peak RSS;
- prepare: ``python -m data.prepared.prepare`` of --pairs pairs: seconds and training pairs/s;
- start-up on the prepared folder: data module to first training batch, seconds and peak RSS;
- two DDP processes (gloo, CPU) reading one prepared folder through their shards for --batches
  batches: the proportional set size (PSS: shared pages split between the processes that map
  them) that the data adds, against one process doing the same.

Options as in the issue's measurement: word tokens (toktok), 32k-word vocabularies, max_len 100.
Needs the gettext corpus: ``seqcap data gettext --src en --tgt de --out data/corpora/gettext-en-de``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

OPTIONS = {"max_vocab_size": 32000, "max_len": 100, "batch_size": 64}


def make_copies(source: Path, out: Path, copies: int) -> Path:
    """`copies` copies of source's training pairs (train.en/.de), its dev and test once."""
    if (out / "train.de").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    for name in ("dev", "test"):
        for lang in ("en", "de"):
            shutil.copy(source / f"{name}.{lang}", out / f"{name}.{lang}")
    for lang in ("en", "de"):
        text = (source / f"train.{lang}").read_bytes()
        with open(out / f"train.{lang}.tmp", "wb") as f:
            for _ in range(copies):
                f.write(text)
        os.replace(out / f"train.{lang}.tmp", out / f"train.{lang}")
    return out


def pss_kb() -> int:
    """This process's proportional set size (Linux), in kB."""
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints one JSON line."""
    import torch.distributed as dist

    from data.datamodules.translation import ParallelTextDataModule

    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world)
    before = pss_kb()
    started = time.perf_counter()
    dm = ParallelTextDataModule(args.data_dir, prepared_dir=args.prepared, **OPTIONS)
    dm.setup("fit")
    loader = dm.train_dataloader()
    batches = iter(loader)
    next(batches)
    startup = time.perf_counter() - started
    for _, _ in zip(range(args.batches - 1), batches):
        pass
    out = {
        "rank": rank,
        "startup_s": round(startup, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "data_pss_mb": round((pss_kb() - before) / 1024, 1),
        "pairs": len(dm.datasets["train"]),
    }
    if world > 1:
        dist.barrier()  # both hold their pages while the other measures
        dist.destroy_process_group()
    print(json.dumps(out), flush=True)


def run_child(data_dir: Path, prepared: Path | None, batches: int = 1, world: int = 1) -> list[dict]:
    cmd = [
        sys.executable,
        "-m",
        "data.prepared.bench",
        "--child",
        "--data-dir",
        str(data_dir),
        "--batches",
        str(batches),
    ]
    if prepared is not None:
        cmd += ["--prepared", str(prepared)]
    procs = []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT="29533")  # fmt: skip
        procs.append(
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        )
    results = []
    for p in procs:
        stdout, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"benchmark process failed ({p.returncode}): {' '.join(cmd)}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m data.prepared.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=1_000_000, help="training pairs of the large corpus")
    parser.add_argument("--source", default="data/corpora/gettext-en-de")
    parser.add_argument("--work", default="/tmp/seqcap_bench_prepare", help="where the copies and folders go")
    parser.add_argument(
        "--workers", type=int, default=None, help="data.prepared.prepare processes (default: all cores)"
    )
    parser.add_argument("--batches", type=int, default=2000, help="batches each DDP process reads")
    parser.add_argument("--raw-large", action="store_true", help="also time the raw path on --pairs pairs")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--prepared", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    source, work = Path(args.source), Path(args.work)
    if not (source / "train.en").is_file():
        raise SystemExit(
            f"{source}: no gettext corpus; python -m data.builders.gettext --src en --tgt de --out {source}"
        )
    per_copy = sum(1 for _ in open(source / "train.en", "rb"))
    copies = max(1, round(args.pairs / per_copy))
    sizes = sorted({1, 8, copies} if args.raw_large else {1, 8})
    rows = []
    for n in sizes:
        d = make_copies(source, work / f"x{n}", n)
        r = run_child(d, None)[0]
        rows.append(("raw text", n * per_copy, r["startup_s"], r["peak_rss_mb"]))
        rate = r["pairs"] / r["startup_s"]
        print(f"raw text, {n * per_copy:>9,} pairs: build + first batch {r['startup_s']:6.1f} s "
              f"({rate:,.0f} training pairs/s), peak RSS {r['peak_rss_mb']:,.0f} MB", flush=True)  # fmt: skip
    large = make_copies(source, work / f"x{copies}", copies)
    prepared = work / "prepared"
    shutil.rmtree(prepared, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "data.prepared.prepare",
        "--data_dir",
        str(large),
        "--out",
        str(prepared),
        "--no-progress",
    ]
    cmd += [x for k, v in OPTIONS.items() for x in (f"--{k}", str(v))]
    cmd += ["--workers", str(args.workers)] if args.workers else []
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    print(f"data.prepared.prepare, {copies * per_copy:>9,} pairs: {seconds:6.1f} s including Python start-up "
          f"({copies * per_copy / seconds:,.0f} pairs/s)", flush=True)  # fmt: skip
    r = run_child(large, prepared)[0]
    print(f"start-up on the prepared folder, {r['pairs']:,} pairs: "
          f"{r['startup_s']:6.2f} s to the first batch, "
          f"peak RSS {r['peak_rss_mb']:,.0f} MB ({r['peak_rss_mb'] - rows[0][3]:+,.0f} MB against the raw "
          f"{rows[0][1]:,}-pair start-up)", flush=True)  # fmt: skip
    one = run_child(large, prepared, args.batches)[0]
    two = run_child(large, prepared, args.batches, world=2)
    total = sum(r["data_pss_mb"] for r in two)
    print(f"data memory (PSS), {args.batches} batches a process: one process {one['data_pss_mb']:,.0f} MB, "
          f"two DDP processes {total:,.0f} MB together ({total / one['data_pss_mb']:.2f}x)",
          flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
