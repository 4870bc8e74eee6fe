"""The reliability probes of issue 27, run as a user runs the commands: a table, not a test.

    python -m seqcap.reliability_probe [--sizes 1000 10000 100000] [--keep]

On tiny data it builds here (the reversal task, a few shapes images with VQA questions) it trains
small models and then tries what once lost work or gave a traceback: a run killed with SIGKILL
and resumed, the step last.ckpt holds after a run, a kill during a checkpoint save, translate's
output on errors, non-UTF-8 stdin, bad `--ckpt_path` values, a constructor value, changed
hyperparameters on resume, an empty VQA question; and the peak RSS of translate by input size
(seq2seq/translation/memory_probe.py). Each row says what happened. About 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REVERSE = "configs/translation/reverse_attention.yaml"
VQA = "configs/vqa/shapes_attention.yaml"
SMALL = ["--model.init_args.rnn.embed_dim", "16", "--model.init_args.rnn.hidden_size", "32"]


def env() -> dict[str, str]:
    e = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), e.get("PYTHONPATH", "")) if p)
    return e


def python(*args: str, stdin: bytes | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env(), input=stdin, capture_output=True, timeout=timeout
    )


def error_line(result: subprocess.CompletedProcess) -> str:
    """'exit N: <the last stderr line>' and whether there was a traceback."""
    err = result.stderr.decode(errors="replace").strip().splitlines()
    last = err[-1] if err else ""
    traceback = " (with a traceback)" if any(line.startswith("Traceback") for line in err) else ""
    return f"exit {result.returncode}{traceback}: {last[:150]}"


def intact(same: bool, otherwise: str) -> str:
    return "intact" if same else otherwise


class Probe:
    def __init__(self, work: Path):
        self.work = work
        self.rows: list[tuple[str, str]] = []

    def row(self, probe: str, outcome: str) -> None:
        self.rows.append((probe, outcome))
        print(f"{probe}: {outcome}", flush=True)

    def fit(self, root: str, *extra: str) -> list[str]:
        return [
            "-m", "seqcap", "fit", "-c", REVERSE, "--data.init_args.data_dir", str(self.work / "reverse"),
            "--trainer.default_root_dir", str(self.work / root), "--trainer.enable_progress_bar", "false",
            "--data.init_args.batch_size", "32", "--model.init_args.rnn.dropout", "0.3", *SMALL,
            "--trainer.max_epochs", "-1", "--trainer.limit_val_batches", "1", *extra,
        ]  # fmt: skip

    def last(self, root: str) -> Path:
        return next((self.work / root).glob("*/version_*/checkpoints/last.ckpt"))

    # -- data and models ------------------------------------------------------------------------
    def build(self) -> None:
        from data.builders import shapes_vqa
        from data.builders.shapes import build_shapes_dataset
        from data.builders.synthetic import build_synthetic_corpus

        build_synthetic_corpus("reverse", self.work / "reverse", vocab=10, train_len=(3, 8), test_len=(3, 8),
                               n=640, n_dev=40, n_test=20, seed=0)  # fmt: skip
        build_shapes_dataset(self.work / "shapes", n_train=8, n_val=4, n_test=2, size=64, progress=False)
        shapes_vqa.write(self.work / "vqa", shapes_vqa.build(self.work / "shapes"))

    def vqa_fit(self, root: str, *extra: str) -> list[str]:
        return [
            "-m", "seqcap", "fit", "-c", VQA, "--data.init_args.root", str(self.work / "vqa"),
            "--data.init_args.image_size", "64", "--data.init_args.cache_dir", str(self.work / "features"),
            "--trainer.default_root_dir", str(self.work / root), "--trainer.enable_progress_bar", "false",
            "--model.init_args.joint_size", "32", *SMALL, *extra,
        ]  # fmt: skip

    # -- probes ---------------------------------------------------------------------------------
    def resume(self) -> None:
        import torch

        quiet = {"cwd": REPO, "env": env(), "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        steps = ["--trainer.max_steps", "50"]
        straight = subprocess.Popen([sys.executable, *self.fit("straight", *steps)], **quiet)
        every = ["--checkpoint.every_n_train_steps", "7"]
        killed = subprocess.Popen([sys.executable, *self.fit("killed", *steps, *every)], **quiet)
        step = 0
        while killed.poll() is None and step < 28:  # kill -9 once last.ckpt is past step 27
            time.sleep(0.2)
            try:
                step = torch.load(self.last("killed"), weights_only=True)["global_step"]
            except (StopIteration, FileNotFoundError, RuntimeError, EOFError):
                pass
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        straight.wait()
        at_kill = torch.load(self.last("killed"), weights_only=True)["global_step"]
        resumed = python(*self.fit("killed", "--trainer.max_steps", "50", "--ckpt_path", "last"))
        a, b = (torch.load(self.last(r), weights_only=True) for r in ("straight", "killed"))
        diff = max(
            (a["state_dict"][k].float() - b["state_dict"][k].float()).abs().max().item()
            for k in a["state_dict"]
        )
        warned = "not resumable" in resumed.stderr.decode() + resumed.stdout.decode()
        self.row("resume after kill -9 (mid-epoch, dropout 0.3)",
                 f"killed with last.ckpt at step {at_kill}; resumed to step {b['global_step']}: max weight "
                 f"difference {diff:.3g} ({'bitwise equal' if diff == 0 else 'NOT equal'})"
                 f"{'; Lightning warned: not resumable' if warned else ''}")  # fmt: skip
        self.row("last.ckpt after a 50-step run", f"holds step {a['global_step']}")

    def torn(self) -> None:
        import torch

        saver = (
            "import sys, torch\nfrom seq2seq.training.resume import AtomicCheckpointIO\n"
            "io, w = AtomicCheckpointIO(), torch.zeros(50_000_000)\n"
            "for s in range(1000): io.save_checkpoint({'global_step': s, 'w': w + s}, sys.argv[1])\n"
        )
        path = self.work / "torn" / "last.ckpt"
        proc = subprocess.Popen(
            [sys.executable, "-c", saver, str(path)], cwd=REPO, env={**env(), "TMPDIR": "/dev/shm"}
        )
        while not (path.exists() and list(path.parent.glob(".last.ckpt.tmp-*"))) and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ckpt = torch.load(path, weights_only=True)
        whole = bool((ckpt["w"] == ckpt["global_step"]).all())
        self.row("kill -9 during a 200 MB save (TMPDIR=/dev/shm)",
                 f"last.ckpt loads, step {ckpt['global_step']}, {'whole' if whole else 'TORN'}; "
                 "the temp file lies beside it and the next save removes it")  # fmt: skip

    def translate(self) -> None:
        ckpt = str(self.last("straight"))

        def translate(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
            return python("-m", "seqcap", "translate", "--checkpoint", ckpt, *args, stdin=stdin)

        out, precious = self.work / "out.txt", "precious\n"
        out.write_text(precious)
        r = translate("--output", str(out), "--overwrite", stdin=b"w1 w2\nw1 w2 \xff\xfe w3\n")
        kept = intact(out.read_text() == precious, "CHANGED")
        self.row("translate: non-UTF-8 stdin, existing --output", f"{error_line(r)}; output {kept}")
        src, line = self.work / "in.txt", "w1 w2 w3\n"
        src.write_text(line)
        os.link(src, self.work / "link.txt")
        r = translate("--input", str(src), "--output", str(self.work / "link.txt"), "--overwrite")
        kept = intact(src.read_text() == line, "DESTROYED")
        self.row("translate: --output a hard link to --input", f"{error_line(r)}; input {kept}")
        r = translate("--input", str(src), "--output", str(self.work))
        self.row("translate: --output a folder", error_line(r))
        r = translate("--input", str(src), "--output", str(out))
        kept = intact(out.read_text() == precious, "CHANGED")
        self.row("translate: --output exists, no --overwrite", f"{error_line(r)}; output {kept}")
        plots = self.work / "plots"
        plots.mkdir()
        (plots / "00001.png").write_bytes(b"mine")
        r = translate("--input", str(src), "--attention-plot", str(plots))
        kept = intact((plots / "00001.png").read_bytes() == b"mine", "REPLACED")
        self.row("translate: --attention-plot over existing PNGs", f"{error_line(r)}; plot {kept}")

    def ckpt_errors(self) -> None:
        good = self.last("straight")
        truncated = self.work / "truncated.ckpt"
        truncated.write_bytes(good.read_bytes()[:100])
        vqa = self.last("vqa")
        for name, path in (
            ("missing", self.work / "nope.ckpt"),
            ("truncated", truncated),
            ("a VQA checkpoint", vqa),
        ):
            r = python(*self.fit("err", "--trainer.max_steps", "1", "--ckpt_path", str(path)))
            self.row(f"fit --ckpt_path {name} (translation config)", error_line(r))
        r = python(*self.vqa_fit("err2", "--trainer.max_steps", "1", "--data.init_args.max_answers", "0"))
        self.row("fit VQA with data.max_answers: 0", error_line(r))
        r = python(*self.fit("straight", "--trainer.max_steps", "51", "--ckpt_path", str(good),
                             "--model.init_args.rnn.hidden_size", "64"))  # fmt: skip
        self.row("fit --ckpt_path (hidden 32) with --model...hidden_size 64", error_line(r))

    def vqa(self) -> None:
        image = next((self.work / "shapes").rglob("*.png"))
        r = python("-m", "seqcap", "answer", "--checkpoint", str(self.last("vqa")), str(image), "  ")
        self.row("answer: an empty question", error_line(r))

    def memory(self, sizes: list[int]) -> None:
        from seq2seq.translation.memory_probe import peak_rss, source_words

        ckpt = str(self.last("straight"))
        words = source_words(ckpt)
        for n in sizes:
            mib, seconds, rc = peak_rss(
                "seq2seq.translation.cli", ckpt, n, words, ["--beam-size", "1", "--device", "cpu"], self.work
            )
            self.row(f"translate peak RSS, {n:,} sentences", f"{mib:,.1f} MiB ({seconds:.0f} s, exit {rc})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m seqcap.reliability_probe", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000, 100000])
    parser.add_argument("--keep", action="store_true", help="keep the work folder (its path is printed)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="seqcap-probe-"))
    probe = Probe(work)
    try:
        probe.build()
        r = python(*probe.vqa_fit("vqa", "--trainer.max_steps", "4"))
        if r.returncode != 0:
            raise SystemExit(f"training the VQA model failed: {error_line(r)}")
        probe.resume()
        probe.torn()
        probe.translate()
        probe.ckpt_errors()
        probe.vqa()
        probe.memory(args.sizes)
    finally:
        if args.keep:
            print(f"work folder: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    width = max(len(p) for p, _ in probe.rows)
    print(f"\n{'probe':<{width}} | outcome\n{'-' * width}-+-{'-' * 60}")
    for p, outcome in probe.rows:
        print(f"{p:<{width}} | {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
