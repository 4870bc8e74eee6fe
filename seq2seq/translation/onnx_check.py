"""The ONNX loop beside PyTorch on real sentences: how many outputs are identical, and how fast.

`seqcap export CKPT --out DIR --check SRC_FILE [--limit N]` runs `report` after exporting: the
PyTorch Translator (Translator.translate) and the onnxruntime loop (onnx_decode.OnnxTranslator)
translate the same sentences, greedy and beam, on the same number of threads (torch's), one after
the other; it prints the share of sentences whose output tokens (after <unk> replacement) are
identical, sentences/s of each, and the first sentences that differ with where they part.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from data.core.parallel import read_lines
from seq2seq.translation.onnx_decode import OnnxTranslator
from seq2seq.translation.predictor import Translator


@dataclass
class Comparison:
    method: str  # "greedy" or "beam 5 (alpha 0.6)"
    sentences: int
    identical: int
    torch_seconds: float
    onnx_seconds: float
    differ: list[int] = field(default_factory=list)  # indices of the sentences that differ
    torch_tokens: list[list[str]] = field(default_factory=list)
    onnx_tokens: list[list[str]] = field(default_factory=list)
    torch_scores: list[float] = field(default_factory=list)
    onnx_scores: list[float] = field(default_factory=list)

    @property
    def share(self) -> float:
        return self.identical / self.sentences if self.sentences else 1.0

    @property
    def score_difference(self) -> float:
        """The largest difference between the two scores of one sentence."""
        return max((abs(a - b) for a, b in zip(self.torch_scores, self.onnx_scores)), default=0.0)

    def line(self) -> str:
        rate = (
            f"torch {self.sentences / self.torch_seconds:.1f} sentences/s, onnxruntime "
            f"{self.sentences / self.onnx_seconds:.1f} sentences/s"
        )
        same = f"{self.identical}/{self.sentences} identical ({100 * self.share:.2f}%)"
        return f"{self.method}: {same}, scores within {self.score_difference:.1e}; {rate}"


def compare(
    translator: Translator,
    runtime: OnnxTranslator,
    sentences: list[str],
    method: str = "beam",
    beam_size: int = 5,
    alpha: float = 0.6,
    batch_size: int = 64,
) -> Comparison:
    """Both translate `sentences` (timed, each once, after both translated the first 8 untimed);
    the best hypothesis of each is compared."""
    for model in (translator, runtime):  # thread pools, lazy initialisation, first allocations
        model.translate(sentences[:8], beam_size, alpha, batch_size=batch_size, method=method)
    start = time.perf_counter()
    expected = translator.translate(sentences, beam_size, alpha, batch_size=batch_size, method=method)
    torch_seconds = time.perf_counter() - start
    start = time.perf_counter()
    got = runtime.translate(sentences, beam_size, alpha, batch_size=batch_size, method=method)
    onnx_seconds = time.perf_counter() - start
    name = "greedy" if method == "greedy" else f"beam {beam_size} (alpha {alpha})"
    a, b = [o[0].tokens for o in expected], [o[0].tokens for o in got]
    differ = [i for i in range(len(sentences)) if a[i] != b[i]]
    return Comparison(
        name, len(sentences), len(sentences) - len(differ), torch_seconds, onnx_seconds, differ, a, b,
        [o[0].score for o in expected], [o[0].score for o in got],
    )  # fmt: skip


def parting(a: list[str], b: list[str]) -> int:
    """The first position where two token lists differ."""
    return next((t for t, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def report(
    checkpoint: str | Path,
    folder: str | Path,
    src_file: str | Path,
    limit: int | None = None,
    beam_size: int = 5,
    alpha: float = 0.6,
    batch_size: int = 64,
    show: int = 5,
) -> list[Comparison]:
    """Prints, for greedy and beam search, the share of identical outputs and both speeds, and the
    first `show` sentences that differ; returns the comparisons."""
    sentences = read_lines(src_file)[:limit]
    threads = torch.get_num_threads()
    translator = Translator.from_checkpoint(checkpoint, "cpu")
    runtime = OnnxTranslator(folder, threads=threads)
    print(f"{len(sentences)} sentences of {src_file}, {threads} threads (torch {torch.__version__})")
    results = []
    for method in ("greedy", "beam"):
        result = compare(translator, runtime, sentences, method, beam_size, alpha, batch_size)
        print(result.line())
        for i in result.differ[:show]:
            a, b = result.torch_tokens[i], result.onnx_tokens[i]
            print(
                f"  line {i + 1}: part at word {parting(a, b) + 1} of {len(a)}/{len(b)}; score torch "
                f"{result.torch_scores[i]:.6f}, onnx {result.onnx_scores[i]:.6f}\n"
                f"    torch: {' '.join(a)}\n    onnx:  {' '.join(b)}"
            )
        results.append(result)
    return results
