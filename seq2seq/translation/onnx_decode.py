"""Translate with an exported model (`seqcap export CKPT --format onnx --out DIR`) on onnxruntime.

    python -m seq2seq.translation.onnx_decode DIR [--beam-size 5] [--alpha 0.6] [--greedy]
        [--batch-size 64] [--threads N] [--no-unk-replace] < input > output

Raw text in (one sentence a line, UTF-8), detokenized text out, as `seqcap translate` writes it.
This module needs numpy, onnxruntime and the tokenizers (data/core/tokenizers.py, vocab.py: no
torch): not torch, nor seqcap's training code. Its greedy and beam search are those of
seq2seq/search.py, step for step: <pad> and <bos> banned with -inf logits, the GNMT length penalty
((5 + |Y|) / 6)^alpha, each beam's 2K best words ranked, K finished hypotheses end an input, at most
2 * source length + 10 words; sentences sorted by length and batched as Translator.translate does,
and an <unk> replaced by the source word it attends to most (seq2seq/translation/unknowns.py).

DIR holds encoder.onnx (src (B, S) int64, src_lengths (B,) int64 -> the decoder's first state),
decoder_step.onnx (prev (N,) int64 and the state -> logits (N, V) and the next state), topk.onnx
(each beam's best words), vocab.json and config.json (the tokenizers, max_len, and which graph
input and output is which state entry); seq2seq/translation/export.py writes them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from data.core.parallel import DataError, iter_lines
from data.core.tokenizers import tokenizer_from_state
from data.core.vocab import BOS, EOS, Vocabulary
from seq2seq.translation.unknowns import replace_unknowns

FORMAT = "seqcap-onnx"  # config.json's "format"
State = dict[str, np.ndarray]
StepFn = Callable[[np.ndarray, State], tuple[np.ndarray, State]]


@dataclass
class Hypothesis:
    tokens: list[int]
    score: float  # sum of log-probabilities (divided by the length penalty in beam search)
    attention: np.ndarray | None = None  # (len(tokens), S)


@dataclass
class Translation:
    text: str
    score: float
    tokens: list[str]
    attention: np.ndarray | None = None  # (T, S) over the source


def length_penalty(length: int, alpha: float) -> float:
    """GNMT (Wu et al. 2016): lp(Y) = ((5 + |Y|) / 6)^alpha; alpha=0 gives 1."""
    return ((5.0 + length) / 6.0) ** alpha


def _shift_and_log_sum(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """logits (N, V) float32 -> per row its max (N, 1) and log Σ exp(x - max) (N, 1): log_softmax
    of entry i is (x_i - max) - log_sum, computed for the entries a search needs only."""
    row_max = logits.max(-1, keepdims=True)
    shifted = logits - row_max
    return row_max, np.log(np.exp(shifted, out=shifted).sum(-1, keepdims=True))


def greedy(step_fn: StepFn, state: State, max_len: np.ndarray, attention: bool) -> list[Hypothesis]:
    """The likeliest word at every step until <eos> or max_len (B,) words: search.greedy. The
    batch keeps its B rows to the end (a finished row writes <eos>), as there."""
    B = len(max_len)
    tokens = np.full(B, BOS, dtype=np.int64)
    scores = np.zeros(B, dtype=np.float32)
    done = max_len <= 0
    out, attn = [], []
    for t in range(int(max_len.max()) if B else 0):
        if done.all():
            break
        logits, state = step_fn(tokens, state)
        tokens = logits.argmax(-1)
        row_max, log_sum = _shift_and_log_sum(logits)
        picked = (np.take_along_axis(logits, tokens[:, None], 1) - row_max) - log_sum
        scores = scores + np.where(done, np.float32(0.0), picked[:, 0])
        out.append(np.where(done, EOS, tokens))
        if attention:
            attn.append(state["attention"])
        done = done | (tokens == EOS) | (t + 1 >= max_len)
    seq = np.stack(out, 1).tolist() if out else [[] for _ in range(B)]
    hyps = []
    for b in range(B):
        toks = seq[b]
        n = toks.index(EOS) if EOS in toks else len(toks)
        a = np.stack([w[b] for w in attn[:n]]) if attn and n else None
        hyps.append(Hypothesis(toks[:n], float(scores[b]), a))
    return hyps


def beam_search(
    step_fn: StepFn,
    state: State,
    max_len: np.ndarray,
    beam_size: int,
    alpha: float,
    n_best: int,
    attention: bool,
    static: frozenset[str],
    top: Callable[[np.ndarray, int], np.ndarray],
) -> list[list[Hypothesis]]:
    """search.beam_search: each step ranks the 2K best continuations of an input's K live beams;
    those ending in <eos> within the first K finish (score / lp(length)), the best K others live
    on; an input is done with K finished hypotheses, and at its max_len its K best continuations
    finish as they are. `static`: state entries the step passes through (memory, keys, mask),
    the same for every beam of an input, reordered only when inputs leave the batch. top(logits,
    k): the indices of each row's k largest entries, largest first."""
    B, K = len(max_len), beam_size
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    active = [b for b in range(B) if max_len[b] > 0]
    state = {k: v[active] for k, v in state.items()}
    limit = max_len[active]
    A = len(active)
    tokens = np.full(A, BOS, dtype=np.int64)  # the first step once an input, then K beams each
    beam_scores = np.full((A, K), -np.inf, dtype=np.float32)
    beam_scores[:, 0] = 0.0  # all beams start identical: keep one alive
    history = np.zeros((A * K, 0), dtype=np.int64)
    attn_history = None
    for t in range(int(limit.max()) if A else 0):
        logits, state = step_fn(tokens, state)
        per_beam = min(2 * K, logits.shape[-1])
        best_words = top(logits, per_beam)  # a beam's 2K best words: (A*K, per_beam)
        row_max, log_sum = _shift_and_log_sum(logits)
        best_log_probs = (np.take_along_axis(logits, best_words, 1) - row_max) - log_sum
        if t == 0:
            beams = np.repeat(np.arange(A), K)
            best_words, best_log_probs = best_words[beams], best_log_probs[beams]
            state = {k: v[beams] for k, v in state.items()}
        candidates = (beam_scores.reshape(-1, 1) + best_log_probs).reshape(A, K * per_beam)
        top_index = np.argsort(-candidates, axis=1, kind="stable")[:, : min(2 * K, K * per_beam)]
        top_scores = np.take_along_axis(candidates, top_index, 1)  # (A, 2K)
        top_beam = top_index // per_beam
        top_token = np.take_along_axis(best_words.reshape(A, K * per_beam), top_index, 1)
        base = (np.arange(A) * K)[:, None]
        if attention:
            step_attn = state["attention"][:, None]
            attn_history = step_attn if attn_history is None else np.concatenate([attn_history, step_attn], 1)

        is_eos = top_token == EOS
        last = t + 1 >= limit
        finish = (is_eos | last[:, None]) & np.isfinite(top_scores)
        finish[:, K:] = False
        lp = length_penalty(t + 1, alpha)
        for a, j in zip(*np.nonzero(finish)):
            row, tok = int(base[a, 0] + top_beam[a, j]), int(top_token[a, j])
            toks = history[row].tolist() + ([] if tok == EOS else [tok])
            att = attn_history[row][: len(toks)] if attn_history is not None else None
            finished[active[a]].append(Hypothesis(toks, float(top_scores[a, j]) / lp, att))
        still = [a for a in range(A) if len(finished[active[a]]) < K and not last[a]]
        if not still:
            break

        keep = np.argsort(is_eos, axis=1, kind="stable")[:, :K]  # the K best not ending in <eos>
        shrink = len(still) < A
        if shrink:
            keep, top_scores, top_beam, top_token = (
                x[still] for x in (keep, top_scores, top_beam, top_token)
            )
            base, limit = base[still], limit[still]
            active = [active[a] for a in still]
            A = len(still)
        beam_scores = np.take_along_axis(top_scores, keep, 1)
        rows = (base + np.take_along_axis(top_beam, keep, 1)).reshape(-1)
        tokens = np.take_along_axis(top_token, keep, 1).reshape(-1)
        history = np.concatenate([history[rows], tokens[:, None]], 1)
        if attn_history is not None:
            attn_history = attn_history[rows]
        state = {k: v if k in static and not shrink else v[rows] for k, v in state.items()}

    results = []
    for hyps in finished:
        if not hyps:
            hyps.append(Hypothesis([], 0.0))
        hyps.sort(key=lambda h: h.score, reverse=True)
        results.append(hyps[:n_best])
    return results


class OnnxTranslator:
    """An exported translation model on onnxruntime: raw text in, raw text out (Translator's API).
    `threads`: onnxruntime's intra-op threads (None: its default, one per physical core)."""

    def __init__(self, folder: str | Path, unk_replace: bool = True, threads: int | None = None):
        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if config.get("format") != FORMAT:
            raise ValueError(
                f"{folder}: not a seqcap ONNX export (its config.json: {config.get('format')!r})"
            )
        vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        self.config = config
        self.src_vocab, self.tgt_vocab = Vocabulary(vocab["src_vocab"]), Vocabulary(vocab["tgt_vocab"])
        self.src_tokenizer = tokenizer_from_state(config["src_tokenizer"])
        self.tgt_tokenizer = tokenizer_from_state(config["tgt_tokenizer"])
        self.max_len = int(config["max_len"])
        self.banned = np.asarray(config["banned"], dtype=np.int64)
        self.unk_replace = unk_replace and config["attention"]
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        cpu = ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(str(folder / config["encoder"]["file"]), options, providers=cpu)
        self.step_session = ort.InferenceSession(
            str(folder / config["decoder_step"]["file"]), options, providers=cpu
        )
        self.topk = ort.InferenceSession(str(folder / config["topk"]["file"]), options, providers=cpu)
        step = config["decoder_step"]
        self.state_names: list[str] = config["encoder"]["outputs"]
        self.step_inputs = [i.name for i in self.step_session.get_inputs()]  # those the graph kept
        self.step_outputs: dict[str, str] = step["outputs"]  # graph output -> state entry
        self.static = frozenset(step["static"])

    def encode(self, sentence: str) -> tuple[list[int], list[str], bool]:
        """-> ids, tokens (both cut to max_len) and whether the sentence was truncated."""
        tokens = self.src_tokenizer.tokenize(sentence)
        cut = len(tokens) > self.max_len
        tokens = tokens[: self.max_len]
        return self.src_vocab.encode(tokens), tokens, cut

    def initial_state(self, ids: list[list[int]]) -> tuple[State, np.ndarray]:
        """Source ids -> the decoder's first state (each entry batch first) and the lengths (B,)."""
        lengths = np.asarray([len(s) for s in ids], dtype=np.int64)
        src = np.zeros((len(ids), int(lengths.max())), dtype=np.int64)  # <pad> is 0
        for i, s in enumerate(ids):
            src[i, : len(s)] = s
        values = self.encoder.run(self.state_names, {"src": src, "src_lengths": lengths})
        return dict(zip(self.state_names, values)), lengths

    def step(self, prev: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """One decoder step: prev (N,) int64 -> logits (N, V) with <pad> and <bos> at -inf, and
        the next state (the entries the graph does not return pass through)."""
        feeds = {name: prev if name == "prev" else state[name] for name in self.step_inputs}
        names = list(self.step_outputs)
        values = self.step_session.run(names, feeds)
        new = dict(state)
        for name, value in zip(names, values):
            new[self.step_outputs[name]] = value
        logits = new.pop("logits")
        logits[:, self.banned] = -np.inf
        return logits, new

    def top(self, logits: np.ndarray, k: int) -> np.ndarray:
        """Indices (N, k) of the k largest logits of each row (N, V), largest first, ties by the
        lower index: topk.onnx, ONNX's TopK (numpy's argpartition takes ~10x as long over 8k words)."""
        return self.topk.run(["indices"], {"logits": logits, "k": np.array([k], dtype=np.int64)})[0]

    def translate(
        self,
        sentences: list[str],
        beam_size: int = 5,
        alpha: float = 0.6,
        n_best: int = 1,
        batch_size: int = 64,
        method: str = "beam",
        warn=None,
    ) -> list[list[Translation]]:
        """One list of n_best translations per sentence, in input order (empty in, empty out), as
        Translator.translate gives them; method "greedy" ignores beam_size, alpha and n_best."""
        if method not in ("beam", "greedy"):
            raise ValueError(f"method must be 'beam' or 'greedy', got {method!r}")
        if method == "greedy":
            n_best = 1
        elif beam_size < 1 or not 1 <= n_best <= beam_size:
            raise ValueError(f"need beam_size >= 1 and 1 <= n_best <= beam_size, got {beam_size}, {n_best}")
        encoded = [self.encode(s) for s in sentences]
        for i, (_, _, cut) in enumerate(encoded):
            if cut and warn is not None:
                n = len(self.src_tokenizer.tokenize(sentences[i]))
                warn(f"line {i + 1}: {n} tokens, truncated to the model's maximum of {self.max_len}")
        results: list[list[Translation]] = [[Translation("", 0.0, [])] * n_best for _ in sentences]
        todo = sorted((i for i, (ids, _, _) in enumerate(encoded) if ids), key=lambda i: len(encoded[i][0]))
        attention = self.unk_replace
        for k in range(0, len(todo), batch_size):
            batch = todo[k : k + batch_size]
            state, lengths = self.initial_state([encoded[i][0] for i in batch])
            max_len = 2 * lengths + 10
            if method == "greedy":
                hyps = [[h] for h in greedy(self.step, state, max_len, attention)]
            else:
                hyps = beam_search(
                    self.step, state, max_len, beam_size, alpha, n_best, attention, self.static, self.top
                )
            for i, options in zip(batch, hyps):
                results[i] = []
                for h in options:
                    tokens = self.tgt_vocab.decode(h.tokens)
                    if self.unk_replace:
                        tokens = replace_unknowns(tokens, h.attention, encoded[i][1])
                    text = self.tgt_tokenizer.detokenize(tokens)
                    results[i].append(Translation(text, h.score, tokens, h.attention))
        return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m seq2seq.translation.onnx_decode", description=__doc__.split("\n")[0]
    )
    parser.add_argument("folder", help="what `seqcap export CKPT --format onnx --out DIR` wrote")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=0.6, help="GNMT length penalty")
    parser.add_argument("--greedy", action="store_true", help="greedy search instead of beam search")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, help="onnxruntime's threads (default: one per core)")
    parser.add_argument("--no-unk-replace", action="store_true", help="keep <unk> in the output")
    args = parser.parse_args(argv)
    if args.beam_size < 1 or args.batch_size < 1:
        parser.error(f"--beam-size and --batch-size must be >= 1, got {args.beam_size}, {args.batch_size}")
    folder = Path(args.folder)
    missing = [n for n in ("config.json", "vocab.json") if not (folder / n).is_file()]
    if missing:
        print(f"error: {folder}: no {missing[0]}; give a folder `seqcap export` wrote", file=sys.stderr)
        return 2
    try:
        translator = OnnxTranslator(folder, unk_replace=not args.no_unk_replace, threads=args.threads)
    except (ValueError, KeyError, OSError, ort.capi.onnxruntime_pybind11_state.Fail) as e:
        print(f"error: {folder}: cannot load the export ({type(e).__name__}: {e})", file=sys.stderr)
        return 2
    try:
        lines = list(iter_lines(sys.stdin.buffer, "<stdin>"))
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    def warn(message: str) -> None:
        print(f"warning: <stdin>, {message}", file=sys.stderr)

    method = "greedy" if args.greedy else "beam"
    results = translator.translate(
        lines, args.beam_size, args.alpha, batch_size=args.batch_size, method=method, warn=warn
    )
    sys.stdout.write("".join(options[0].text + "\n" for options in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
