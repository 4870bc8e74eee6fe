"""Gradient flow through time: ‖∂h_T/∂h_t‖ against the distance T − t for RNN (tanh), LSTM and GRU.

    python -m seq2seq.experiments.gradient_flow --out DIR [--length 100] [--hidden 64] [--seeds 3]
        [--batch 16] [--train-steps 0] [--train-gap 20] [--cells rnn,lstm,gru] [--forget-bias 0]

The claims tested (seeds 000, 001, 004). BPTT multiplies Jacobians of the state update
h_i = f(x_i, h_{i−1}):

    ∂h_T/∂h_t = ∏_{i=t+1..T} ∂h_i/∂h_{i−1},      tanh RNN:  ∂h_i/∂h_{i−1} = diag(1 − h_i²) W_hh,

and "when the factors are below 1 the product tends to 0 as T grows" (vanishing gradient); LSTM
and GRU "suffer less, but still suffer" from it (seed 001); truncating BPTT is the other remedy
(seed 004; see long_dependency.py).

What is measured. A model Embedding(17, H) -> one recurrent cell of seq2seq.modules.cells (the
RNN layer's impl="cells") is built at PyTorch's standard initialisation (torch.manual_seed(seed);
U(−1/√H, 1/√H) for every cell weight, N(0, 1) embeddings), optionally trained --train-steps on the
long-dependency task (gap --train-gap). The inputs x_1..x_T are the embeddings of random sequences
of that task (a symbol, T − 2 random distractors, the query marker), so "random input sequences".
The cell is then run step by step in float64 from h_0 = 0 (and c_0 = 0), every h_t is kept in the
graph (retain_grad), and one backward pass from the scalar

    L = Σ_b u_b · h_T,b,      u_b a random unit vector per sequence (seeded),

gives g_t = ∂L/∂h_t = (∂h_T/∂h_t)ᵀ u for every t at once (sequences do not interact, so each row
of g_t is that sequence's own gradient). grad_norm(d) = mean over the batch of ‖g_{T−d}‖₂, d = T − t
= 0..T; d = 0 is ‖u‖ = 1. It is the Jacobian's action on one direction, a lower bound of ‖∂h_T/∂h_t‖₂.

LSTM. The state is (h, c); h_t and c_t are separate nodes and g_t = ∂L/∂h_t holds c_t fixed (c_t is
computed before h_t, it is not a function of h_t). h_t reaches h_T only through step t+1's gates
(i, f, g, o = W_h· h_t + ...), and from there through both the h path and the cell path
c_{t+1} = f ⊙ c_t + i ⊙ g; the backward pass sums all of these paths. --lstm-cell-state adds rows
"lstm:c" with ‖∂L/∂c_t‖, the gradient carried by the cell state ("constant error carousel"), whose
per-step factor on the direct path is the forget gate f; it is the total derivative, so for t ≥ 1
it includes c_t's effect through h_t = o_t ⊙ tanh(c_t) (h_0 and c_0 are independent zeros). At
standard initialisation f ≈ σ(0) = 1/2, so both still decay geometrically; --forget-bias b adds b
to the forget-gate bias (Gers et al. 2000; Jozefowicz et al. 2015 use b = 1), which slows that decay.

GRU: the torch.nn/cuDNN variant (reset_after=True), as in long_dependency.py. Under the same seed the
untrained model is exactly the one long_dependency.py starts from (same parameter draws).

Measured at the defaults (T=100, H=64, 3 seeds x 16 sequences, at init), grad_norm at d = 1 / 99:
RNN 4.6e-1 / 2.8e-32, LSTM 1.4e-1 / 2.1e-19, GRU 5.5e-1 / 3.3e-17. All three vanish geometrically
at standard init; the plain RNN loses ~0.32 decades per step, LSTM ~0.18, GRU ~0.17. With
--forget-bias 1 the LSTM keeps 1.4e-9 at d = 99. After --train-steps 500 on gap 20, the GRU's norm
stays ≈ 0.3 out to d = 99 (it learnt to carry its state), while the RNN does not change and the
LSTM (which had not learnt the gap-20 task, see long_dependency.py) decays faster than at init.

Outputs in DIR: gradient_flow.csv (cell, seed, distance, grad_norm), gradient_flow.png (log-scale
grad_norm against distance, mean over seeds with a min–max band), config.json; a table on stdout.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from seq2seq.experiments.cli import int_at_least, prepare_out, write_config, write_csv
from seq2seq.experiments.long_dependency import LongDependencyModel, cell_list, make_batch, train_model

TABLE_DISTANCES = (1, 10, 25, 50, 99)


def state_gradient_norms(cell: nn.Module, x: Tensor, direction: Tensor) -> tuple[Tensor, Tensor | None]:
    """cell: a seq2seq.modules.cells cell; x: (B, T, I) inputs; direction: (B, H) (unit vectors u).

    Runs the cell one step at a time from a zero state, keeps every h_t (t = 0..T, h_0 the zero
    initial state), backprops L = Σ_b u_b · h_T,b once -> norms (B, T + 1) of ∂L/∂h_t indexed by
    distance d = T − t (column 0 is h_T itself), and for the LSTM the same for ∂L/∂c_t (else None).
    """
    B, T, _ = x.shape
    lstm = isinstance(cell.zeros(x[:, 0]), tuple)
    h = x.new_zeros(B, cell.hidden_size).requires_grad_(True)
    c = x.new_zeros(B, cell.hidden_size).requires_grad_(True) if lstm else None
    hs, cs = [h], [c]
    state = (h, c) if lstm else h
    for t in range(T):
        state = cell(x[:, t], state)
        h_t = state[0] if lstm else state
        h_t.retain_grad()
        hs.append(h_t)
        if lstm:
            state[1].retain_grad()
            cs.append(state[1])
    (direction * hs[-1]).sum().backward()

    def norms(states):
        grads = [torch.zeros_like(s) if s.grad is None else s.grad for s in reversed(states)]
        return torch.stack(grads, dim=1).norm(dim=-1)  # (B, T + 1), by distance

    return norms(hs), (norms(cs) if lstm else None)


def _measure(
    cell: str,
    length: int,
    hidden: int,
    batch: int,
    seed: int,
    train_steps: int = 0,
    train_gap: int = 20,
    forget_bias: float = 0.0,
) -> dict[str, list[float] | None]:
    if length < 3:
        raise ValueError(f"length must be >= 3 (symbol, >= 1 distractor, query), got {length}")
    torch.manual_seed(seed)
    model = LongDependencyModel(cell, hidden, impl="cells", forget_bias=forget_bias)
    if train_steps > 0:  # train with the fused kernel (faster), then back into the cells
        fused = LongDependencyModel(cell, hidden, impl="fused")
        fused.load_state_dict(model.state_dict())
        train_model(fused, train_gap, train_steps, seed=seed)
        model.load_state_dict(fused.state_dict())
    model = model.double()
    rnn_cell = model.rnn.cells["l0"]
    generator = torch.Generator().manual_seed(10_007 + seed)
    tokens, _ = make_batch(batch, length - 2, generator)
    direction = torch.randn(batch, hidden, generator=generator, dtype=torch.float64)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    with torch.no_grad():
        x = model.embedding(tokens)
    h_norms, c_norms = state_gradient_norms(rnn_cell, x, direction)
    return {
        "h": h_norms.mean(0).tolist(),
        "c": None if c_norms is None else c_norms.mean(0).tolist(),
    }


def measure_gradient_flow(
    cell: str,
    length: int = 100,
    hidden: int = 64,
    batch: int = 16,
    seed: int = 0,
    *,
    train_steps: int = 0,
    train_gap: int = 20,
    forget_bias: float = 0.0,
    state: str = "h",
) -> list[float]:
    """-> grad_norm by distance d = 0..length: batch mean of ‖∂(u·h_T)/∂h_{T−d}‖ (state="c": of
    ‖∂(u·h_T)/∂c_{T−d}‖, LSTM only). See the module docstring for what exactly is measured."""
    if state not in ("h", "c"):
        raise ValueError(f"state must be 'h' or 'c', got {state!r}")
    if state == "c" and cell != "lstm":
        raise ValueError("state='c' exists only for the LSTM")
    return _measure(cell, length, hidden, batch, seed, train_steps, train_gap, forget_bias)[state]


def summarize(rows: list[dict]) -> dict[str, dict[int, list[float]]]:
    """-> {cell: {distance: [grad_norm per seed]}}"""
    table: dict[str, dict[int, list[float]]] = {}
    for r in rows:
        table.setdefault(r["cell"], {}).setdefault(r["distance"], []).append(r["grad_norm"])
    return table


def format_table(rows: list[dict], length: int) -> str:
    table = summarize(rows)
    ds = [d for d in TABLE_DISTANCES if d <= length]
    last = length - 1 if length - 1 not in ds and length - 1 > 1 else None
    if last is not None:
        ds.append(last)
    lines = ["grad norm ‖∂(u·h_T)/∂h_t‖ by distance T−t (mean over seeds)"]
    lines.append(f"{'cell':<8}" + "".join(f"{'d=' + str(d):>10}" for d in ds) + f"{f'd{ds[-1]}/d1':>11}")
    for cell, by_d in table.items():
        mean = {d: sum(v) / len(v) for d, v in by_d.items()}
        ratio = mean[ds[-1]] / mean[1] if mean.get(1) else float("nan")
        lines.append(f"{cell:<8}" + "".join(f"{mean[d]:>10.2e}" for d in ds) + f"{ratio:>11.1e}")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (cell, by_d) in enumerate(summarize(rows).items()):
        ds = sorted(by_d)
        nan = float("nan")  # an underflow to 0 cannot be drawn on a log axis
        mean = [sum(by_d[d]) / len(by_d[d]) or nan for d in ds]
        lo = [min(by_d[d]) or nan for d in ds]
        hi = [max(by_d[d]) or nan for d in ds]
        ax.plot(ds, mean, color=f"C{i}", label=cell + (" (∂/∂c_t)" if cell.endswith(":c") else ""))
        ax.fill_between(ds, lo, hi, color=f"C{i}", alpha=0.2, linewidth=0)
    ax.set_yscale("log")
    ax.set_xlabel("distance T − t (steps)")
    ax.set_ylabel("‖∂(u·h_T)/∂h_t‖  (mean over batch)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m seq2seq.experiments.gradient_flow", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--length", type=int_at_least(3), default=100, help="sequence length T")
    parser.add_argument("--hidden", type=int_at_least(1), default=64)
    parser.add_argument("--seeds", type=int_at_least(1), default=3, help="seeds 0..N-1")
    parser.add_argument("--batch", type=int_at_least(1), default=16, help="sequences per seed")
    parser.add_argument(
        "--train-steps", type=int_at_least(0), default=0,
        help="train on the long-dependency task first (0: measure at initialisation)",
    )  # fmt: skip
    parser.add_argument("--train-gap", type=int_at_least(1), default=20, help="gap of the training task")
    parser.add_argument("--cells", type=cell_list, default=["rnn", "lstm", "gru"], help="comma-separated")
    parser.add_argument("--forget-bias", type=float, default=0.0, help="added to the LSTM forget-gate bias")
    parser.add_argument("--lstm-cell-state", action="store_true", help="also rows 'lstm:c': ‖∂L/∂c_t‖")
    parser.add_argument("--threads", type=int_at_least(1), default=1, help="torch CPU threads")
    parser.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    return parser


FILES = ["gradient_flow.csv", "gradient_flow.png", "config.json"]
COLUMNS = ["cell", "seed", "distance", "grad_norm"]


def main(argv: list[str] | None = None) -> list[dict]:
    from tqdm import tqdm

    parser = build_parser()
    args = parser.parse_args(argv)
    out = prepare_out(parser, args.out, FILES, args.overwrite)
    torch.set_num_threads(args.threads)
    runs = [(cell, seed) for cell in args.cells for seed in range(args.seeds)]
    start = time.perf_counter()
    rows: dict[str, list[dict]] = {}
    for cell, seed in tqdm(runs, desc="gradient_flow", unit="run", file=sys.stderr):
        result = _measure(
            cell, args.length, args.hidden, args.batch, seed,
            args.train_steps, args.train_gap, args.forget_bias,
        )  # fmt: skip
        names = [(cell, "h")] + ([("lstm:c", "c")] if cell == "lstm" and args.lstm_cell_state else [])
        for name, state in names:
            rows.setdefault(name, []).extend(
                {"cell": name, "seed": seed, "distance": d, "grad_norm": float(f"{v:.6e}")}
                for d, v in enumerate(result[state])
            )
    rows_flat = [r for rs in rows.values() for r in rs]
    seconds = time.perf_counter() - start
    write_csv(out / "gradient_flow.csv", rows_flat, COLUMNS)
    trained = f"after {args.train_steps} steps on gap {args.train_gap}" if args.train_steps else "at init"
    title = f"T={args.length}, H={args.hidden}, {args.seeds} seed(s) x {args.batch} sequences, {trained}"
    if args.forget_bias:
        title += f", LSTM forget bias +{args.forget_bias:g}"
    plot(rows_flat, out / "gradient_flow.png", title)
    write_config(out / "config.json", args, seconds)
    print(format_table(rows_flat, args.length))
    print(f"{len(runs)} runs in {seconds:.1f} s; wrote {', '.join(str(out / f) for f in FILES)}")
    return rows_flat


if __name__ == "__main__":
    main()
