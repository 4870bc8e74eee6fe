"""Throughput benchmark: `python -m seq2seq.bench [--steps 100] [--data DIR]`.

Trains the gettext_attention model (BiLSTM 256, embeddings 256, 8k-word vocabularies, batches of
64 sentences) for N steps and prints target tokens/s and peak memory, then decodes the test set
with beam 5 and prints sentences/s. Numbers, not a test: run it on an idle machine.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
import torch.nn.functional as F

from data.core.vocab import PAD
from data.datamodules.translation import ParallelTextDataModule
from seq2seq.modules.rnn import RecurrentOptions
from seq2seq.search import SearchOptions
from seq2seq.training.checkpoint import resolve_device
from seq2seq.translation.network import Seq2Seq, pad_batch


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m seq2seq.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="data/corpora/gettext-en-de")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--decode-sentences", type=int, default=500, help="0: the whole test set")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--context", default="attention", choices=["attention", "fixed"])
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    torch.manual_seed(0)

    dm = ParallelTextDataModule(args.data, max_vocab_size=8000, max_len=50, batch_size=64)
    dm.setup("fit")
    rnn = RecurrentOptions(embed_dim=256, hidden_size=256, dropout=0.2)
    model = Seq2Seq(dm.src_vocab_size, dm.tgt_vocab_size, rnn, context=args.context).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = dm.train_dataloader()
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) >= args.steps + args.warmup:
            break
    print(
        f"device {device}, threads {torch.get_num_threads()}, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters"
    )

    model.train()
    tokens, start = 0, None
    for i, batch in enumerate(batches):
        if i == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start, tokens = time.perf_counter(), 0
        b = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        logits = model(b["src"], b["src_lengths"], b["tgt_in"])
        loss = F.cross_entropy(logits.flatten(0, 1), b["tgt_out"].flatten(), ignore_index=PAD)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        tokens += int((b["tgt_out"] != PAD).sum())
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    print(
        f"train: {tokens / elapsed:,.0f} target tokens/s over {args.steps} steps of 64 sentences "
        f"({elapsed / args.steps * 1000:.0f} ms/step), peak memory {peak_memory_mb(device):,.0f} MB"
    )

    model.eval()
    test = dm.datasets["test"]
    n = len(test) if args.decode_sentences == 0 else min(args.decode_sentences, len(test))
    order = sorted(range(n), key=lambda i: len(test.src_ids[i]))
    start = time.perf_counter()
    for k in range(0, n, 64):
        src, lengths = pad_batch([test.src_ids[i] for i in order[k : k + 64]])
        model.translate(
            src.to(device), lengths.to(device), SearchOptions(beam_size=args.beam_size, alpha=0.6)
        )
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    print(
        f"decode: {n / elapsed:,.1f} sentences/s with beam {args.beam_size} "
        f"({n} test sentences, batches of 64)"
    )


if __name__ == "__main__":
    main()
