"""`seqcap export CKPT --format onnx --out DIR`: a translation checkpoint as ONNX graphs.

    seqcap export CKPT [--format onnx] --out DIR [--overwrite]
        [--check SRC_FILE [--limit N] [--beam-size 5] [--alpha 0.6] [--batch-size 64]]

DIR then holds what seq2seq/translation/onnx_decode.py needs to translate without torch:

  encoder.onnx       src (B, S) int64, src_lengths (B,) int64 -> the decoder's first state:
                     Seq2Seq.encode, then RecurrentDecoder.init_state, one output per state entry
                     (h, c: (B, L, H), memory: (B, S, M), keys: (B, S, A), mask: (B, S) bool, ...;
                     with a fixed context also encoder_states (B, S, M), which the loop leaves)
  decoder_step.onnx  prev (B,) int64 and the state entries by name -> logits (B, V) and the next
                     state (next_h, next_c, attention: (B, S), ...): RecurrentDecoder.step, one word;
                     the entries it passes through (memory, keys, mask) are inputs only
  topk.onnx          ONNX's TopK alone: the loop's beam search picks each beam's best words with it
  vocab.json         the source and target vocabularies (lists of strings, id order)
  config.json        the tokenizers' states, max_len, the banned ids, which input and output is
                     which state entry

Batch and source length are dynamic in both model graphs. The graphs come from the TorchScript exporter
(torch.onnx.export(dynamo=False), opset 17): the encoder runs fused nn.LSTM/GRU/RNN over packed
sequences, which it turns into ONNX's LSTM with per-sentence lengths, while torch.export (the
dynamo exporter) cannot trace pack_padded_sequence (data-dependent shapes). The decoder step,
written on the cells (RNN.step), exports with either; one exporter keeps one set of quirks.
Every export is checked on onnxruntime against the PyTorch model at batch sizes and source lengths
other than the traced ones before DIR is written.

Refused with one `error:` line (exit status 2): a checkpoint of another task (captioning, language
model, VQA), a multimodal translator (fusion other than none: its CNN reads images), an encoder on
the cell path with a cell option no fused kernel has (rnn.peephole, rnn.gru_reset_after=False:
its Python loop over source positions would be traced at one length), an existing non-empty DIR
without --overwrite, and with it a DIR that holds anything but a previous export. DIR is written as
a temporary folder beside it and renamed when complete.

--check SRC_FILE then translates SRC_FILE's first --limit lines with the PyTorch Translator and
with the ONNX loop, greedy and beam, and prints the share of identical outputs and sentences/s
(seq2seq/translation/onnx_check.py).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from data.core.parallel import DataError
from data.core.vocab import BOS, PAD
from seq2seq.modules.rnn import RNN, fusable
from seq2seq.predictor import TASKS, checkpoint_task
from seq2seq.training.checkpoint import CheckpointError, load_checkpoint
from seq2seq.translation.onnx_decode import FORMAT
from seq2seq.translation.predictor import Translator

OPSET = 17
FILES = ("encoder.onnx", "decoder_step.onnx", "topk.onnx", "vocab.json", "config.json")


class ExportError(ValueError):
    """What cannot be exported, in one line that names it."""


class EncoderGraph(nn.Module):
    """src (B, S), src_lengths (B,) -> the decoder's first state, one tensor per entry of `names`,
    then the encoder states (B, S, M) when the state does not hold them (fixed context): the
    TorchScript exporter fails on a packed LSTM whose output sequence nothing uses."""

    def __init__(self, model: nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, ...]:
        memory, mask, summary = self.model.encode(src, src_lengths)
        state = self.model.decoder.init_state(memory, mask, summary)
        return (*(state[n] for n in self.names), *(() if "memory" in state else (memory,)))


class StepGraph(nn.Module):
    """prev (B,) and the state entries `inputs` -> logits (B, V) and the entries `outputs`."""

    def __init__(self, decoder: nn.Module, inputs: list[str], outputs: list[str]):
        super().__init__()
        self.decoder, self.inputs, self.outputs = decoder, inputs, outputs

    def forward(self, prev: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        logits, new = self.decoder.step(prev, dict(zip(self.inputs, state)))
        return (logits, *(new[n] for n in self.outputs))


def load_translator(path: str | Path) -> Translator:
    """The checkpoint's Translator on the CPU (Translator.from_checkpoint's two halves, so that
    another task is named as such); ExportError for what cannot be exported."""
    ckpt = load_checkpoint(path)
    task = checkpoint_task(ckpt, path)
    if task != "translation":
        what = TASKS.get(task, (task,))[0]
        raise ExportError(f"{path}: a {what} checkpoint; seqcap export takes translation checkpoints only")
    fusion = (ckpt.get("hyper_parameters") or {}).get("fusion", "none")
    if fusion != "none":  # told before its CNN is built
        raise ExportError(
            f"{path}: a multimodal translator (fusion={fusion!r}): its CNN reads images, which seqcap "
            "export does not export; only text-only translators (fusion none)"
        )
    return Translator.from_loaded(ckpt, path, torch.device("cpu"))


def exportable(model: nn.Module, path: str | Path) -> nn.Module:
    """The model as it exports: an encoder on the cell path with options a fused kernel computes
    (rnn.impl='cells') becomes a fused copy with the same weights; one with peepholes or the seeds'
    GRU is an ExportError."""
    rnn = model.encoder.rnn
    if rnn.impl != "cells":
        return model
    if not fusable(rnn.cell, rnn.cell_options):
        option = "rnn.peephole=True" if rnn.cell == "lstm" else "rnn.gru_reset_after=False"
        raise ExportError(
            f"{path}: the encoder runs on the cell path ({option}), a Python loop over source positions "
            "that would be traced at one source length; only encoders with a fused kernel export"
        )
    fused = RNN(
        rnn.cell, rnn.input_size, rnn.hidden_size, rnn.num_layers, rnn.num_directions == 2, rnn.dropout,
        "fused", **rnn.cell_options,
    )  # fmt: skip
    fused.load_state_dict(rnn.state_dict())
    model = copy.deepcopy(model)
    model.encoder.rnn = fused.eval()
    return model


def example(model: nn.Module, lengths: list[int], seed: int = 0) -> tuple[Tensor, Tensor]:
    """A padded batch of random source ids (>= 4: no special) with these lengths: (B, S), (B,)."""
    g = torch.Generator().manual_seed(seed)
    V = model.encoder.embedding.num_embeddings
    src = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        src[i, :n] = torch.randint(min(4, V - 1), V, (n,), generator=g)
    return src, torch.tensor(lengths)


@contextlib.contextmanager
def quiet():
    """Silences the exporter: its Python warnings (TracerWarning on shape checks, the TorchScript
    exporter's deprecation, the LSTM batch-size note; the checks after export cover them) and the
    shape-inference notes its C++ writes to file descriptor 2."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def topk_graph() -> bytes:
    """ONNX's TopK alone: logits (N, V) float, k (1,) int64 -> values, indices (N, k), largest
    first, equal values by the lower index; the ONNX loop's beam search takes each beam's 2K best
    words with it."""
    from onnx import TensorProto, helper

    node = helper.make_node("TopK", ["logits", "k"], ["values", "indices"], axis=-1, largest=1, sorted=1)
    graph = helper.make_graph(
        [node], "topk",
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "vocab"]),
         helper.make_tensor_value_info("k", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("values", TensorProto.FLOAT, ["batch", "k"]),
         helper.make_tensor_value_info("indices", TensorProto.INT64, ["batch", "k"])],
    )  # fmt: skip
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8
    ).SerializeToString()


def _axes(a: Tensor, b: Tensor, first: tuple[int, int], second: tuple[int, int]) -> dict[int, str]:
    """The dynamic axes of one tensor seen at (B, S) = first and second: those that moved with them."""
    names = {}
    for d, (x, y) in enumerate(zip(a.shape, b.shape)):
        if (x, y) == (first[0], second[0]):
            names[d] = "batch"
        elif (x, y) == (first[1], second[1]):
            names[d] = "src_len"
    return names


@torch.no_grad()
def export_graphs(model: nn.Module, folder: Path) -> dict:
    """Writes encoder.onnx and decoder_step.onnx into `folder`; returns their part of config.json."""
    model = model.eval()
    shapes, runs = ((2, 5), (3, 7)), []
    for B, S in shapes:  # eager runs at two sizes: names, pass-through entries and dynamic axes
        src, lengths = example(model, [S, S - 2] + [S - 1] * (B - 2))
        state = model.decoder.init_state(*model.encode(src, lengths))
        prev = torch.full((B,), BOS, dtype=torch.long)
        logits, new = model.decoder.step(prev, state)
        runs.append((src, lengths, state, prev, logits, new))
    (src, lengths, state, prev, logits, new), (_, _, state2, _, logits2, new2) = runs
    names = list(state)
    static = [n for n in names if new[n] is state[n]]
    changed = [n for n in new if n not in static]
    out_names = {(f"next_{n}" if n in state else n): n for n in changed}  # next_h, ..., attention
    axes = {"src": {0: "batch", 1: "src_len"}, "src_lengths": {0: "batch"}, "prev": {0: "batch"}}
    axes["logits"] = _axes(logits, logits2, *shapes)
    axes.update({n: _axes(state[n], state2[n], *shapes) for n in names})
    axes.update({o: _axes(new[n], new2[n], *shapes) for o, n in out_names.items()})
    encoder = EncoderGraph(model, names).eval()
    step = StepGraph(model.decoder, names, changed).eval()
    enc_out = names if "memory" in names else [*names, "encoder_states"]
    axes["encoder_states"] = {0: "batch", 1: "src_len"}
    enc_io, step_io = ["src", "src_lengths", *enc_out], ["prev", *names, "logits", *out_names]
    with quiet():
        torch.onnx.export(
            encoder, (src, lengths), str(folder / "encoder.onnx"), dynamo=False, opset_version=OPSET,
            input_names=enc_io[:2], output_names=enc_out, dynamic_axes={k: axes[k] for k in enc_io},
        )  # fmt: skip
        torch.onnx.export(
            step, (prev, *state.values()), str(folder / "decoder_step.onnx"), dynamo=False,
            opset_version=OPSET, input_names=["prev", *names], output_names=["logits", *out_names],
            dynamic_axes={k: axes[k] for k in step_io},
        )  # fmt: skip
    (folder / "topk.onnx").write_bytes(topk_graph())
    return {
        "encoder": {"file": "encoder.onnx", "inputs": ["src", "src_lengths"], "outputs": names},
        "decoder_step": {
            "file": "decoder_step.onnx",
            "inputs": ["prev", *names],
            "outputs": {"logits": "logits", **out_names},
            "static": static,
        },
        "topk": {"file": "topk.onnx"},
        "attention": "attention" in new,
    }


@torch.no_grad()
def verify(model: nn.Module, folder: Path, path: str | Path, tolerance: float = 1e-4) -> float:
    """Runs the exported graphs on onnxruntime (through OnnxTranslator's own calls) at batch sizes
    and source lengths other than the traced ones, the encoder and three decoder steps, against the
    PyTorch model; ExportError when an output differs by more than `tolerance` (relative to its
    size). Returns the largest relative difference."""
    from seq2seq.translation.onnx_decode import OnnxTranslator

    runtime = OnnxTranslator(folder, threads=1)
    worst = 0.0

    def compare(name: str, expected: Tensor, got: np.ndarray, lengths: list[int]) -> None:
        nonlocal worst
        expected = expected.float().numpy()
        same_shape = expected.shape == got.shape
        diff = float(np.abs(expected - got.astype(np.float32)).max(initial=0.0)) if same_shape else np.inf
        worst = max(worst, diff / (1.0 + float(np.abs(expected).max(initial=0.0))))
        if worst > tolerance:
            raise ExportError(
                f"{path}: the exported graphs do not reproduce the model at batch {len(lengths)}, source "
                f"length {max(lengths)} ({name}: {expected.shape} vs {got.shape}, difference {diff:.2g}); "
                "not exported"
            )

    for lengths in ([4], [9, 3, 6, 1], [2, 2, 2]):
        src, lens = example(model, lengths, seed=len(lengths))
        state = model.decoder.init_state(*model.encode(src, lens))
        onnx_state, _ = runtime.initial_state([row[:n] for row, n in zip(src.tolist(), lengths)])
        prev = torch.full((len(lengths),), BOS, dtype=torch.long)
        for _ in range(3):
            for name, value in state.items():
                compare(name, value, onnx_state[name], lengths)
            logits, state = model.decoder.step(prev, state)
            onnx_logits, onnx_state = runtime.step(prev.numpy(), onnx_state)
            allowed = [i for i in range(logits.shape[-1]) if i not in (PAD, BOS)]  # the loop bans them
            compare("logits", logits[:, allowed], onnx_logits[:, allowed], lengths)
            prev = torch.tensor(allowed)[logits[:, allowed].argmax(-1)]
    return worst


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuses (ExportError) an --out that would lose something: a file, a non-empty folder without
    overwrite, with it a folder holding anything but a previous export, a missing parent folder."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} exists and is not a folder; give a new or empty folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ExportError(f"--out {out} exists and is not empty; pass --overwrite to replace it")
        other = sorted(p.name for p in out.iterdir() if p.name not in FILES)
        if other:
            raise ExportError(
                f"--out {out} holds {other[0]}, which is not part of an export: --overwrite replaces "
                "a previous export only; choose another folder"
            )
    if not out.parent.is_dir():
        raise ExportError(f"--out {out}: the folder {out.parent} does not exist; create it first")


def one_line(error: Exception) -> str:
    """An exception as `Type: its first line`."""
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}"


def export_onnx(checkpoint: str | Path, out: str | Path, overwrite: bool = False) -> dict:
    """Exports the translation checkpoint into the folder `out` (see the module's docstring) and
    returns config.json's content; ExportError or CheckpointError when it cannot."""
    out = Path(os.path.abspath(out))  # "." and "x/.." have a name and a parent to rename in
    check_out_dir(out, overwrite)  # before the checkpoint is read
    translator = load_translator(checkpoint)
    model = exportable(translator.model, checkpoint)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # as mkdir makes it (mkdtemp: 0o700)
        try:
            graphs = export_graphs(model, tmp)
        except Exception as e:  # noqa: BLE001 - the exporter's own errors, in one line
            raise ExportError(f"{checkpoint}: torch.onnx.export failed ({one_line(e)})") from e
        config = {
            "format": FORMAT, "version": 1, "task": "translation",
            "checkpoint": str(Path(checkpoint).resolve()),
            "exporter": {"torch": torch.__version__, "opset": OPSET, "dynamo": False},
            "src_tokenizer": translator.src_tokenizer.state(),
            "tgt_tokenizer": translator.tgt_tokenizer.state(),
            "max_len": translator.max_len, "banned": [PAD, BOS], **graphs,
        }  # fmt: skip
        vocab = {"src_vocab": translator.src_vocab.to_list(), "tgt_vocab": translator.tgt_vocab.to_list()}
        (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        (tmp / "config.json").write_text(json.dumps(config, indent=1, ensure_ascii=False), encoding="utf-8")
        try:
            verify(model, tmp, checkpoint)
        except ExportError:
            raise
        except Exception as e:  # noqa: BLE001 - onnxruntime's own errors, in one line
            raise ExportError(f"{checkpoint}: onnxruntime cannot run the export ({one_line(e)})") from e
        check_out_dir(out, overwrite)  # again: something may have appeared meanwhile
        old = None
        if out.is_dir():
            old = out.with_name(tmp.name + ".old")
            os.rename(out, old)
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seqcap export", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="a translation .ckpt written by `seqcap fit`")
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="what to export to (onnx)")
    parser.add_argument("--out", required=True, help="the folder to write (new, empty, or with --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace a previous export in --out")
    parser.add_argument("--check", metavar="SRC_FILE", help="then compare with PyTorch on these sentences")
    parser.add_argument("--limit", type=int, help="--check the first N lines only")
    parser.add_argument("--beam-size", type=int, default=5, help="--check's beam size")
    parser.add_argument("--alpha", type=float, default=0.6, help="--check's GNMT length penalty")
    parser.add_argument("--batch-size", type=int, default=64, help="--check's sentences a batch")
    args = parser.parse_args(argv)
    if min(args.beam_size, args.batch_size, 1 if args.limit is None else args.limit) < 1:
        parser.error(
            f"--beam-size, --batch-size and --limit must be >= 1, got {args.beam_size}, "
            f"{args.batch_size}, {args.limit}"
        )
    try:
        if args.check and not Path(args.check).is_file():
            raise DataError(f"--check {args.check}: no such file")
        export_onnx(args.checkpoint, args.out, args.overwrite)
        print(f"exported {args.checkpoint} to {args.out}: {', '.join(FILES)}")
        if args.check:
            from seq2seq.translation.onnx_check import report

            report(
                args.checkpoint, args.out, args.check, args.limit, args.beam_size, args.alpha, args.batch_size
            )
    except (ExportError, CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
