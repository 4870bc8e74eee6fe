"""Decoding over any step function: greedy, beam search and sampling (seed 002 Algorithm 8-1).

A step function maps the previous tokens and a state to next-token logits and the next state:

    step_fn(tokens: (N,) long, state) -> (logits: (N, V), state)

The state is a dict (or tuple/list) of tensors with the batch in dim 0, so search can repeat it
for beams and reorder it. If the state holds "attention" (N, S) after a step, it is collected
when `return_attention=True` (seq2seq/combine.py makes one step function of an ensemble, or of a
model and a language model). Every function decodes N inputs in one batched pass; greedy and
beam search give each input the result it would get alone (sampling draws from one generator
for the whole batch). Tokens returned exclude <bos> and <eos>.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from seq2seq.topk import top_words

StepFn = Callable[[Tensor, object], tuple[Tensor, object]]


@dataclass
class Hypothesis:
    tokens: list[int]
    score: float  # sum of log-probabilities (divided by the length penalty in beam search)
    attention: Tensor | None = None  # (len(tokens), S) when requested


def map_state(fn: Callable[[Tensor], Tensor], state):
    """Applies fn to every tensor in a nested dict/tuple/list state."""
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, dict):
        return {k: map_state(fn, v) for k, v in state.items()}
    if isinstance(state, (tuple, list)):
        return type(state)(map_state(fn, v) for v in state)
    return state


def reorder_state(state, index: Tensor, static: set[int] = frozenset(), selected: dict | None = None):
    """Selects rows `index` (N',) of every tensor in the state, except those in `static` (by id).
    A tensor the state holds twice (an ensemble's "attention" is its first model's) is selected
    once, and stays one tensor. `selected`, when given, receives each new tensor under the id of
    the one it was selected from."""
    done: dict[int, Tensor] = {} if selected is None else selected

    def select(t: Tensor) -> Tensor:
        if id(t) in static:
            return t
        if id(t) not in done:
            done[id(t)] = t.index_select(0, index)
        return done[id(t)]

    return map_state(select, state)


def _tensors_by_id(state) -> dict[int, Tensor]:
    found: dict[int, Tensor] = {}
    map_state(lambda t: found.setdefault(id(t), t), state)
    return found


def _max_lengths(max_len: int | Tensor, n: int, device) -> Tensor:
    if isinstance(max_len, Tensor):
        if max_len.shape != (n,):
            raise ValueError(f"max_len must be an int or a ({n},) tensor, got {tuple(max_len.shape)}")
        return max_len.to(device=device, dtype=torch.long)
    return torch.full((n,), int(max_len), dtype=torch.long, device=device)


def _device(state) -> torch.device:
    found = []
    map_state(lambda t: found.append(t.device) or t, state)
    return found[0] if found else torch.device("cpu")


def length_penalty(length: int, alpha: float) -> float:
    """GNMT (Wu et al. 2016): lp(Y) = ((5 + |Y|) / 6)^alpha; alpha=0 gives 1."""
    return ((5.0 + length) / 6.0) ** alpha


def _one_best(step_fn, state, batch_size, bos, eos, max_len, pick, return_attention):
    """Shared loop of greedy and sampling: one hypothesis per input, `pick(logits) -> tokens`."""
    device = _device(state)
    limit = _max_lengths(max_len, batch_size, device)
    tokens = torch.full((batch_size,), bos, dtype=torch.long, device=device)
    scores = torch.zeros(batch_size, device=device)
    done = limit <= 0
    out, attn = [], []
    for t in range(int(limit.max().item()) if batch_size else 0):
        if done.all():
            break
        logits, state = step_fn(tokens, state)
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        tokens = pick(logits)
        scores = scores + torch.where(done, 0.0, log_probs.gather(1, tokens[:, None]).squeeze(1))
        out.append(torch.where(done, eos, tokens))
        if return_attention and isinstance(state, dict) and "attention" in state:
            attn.append(state["attention"])
        done = done | (tokens == eos) | (t + 1 >= limit)
    hyps = []
    seq = torch.stack(out, 1).tolist() if out else [[] for _ in range(batch_size)]
    for b in range(batch_size):
        toks = seq[b]
        n = toks.index(eos) if eos in toks else len(toks)
        a = torch.stack([w[b] for w in attn[:n]]) if n and attn else None
        if a is None and return_attention and attn:
            a = attn[0].new_zeros(0, attn[0].shape[-1])
        hyps.append(Hypothesis(toks[:n], float(scores[b]), a))
    return hyps


def greedy(
    step_fn: StepFn,
    state,
    batch_size: int,
    bos: int,
    eos: int,
    max_len: int | Tensor = 100,
    return_attention: bool = False,
) -> list[Hypothesis]:
    """The most probable next word at every step, until <eos> or max_len words."""
    return _one_best(
        step_fn, state, batch_size, bos, eos, max_len, lambda lg: lg.argmax(-1), return_attention
    )


def sample(
    step_fn: StepFn,
    state,
    batch_size: int,
    bos: int,
    eos: int,
    max_len: int | Tensor = 100,
    temperature: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
    return_attention: bool = False,
) -> list[Hypothesis]:
    """Seed 002 Algorithm 8-1: start at <bos>, draw each word from p(z_t | z_<t) until <eos>.

    `temperature` divides the logits (0 means greedy); `top_k > 0` keeps the k likeliest words.
    Scores are log-probabilities under the model itself (temperature 1).
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return greedy(step_fn, state, batch_size, bos, eos, max_len, return_attention)

    def pick(logits: Tensor) -> Tensor:
        logits = logits.float() / temperature
        if top_k > 0:
            kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    return _one_best(step_fn, state, batch_size, bos, eos, max_len, pick, return_attention)


def beam_search(
    step_fn: StepFn,
    state,
    batch_size: int,
    bos: int,
    eos: int,
    beam_size: int = 5,
    max_len: int | Tensor = 100,
    alpha: float = 0.0,
    n_best: int = 1,
    return_attention: bool = False,
) -> list[list[Hypothesis]]:
    """Beam search with the GNMT length penalty; returns n_best hypotheses per input, best first.

    Each step ranks the 2K best continuations of the K live beams: those ending in <eos> within
    the first K become finished hypotheses (score / lp(length)), the best K others live on, so
    a finished hypothesis never stops the others. An input is done once it has K finished
    hypotheses; at max_len its K best continuations are finished as they are.
    """
    if beam_size < 1 or not 1 <= n_best <= beam_size:
        raise ValueError(f"need beam_size >= 1 and 1 <= n_best <= beam_size, got {beam_size}, {n_best}")
    B, K = batch_size, beam_size
    device = _device(state)
    limit = _max_lengths(max_len, B, device)
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    active = [b for b in range(B) if limit[b] > 0]  # inputs still decoding: rows of what follows
    if len(active) < B:
        state = reorder_state(state, torch.tensor(active, dtype=torch.long, device=device))
    limit = limit[active]
    A = len(active)
    # The first step runs once an input: its K beams are still one (<bos>, the same state). Its
    # results are then repeated to K rows an input, and so is the state.
    tokens = torch.full((A,), bos, dtype=torch.long, device=device)
    beam_scores = torch.full((A, K), float("-inf"), device=device)
    beam_scores[:, 0] = 0.0  # all beams start identical: keep one alive
    history = torch.zeros(A * K, 0, dtype=torch.long, device=device)
    attn_history = None

    for t in range(int(limit.max().item()) if A else 0):
        logits, state = step_fn(tokens, state)
        log_probs = torch.log_softmax(logits.float(), dim=-1)  # (A*K, V); (A, V) at t = 0
        # only a beam's own 2K best words can be among its input's 2K best continuations: rank
        # those, (A, K*2K), instead of all K*V (same scores, a third of the time at 8k words)
        per_beam = min(2 * K, log_probs.shape[-1])
        best_log_probs, best_words = top_words(log_probs, per_beam)  # (A*K or A, per_beam)
        if t == 0:
            beams = torch.arange(A, device=device).repeat_interleave(K)
            best_log_probs, best_words = best_log_probs[beams], best_words[beams]
            state = reorder_state(state, beams)
            # A tensor the step function passes through untouched from now on (the same object,
            # e.g. the encoder memory) holds K identical rows per input: reordering beams within
            # an input cannot change it. `initial` keeps the tensors alive, so their ids cannot be
            # reused by new ones.
            initial = _tensors_by_id(state)
        candidates = (beam_scores.view(-1, 1) + best_log_probs).view(A, K * per_beam)
        top_scores, top_index = candidates.topk(min(2 * K, K * per_beam), dim=1)  # (A, 2K)
        top_beam, top_token = top_index // per_beam, best_words.view(A, K * per_beam).gather(1, top_index)
        base = (torch.arange(A, device=device) * K)[:, None]
        step_attn = state.get("attention") if return_attention and isinstance(state, dict) else None
        if step_attn is not None:
            step_attn = step_attn[:, None]
            attn_history = step_attn if attn_history is None else torch.cat([attn_history, step_attn], 1)

        # finish: <eos> among the K best, or every one of the K best at the last step
        is_eos = top_token == eos
        last = t + 1 >= limit
        finish = (is_eos | last[:, None]) & torch.isfinite(top_scores)
        finish[:, K:] = False
        if finish.any():  # Python lists from here: one conversion each, not an op per element
            where = finish.nonzero().tolist()
            rows = (base + top_beam).tolist()
            ended = [rows[a][j] for a, j in where]
            hist = history.index_select(0, torch.tensor(ended, device=device)).tolist()
            top_s, top_t = top_scores.tolist(), top_token.tolist()
            lp = length_penalty(t + 1, alpha)
            for (a, j), row, toks in zip(where, ended, hist):
                if top_t[a][j] != eos:
                    toks.append(top_t[a][j])
                att = attn_history[row][: len(toks)] if attn_history is not None else None
                finished[active[a]].append(Hypothesis(toks, top_s[a][j] / lp, att))
        at_limit = last.tolist()
        still = [a for a in range(A) if len(finished[active[a]]) < K and not at_limit[a]]
        if not still:
            break

        # live on: the K best continuations that do not end in <eos> (at most K of 2K do);
        # inputs that are done leave the batch, so later steps only compute what is needed
        keep = torch.sort(is_eos.int(), dim=1, stable=True).indices[:, :K]
        static = initial.keys() & _tensors_by_id(state).keys()
        leaving = len(still) < A
        if leaving:
            sel = torch.tensor(still, device=device, dtype=torch.long)
            keep, top_scores, top_beam, top_token = keep[sel], top_scores[sel], top_beam[sel], top_token[sel]
            base, limit = base[sel], limit[sel]
            active = [active[a] for a in still]
            A = len(still)
        beam_scores = top_scores.gather(1, keep)
        rows = (base + top_beam.gather(1, keep)).view(-1)
        tokens = top_token.gather(1, keep).view(-1)
        history = torch.cat([history.index_select(0, rows), tokens[:, None]], 1)
        if attn_history is not None:
            attn_history = attn_history.index_select(0, rows)
        if leaving:  # every tensor loses the rows of the inputs that are done; the static ones
            # stay static (K identical rows an input): only their new selves are recognised
            selected: dict[int, Tensor] = {}
            state = reorder_state(state, rows, selected=selected)
            initial = {id(selected[i]): selected[i] for i in static}
        else:
            state = reorder_state(state, rows, static)

    results = []
    for hyps in finished:
        if not hyps:  # max_len 0: the empty hypothesis, as greedy gives
            hyps.append(Hypothesis([], 0.0))
        hyps.sort(key=lambda h: h.score, reverse=True)
        results.append(hyps[:n_best])
    return results


@dataclass(frozen=True)
class SearchOptions:
    """How to decode, as one object (YAML `search:` under a model's init_args; the predictors'
    keyword arguments): `method` greedy, beam (`beam_size`, length penalty `alpha`, `n_best`
    hypotheses) or sample (`temperature`, `top_k`: 0 keeps every word); `max_len` words at most
    (None: the model's own limit)."""

    method: Literal["greedy", "beam", "sample"] = "beam"
    beam_size: int = 5
    alpha: float = 0.0
    n_best: int = 1
    max_len: int | None = None
    temperature: float = 1.0
    top_k: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("greedy", "beam", "sample"):
            raise ValueError(f"search.method must be 'greedy', 'beam' or 'sample', got {self.method!r}")
        if self.beam_size < 1 or self.n_best < 1:
            raise ValueError(f"search.beam_size and n_best must be >= 1, got {self.beam_size}, {self.n_best}")
        if self.max_len is not None and self.max_len < 1:
            raise ValueError(f"search.max_len must be >= 1 or None, got {self.max_len}")
        if self.temperature < 0 or self.top_k < 0:
            raise ValueError(
                f"search.temperature and top_k must be >= 0, got {self.temperature}, {self.top_k}"
            )


def decode(
    step_fn: StepFn,
    state,
    batch_size: int,
    *,
    bos: int,
    eos: int,
    search: SearchOptions,
    max_len: int | Tensor,
    generator: torch.Generator | None = None,
    return_attention: bool = False,
    banned: tuple[int, ...] = (),
) -> list[list[Hypothesis]]:
    """One entry for the three methods: per input a list of hypotheses (n_best for "beam", one
    for "greedy" and "sample"). `max_len` is the limit the caller resolved (search.max_len or the
    model's own: an int, or (B,) per input). `banned` ids (<pad>, <bos>: never a training target)
    get -inf logits, so no method outputs them and attention rows stay one per output word."""
    if banned:
        step_fn = _banning(step_fn, banned)
    s = search
    if s.method == "beam":
        return beam_search(
            step_fn, state, batch_size, bos, eos, beam_size=s.beam_size, max_len=max_len, alpha=s.alpha,
            n_best=s.n_best, return_attention=return_attention,
        )  # fmt: skip
    if s.method == "greedy":
        hyps = greedy(
            step_fn, state, batch_size, bos, eos, max_len=max_len, return_attention=return_attention
        )
    else:
        hyps = sample(
            step_fn, state, batch_size, bos, eos, max_len=max_len, temperature=s.temperature, top_k=s.top_k,
            generator=generator, return_attention=return_attention,
        )  # fmt: skip
    return [[h] for h in hyps]


def _banning(step_fn: StepFn, banned: tuple[int, ...]) -> StepFn:
    """step_fn with the logits of `banned` ids at -inf (the index tensor made once, on first use).
    Without autograd the fill is in place: the step's logits are its own new tensor (the output
    layer's product), and a copy of (rows, V) each step cost ~5% of batched beam decoding."""
    index: list[Tensor] = []

    def step(prev: Tensor, state):
        logits, state = step_fn(prev, state)
        if not index:
            index.append(torch.tensor(banned, device=logits.device))
        if torch.is_grad_enabled() and logits.requires_grad:
            return logits.index_fill(-1, index[0], float("-inf")), state
        return logits.index_fill_(-1, index[0], float("-inf")), state

    return step
