"""Greedy, beam search and sampling: known distributions, batch invariance, limits, attention."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from data.core.vocab import BOS, EOS, PAD
from seq2seq import search, topk
from seq2seq.modules.rnn import RecurrentOptions
from seq2seq.search import SearchOptions
from seq2seq.translation.network import Seq2Seq, pad_batch

TOL = 1e-5
SRC_LENGTHS = (5, 3, 7, 2)
CONFIGS = [("fixed", "bahdanau"), ("attention", "bahdanau"), ("attention", "luong_general")]
ATTENTION_CONFIGS = CONFIGS[1:]


# -- helpers ------------------------------------------------------------------------------------
pytestmark = pytest.mark.usefixtures("one_thread_per_module")  # conftest: torch on one thread


@functools.cache
def make_model(context: str, attention: str) -> Seq2Seq:
    """A tiny random model (seed 0). Its output layer is scaled up so the distributions are
    peaked enough that some hypotheses end in <eos> before max_len and others do not."""
    torch.manual_seed(0)
    model = Seq2Seq(
        15, 15, rnn=RecurrentOptions(embed_dim=8, hidden_size=16), context=context, attention=attention
    )
    with torch.no_grad():
        model.decoder.output.weight.mul_(8.0)
    return model.eval()


@functools.cache
def source_batch():
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(4, 15, (n,), generator=g).tolist() for n in SRC_LENGTHS]
    return pad_batch(seqs)  # (4, 7), lengths (4,)


def alone(b: int):
    src, lengths = source_batch()
    n = int(lengths[b])
    return src[b : b + 1, :n], lengths[b : b + 1]


def default_limit(b: int) -> int:
    return 2 * SRC_LENGTHS[b] + 10


def assert_same_hyps(got, expected, tol=TOL):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.tokens == e.tokens
        assert g.score == pytest.approx(e.score, abs=tol)


@torch.no_grad()
def teacher_forced(model, b: int, tokens: list[int], ends_with_eos: bool, padded: bool = False):
    """Per-step log-probabilities of tokens (+ <eos>) for sentence b, and the attention (T, S).
    Seq2Seq.translate never outputs <pad> or <bos>: the distribution is over the other ids."""
    src, lengths = source_batch()
    if padded:
        src, lengths = src[b : b + 1], lengths[b : b + 1]
    else:
        src, lengths = alone(b)
    targets = tokens + ([EOS] if ends_with_eos else [])
    tgt_in = torch.tensor([[BOS] + targets[:-1]])
    logits, attention = model(src, lengths, tgt_in, return_attention=True)
    log_probs = torch.log_softmax(logits[0].index_fill(-1, torch.tensor([PAD, BOS]), float("-inf")), -1)
    picked = log_probs.gather(1, torch.tensor(targets)[:, None]).squeeze(1)
    return log_probs, picked, (attention[0] if attention is not None else None)


def table_step(table: torch.Tensor):
    """A step function whose logits depend only on the previous token: table[prev]."""

    def step(tokens, state):
        assert state["x"].shape == (tokens.shape[0], 1)  # the state follows the beams
        return table[tokens], state

    return step


def script_step(scripts: list[list[int]], peak: float, vocab: int = 10):
    """Sentence i (state "sid") wants scripts[i] then <eos>; the wanted token gets logit `peak`,
    every other token 0. The state carries the sentence id and the step count."""
    width = max(len(s) for s in scripts) + 1
    table = torch.full((len(scripts), width), EOS, dtype=torch.long)
    for i, s in enumerate(scripts):
        table[i, : len(s)] = torch.tensor(s, dtype=torch.long)

    def step(tokens, state):
        sid, t = state["sid"][:, 0], state["t"][:, 0]
        want = table[sid, t.clamp(max=width - 1)]
        logits = torch.zeros(tokens.shape[0], vocab)
        logits[torch.arange(tokens.shape[0]), want] = peak
        return logits, {"sid": state["sid"], "t": state["t"] + 1}

    def init(ids):
        ids = torch.tensor(ids)[:, None]
        return {"sid": ids, "t": torch.zeros_like(ids)}

    return step, init


# -- a hand-made distribution where greedy is suboptimal -----------------------------------------
A, Bt = 4, 5  # two word ids
PROBS = {  # p(next | prev); the rest of each row's mass is spread over the other ids
    BOS: {A: 0.55, Bt: 0.44},
    A: {EOS: 0.40, A: 0.30, Bt: 0.29},
    Bt: {EOS: 0.95},
}


def greedy_trap_table(vocab: int = 6) -> torch.Tensor:
    probs = torch.full((vocab, vocab), 0.0)
    for prev in range(vocab):
        row = PROBS.get(prev, {EOS: 0.9})
        rest = (1.0 - sum(row.values())) / (vocab - len(row))
        for tok in range(vocab):
            probs[prev, tok] = row.get(tok, rest)
    return probs.log()


def test_greedy_is_suboptimal_and_beam_finds_the_better_sequence():
    table = greedy_trap_table()
    lp = torch.log_softmax(table, -1)
    state = {"x": torch.zeros(1, 1)}
    step = table_step(table)

    (g,) = search.greedy(step, state, 1, BOS, EOS, max_len=10)
    assert g.tokens == [A]
    assert g.score == pytest.approx(float(lp[BOS, A] + lp[A, EOS]), abs=TOL)
    assert g.score == pytest.approx(math.log(0.55 * 0.40), abs=1e-5)

    (beam,) = search.beam_search(step, state, 1, BOS, EOS, beam_size=2, max_len=10, n_best=2)
    best, second = beam
    assert best.tokens == [Bt]
    assert best.score == pytest.approx(float(lp[BOS, Bt] + lp[Bt, EOS]), abs=TOL)
    assert best.score == pytest.approx(math.log(0.44 * 0.95), abs=1e-5)
    assert second.tokens == [A] and second.score == pytest.approx(g.score, abs=TOL)
    assert best.score > g.score


def test_beam_score_is_divided_by_the_length_penalty():
    table = greedy_trap_table()
    lp = torch.log_softmax(table, -1)
    (beam,) = search.beam_search(
        table_step(table), {"x": torch.zeros(1, 1)}, 1, BOS, EOS, beam_size=2, max_len=10,
        alpha=0.7,
    )  # fmt: skip
    # both finished hypotheses have one word + <eos>: lp(2) = (7/6)^0.7
    assert beam[0].tokens == [Bt]
    expected = float(lp[BOS, Bt] + lp[Bt, EOS]) / (7 / 6) ** 0.7
    assert beam[0].score == pytest.approx(expected, abs=TOL)


def test_length_penalty():
    assert search.length_penalty(7, 0.0) == 1.0
    assert search.length_penalty(1, 1.0) == pytest.approx(1.0)
    assert search.length_penalty(7, 1.0) == pytest.approx(2.0)
    assert search.length_penalty(7, 0.5) == pytest.approx(math.sqrt(2.0))


def test_reorder_state_handles_nested_states():
    state = {"h": torch.arange(3)[:, None], "pair": (torch.arange(3), [torch.arange(3) * 10]), "n": 5}
    out = search.reorder_state(state, torch.tensor([2, 2, 0]))
    assert out["h"][:, 0].tolist() == [2, 2, 0]
    assert out["pair"][0].tolist() == [2, 2, 0] and out["pair"][1][0].tolist() == [20, 20, 0]
    assert isinstance(out["pair"], tuple) and isinstance(out["pair"][1], list) and out["n"] == 5


def test_beam_search_rejects_bad_sizes():
    state = {"x": torch.zeros(1, 1)}
    step = table_step(greedy_trap_table())
    with pytest.raises(ValueError):
        search.beam_search(step, state, 1, BOS, EOS, beam_size=2, n_best=3)
    with pytest.raises(ValueError):
        search.beam_search(step, state, 1, BOS, EOS, beam_size=0)
    with pytest.raises(ValueError):
        search.greedy(step, state, 1, BOS, EOS, max_len=torch.tensor([3, 4]))


# -- a finished hypothesis does not stop the others ----------------------------------------------
SCRIPTS = [[], [4, 5, 6, 7, 8], [9]]  # <eos> at step 1, at step 6 (5 words), at step 2


def _peak_logprob(peak: float, vocab: int = 10) -> float:
    return peak - math.log(math.exp(peak) + vocab - 1)


def test_finished_hypothesis_does_not_stop_the_others_greedy():
    step, init = script_step(SCRIPTS, peak=5.0)
    hyps = search.greedy(step, init([0, 1, 2]), 3, BOS, EOS, max_len=20)
    for h, s in zip(hyps, SCRIPTS):
        assert h.tokens == s
        assert h.score == pytest.approx((len(s) + 1) * _peak_logprob(5.0), abs=TOL)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_finished_hypothesis_does_not_stop_the_others_beam(beam_size):
    step, init = script_step(SCRIPTS, peak=5.0)
    results = search.beam_search(step, init([0, 1, 2]), 3, BOS, EOS, beam_size, max_len=20)
    for hyps, s in zip(results, SCRIPTS):
        assert hyps[0].tokens == s
        assert hyps[0].score == pytest.approx((len(s) + 1) * _peak_logprob(5.0), abs=TOL)
    # the long sentence alone gives the same result
    (single,) = search.beam_search(step, init([1]), 1, BOS, EOS, beam_size, max_len=20)
    assert_same_hyps(single[:1], results[1][:1])


def test_finished_hypothesis_does_not_stop_the_others_sample():
    step, init = script_step(SCRIPTS, peak=40.0)  # all but deterministic
    gen = torch.Generator().manual_seed(0)
    hyps = search.sample(step, init([0, 1, 2]), 3, BOS, EOS, max_len=20, generator=gen)
    assert [h.tokens for h in hyps] == SCRIPTS


# -- max_len -------------------------------------------------------------------------------------
def never_eos_table(vocab: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(4)
    table = torch.randn(vocab, vocab, generator=g)
    table[:, EOS] = -1e9
    return table


@pytest.mark.parametrize("max_len", [5, torch.tensor([1, 4, 2, 6])])
def test_max_len_is_respected_without_eos(max_len):
    step = table_step(never_eos_table())
    state = {"x": torch.zeros(4, 1)}
    limits = max_len.tolist() if isinstance(max_len, torch.Tensor) else [max_len] * 4
    for h, n in zip(search.greedy(step, state, 4, BOS, EOS, max_len), limits):
        assert len(h.tokens) == n
    gen = torch.Generator().manual_seed(0)
    for h, n in zip(search.sample(step, state, 4, BOS, EOS, max_len, generator=gen), limits):
        assert len(h.tokens) == n
    results = search.beam_search(step, state, 4, BOS, EOS, 3, max_len, alpha=0.6, n_best=3)
    for hyps, n in zip(results, limits):
        assert len(hyps) == 3
        assert all(len(h.tokens) == n for h in hyps)


@pytest.mark.parametrize("config", CONFIGS, ids="-".join)
def test_max_len_is_respected_by_the_model(config):
    model = make_model(*config)
    src, lengths = source_batch()
    per_sentence = torch.tensor([3, 1, 6, 2])
    for method in ("beam", "greedy", "sample"):
        for limit in (3, None):
            out = model.translate(
                src, lengths, SearchOptions(method=method, beam_size=4, n_best=4, max_len=limit)
            )
            for b, hyps in enumerate(out):
                bound = limit if limit is not None else default_limit(b)
                assert hyps and all(len(h.tokens) <= bound for h in hyps)
    with torch.no_grad():
        state = model.decoder.init_state(*model.encode(src, lengths))
        beams = search.beam_search(model.decoder.step, state, 4, BOS, EOS, 3, per_sentence, n_best=3)
        greedy = search.greedy(model.decoder.step, state, 4, BOS, EOS, per_sentence)
    for b, n in enumerate(per_sentence.tolist()):
        assert len(beams[b]) == 3 and all(len(h.tokens) <= n for h in beams[b])
        assert len(greedy[b].tokens) <= n


# -- batched equals alone ------------------------------------------------------------------------
@pytest.mark.parametrize("max_len", [12, None])
@pytest.mark.parametrize("config", CONFIGS, ids="-".join)
def test_batched_beam_search_equals_alone(config, max_len):
    model = make_model(*config)
    src, lengths = source_batch()
    options = SearchOptions(method="beam", beam_size=4, n_best=3, alpha=0.6, max_len=max_len)
    batched = model.translate(src, lengths, options)
    assert len(batched) == 4
    for b in range(4):
        single = model.translate(*alone(b), options)
        assert len(single) == 1 and len(batched[b]) == 3
        assert_same_hyps(batched[b], single[0])


@pytest.mark.parametrize("max_len", [12, None])
@pytest.mark.parametrize("config", CONFIGS, ids="-".join)
def test_batched_greedy_equals_alone(config, max_len):
    model = make_model(*config)
    src, lengths = source_batch()
    batched = model.translate(src, lengths, SearchOptions(method="greedy", max_len=max_len))
    for b in range(4):
        single = model.translate(*alone(b), SearchOptions(method="greedy", max_len=max_len))
        assert_same_hyps(batched[b], single[0])


def test_the_model_fixture_is_not_trivial():
    """Some hypotheses end in <eos>, some run into max_len: both paths are exercised above."""
    ended, cut = 0, 0
    src, lengths = source_batch()
    for config in CONFIGS:
        for hyps in make_model(*config).translate(
            src, lengths, SearchOptions(beam_size=4, n_best=3, max_len=12)
        ):
            for h in hyps:
                ended += len(h.tokens) < 12
                cut += len(h.tokens) == 12
    assert ended > 0 and cut > 0


# -- scores are the model's log-probabilities ----------------------------------------------------
@pytest.mark.parametrize("config", CONFIGS, ids="-".join)
def test_greedy_picks_the_argmax_and_scores_its_log_probability(config):
    model = make_model(*config)
    src, lengths = source_batch()
    for b, (h,) in enumerate(model.translate(src, lengths, SearchOptions(method="greedy"))):
        ends = len(h.tokens) < default_limit(b)
        log_probs, picked, _ = teacher_forced(model, b, h.tokens, ends)
        targets = h.tokens + ([EOS] if ends else [])
        assert log_probs.argmax(-1).tolist() == targets
        assert h.score == pytest.approx(float(picked.sum()), abs=1e-4)


@pytest.mark.parametrize("alpha", [0.0, 0.6])
@pytest.mark.parametrize("config", CONFIGS, ids="-".join)
def test_beam_scores_are_normalised_log_probabilities(config, alpha):
    model = make_model(*config)
    src, lengths = source_batch()
    out = model.translate(src, lengths, SearchOptions(beam_size=4, alpha=alpha, n_best=4, max_len=12))
    for b, hyps in enumerate(out):
        for h in hyps:
            ends = len(h.tokens) < 12
            _, picked, _ = teacher_forced(model, b, h.tokens, ends)
            lp = search.length_penalty(len(picked), alpha)
            assert h.score == pytest.approx(float(picked.sum()) / lp, abs=1e-4)


@pytest.mark.parametrize("config", CONFIGS, ids="-".join)
def test_beam_size_one_equals_greedy(config):
    model = make_model(*config)
    src, lengths = source_batch()
    for max_len in (12, None):
        beam = model.translate(src, lengths, SearchOptions(beam_size=1, alpha=0.0, n_best=1, max_len=max_len))
        greedy = model.translate(src, lengths, SearchOptions(method="greedy", max_len=max_len))
        for bh, gh in zip(beam, greedy):
            assert_same_hyps(bh, gh)


@pytest.mark.parametrize("config", CONFIGS, ids="-".join)
def test_n_best_sorted_and_distinct(config):
    model = make_model(*config)
    src, lengths = source_batch()
    for alpha in (0.0, 0.6):
        for hyps in model.translate(src, lengths, SearchOptions(beam_size=4, alpha=alpha, n_best=4)):
            assert len(hyps) == 4
            scores = [h.score for h in hyps]
            assert scores == sorted(scores, reverse=True)
            assert len({tuple(h.tokens) for h in hyps}) == 4
            assert all(EOS not in h.tokens for h in hyps)


# -- sampling ------------------------------------------------------------------------------------
@pytest.mark.parametrize("config", CONFIGS[:2], ids="-".join)
def test_sample_temperature_zero_and_top_k_one_equal_greedy(config):
    model = make_model(*config)
    src, lengths = source_batch()
    greedy = model.translate(src, lengths, SearchOptions(method="greedy"))
    cold = model.translate(src, lengths, SearchOptions(method="sample", temperature=0.0))
    gen = torch.Generator().manual_seed(0)
    top1 = model.translate(src, lengths, SearchOptions(method="sample", top_k=1), generator=gen)
    for g, c, t in zip(greedy, cold, top1):
        assert_same_hyps(c, g)
        assert_same_hyps(t, g)


def test_sample_rejects_negative_temperature():
    with pytest.raises(ValueError):
        search.sample(table_step(greedy_trap_table()), {"x": torch.zeros(1, 1)}, 1, BOS, EOS,
                      temperature=-1.0)  # fmt: skip


def test_sample_generator_seed_controls_the_draws():
    model = make_model("attention", "bahdanau")
    src, lengths = source_batch()

    def draw(seed, global_seed):
        torch.manual_seed(global_seed)  # must not matter: the generator decides
        gen = torch.Generator().manual_seed(seed)
        out = model.translate(src, lengths, SearchOptions(method="sample", max_len=8), generator=gen)
        return [(tuple(h.tokens), h.score) for (h,) in out]

    assert draw(7, 0) == draw(7, 123)
    draws = {tuple(t for t, _ in draw(seed, 0)) for seed in range(5)}
    assert len(draws) > 1


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_sample_scores_are_log_probabilities_at_temperature_one(temperature):
    model = make_model("attention", "luong_general")
    src, lengths = source_batch()
    gen = torch.Generator().manual_seed(1)
    out = model.translate(
        src, lengths, SearchOptions(method="sample", temperature=temperature), generator=gen
    )
    for b, (h,) in enumerate(out):
        _, picked, _ = teacher_forced(model, b, h.tokens, len(h.tokens) < default_limit(b))
        assert h.score == pytest.approx(float(picked.sum()), abs=1e-4)


FIRST_LOGITS = torch.tensor([-1.0, 0.5, 0.0, 1.0, 0.2, -0.5, 1.5, 0.3])


@pytest.mark.parametrize(
    "temperature, top_k",
    [(1.0, 0), (2.0, 0), (1.0, 3)],
)
def test_sample_frequencies_match_the_distribution(temperature, top_k):
    n, vocab = 4000, FIRST_LOGITS.shape[0]
    table = FIRST_LOGITS.expand(vocab, vocab).clone()
    gen = torch.Generator().manual_seed(0)
    hyps = search.sample(
        table_step(table), {"x": torch.zeros(n, 1)}, n, BOS, EOS, max_len=1,
        temperature=temperature, top_k=top_k, generator=gen,
    )  # fmt: skip
    first = torch.tensor([h.tokens[0] if h.tokens else EOS for h in hyps])
    freq = torch.bincount(first, minlength=vocab).float() / n
    logits = FIRST_LOGITS / temperature
    if top_k:
        kth = logits.topk(top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    expected = torch.softmax(logits, -1)
    assert (freq - expected).abs().max().item() < 0.03
    if top_k:
        assert (freq[expected == 0] == 0).all()
    # each score is the model's log-probability of the drawn word
    log_p = torch.log_softmax(FIRST_LOGITS, -1)
    for h, tok in zip(hyps[:50], first[:50].tolist()):
        assert h.score == pytest.approx(float(log_p[tok]), abs=TOL)


# -- attention -----------------------------------------------------------------------------------
def _check_attention(model, b, h, limit, S=7):
    n = len(h.tokens)
    if n == 0:
        return
    assert h.attention is not None and h.attention.shape == (n, S)
    torch.testing.assert_close(h.attention.sum(-1), torch.ones(n), atol=1e-5, rtol=0)
    assert (h.attention[:, SRC_LENGTHS[b] :] == 0.0).all()
    _, _, tf_attention = teacher_forced(model, b, h.tokens, n < limit, padded=True)
    torch.testing.assert_close(h.attention, tf_attention[:n], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("config", ATTENTION_CONFIGS, ids="-".join)
def test_return_attention(config):
    model = make_model(*config)
    src, lengths = source_batch()
    greedy = model.translate(src, lengths, SearchOptions(method="greedy", max_len=12), return_attention=True)
    beam = model.translate(
        src, lengths, SearchOptions(beam_size=4, n_best=3, max_len=12), return_attention=True
    )
    gen = torch.Generator().manual_seed(0)
    sampled = model.translate(
        src, lengths, SearchOptions(method="sample", max_len=12), return_attention=True, generator=gen
    )
    checked = 0
    for b in range(4):
        for h in greedy[b] + beam[b] + sampled[b]:
            _check_attention(model, b, h, 12)
            checked += bool(h.tokens)
    assert checked >= 6
    # returning attention changes nothing else
    plain = model.translate(src, lengths, SearchOptions(beam_size=4, n_best=3, max_len=12))
    for with_attention, without in zip(beam, plain):
        assert_same_hyps(with_attention, without)


@pytest.mark.parametrize("config", ATTENTION_CONFIGS, ids="-".join)
def test_batched_attention_equals_alone(config):
    model = make_model(*config)
    src, lengths = source_batch()
    batched = model.translate(
        src, lengths, SearchOptions(beam_size=4, n_best=2, max_len=12), return_attention=True
    )
    for b in range(4):
        options = SearchOptions(beam_size=4, n_best=2, max_len=12)
        (single,) = model.translate(*alone(b), options, return_attention=True)
        n = SRC_LENGTHS[b]
        for hb, hs in zip(batched[b], single):
            assert hb.tokens == hs.tokens
            if hb.tokens:
                assert hs.attention.shape == (len(hs.tokens), n)
                torch.testing.assert_close(hb.attention[:, :n], hs.attention, atol=1e-5, rtol=1e-4)


def test_fixed_context_has_no_attention():
    model = make_model("fixed", "bahdanau")
    src, lengths = source_batch()
    for method in ("greedy", "beam"):
        for hyps in model.translate(
            src, lengths, SearchOptions(method=method, max_len=5), return_attention=True
        ):
            assert all(h.attention is None for h in hyps)


@pytest.mark.parametrize("method", ["greedy", "beam", "sample"])
def test_banned_ids_are_never_output(method):
    """A step function that likes <pad> (0) and <bos> best: with banned=(0, 2) no method gives
    them, and greedy then picks the best of the rest; without, greedy outputs <pad>."""
    V = 6
    preference = torch.tensor([5.0, 0.0, 4.0, -1.0, 1.0, 0.5])  # pad, unk, bos, eos, w4, w5

    def step(prev, state):
        return preference.expand(prev.shape[0], V).clone(), state

    def tokens(banned):
        hyps = search.decode(
            step, {}, 3, bos=BOS, eos=EOS, search=SearchOptions(method=method, beam_size=2), max_len=4,
            banned=banned, generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        return [h[0].tokens for h in hyps]

    out = tokens((0, 2))
    assert all(t not in (0, 2) for seq in out for t in seq)
    if method != "sample":
        assert out == [[4, 4, 4, 4]] * 3
        assert tokens(())[0] == [0, 0, 0, 0]


def test_seq2seq_translate_never_outputs_pad_or_bos():
    torch.manual_seed(0)
    model = Seq2Seq(9, 9, rnn=RecurrentOptions(embed_dim=4, hidden_size=4)).eval()
    with torch.no_grad():
        model.decoder.output.bias.copy_(torch.tensor([9.0, 0, 9.0, -9.0, 0, 0, 0, 0, 0]))
    src, lengths = pad_batch([[4, 5, 6], [7, 8]])
    for method in ("greedy", "beam"):
        hyps = model.translate(src, lengths, SearchOptions(method=method, beam_size=3, max_len=5))
        assert all(t not in (0, 2) for h in hyps for t in h[0].tokens), method


# -- the two-pass top-k of beam search (seq2seq/topk.py; its own tests in test_topk.py) -------------
def test_beam_search_with_two_pass_top_k_equals_one_topk(monkeypatch):
    """A model over 640 words with 8-word blocks: the two passes run (80 blocks >= 4 x 2K) and the
    hypotheses are those of torch's topk."""
    torch.manual_seed(0)
    model = Seq2Seq(15, 640, rnn=RecurrentOptions(embed_dim=8, hidden_size=16), attention="bahdanau").eval()
    with torch.no_grad():
        model.decoder.output.weight.mul_(8.0)
    src, lengths = source_batch()
    src, lengths = src.repeat(3, 1), lengths.repeat(3)  # 12 inputs x 5 beams: 60 rows
    options = SearchOptions(method="beam", beam_size=5, n_best=3, alpha=0.6, max_len=12)
    used = []
    original = search.top_words
    monkeypatch.setattr(topk, "TOPK_BLOCK", 8)
    monkeypatch.setattr(search, "top_words", lambda x, k: used.append(x.shape) or original(x, k))
    two_pass = model.translate(src, lengths, options)
    monkeypatch.setattr(search, "top_words", lambda x, k: x.topk(k, dim=-1))
    one_topk = model.translate(src, lengths, options)
    assert used[:2] == [(12, 640), (60, 640)]  # the first step once an input, then 5 beams each
    for got, expected in zip(two_pass, one_topk):
        assert_same_hyps(got, expected, tol=0.0)


@torch.no_grad()
def test_beam_search_runs_the_first_step_once_an_input():
    """The K beams of an input are one until the first step: it runs on one row an input (those
    with max_len 0 left out), the later steps on K rows; the hypotheses are those of each input
    decoded alone, and an input with max_len 0 gets the empty one."""
    model = make_model("attention", "bahdanau")
    src, lengths = source_batch()
    step, state = model.decoding_start(src, lengths)
    rows = []

    def counting(tokens, state):
        rows.append(tokens.shape[0])
        return step(tokens, state)

    limit = torch.tensor([default_limit(0), 0, default_limit(2), default_limit(3)])
    got = search.beam_search(counting, state, 4, BOS, EOS, beam_size=3, max_len=limit, n_best=3)
    assert rows[:2] == [3, 9]
    assert [h.tokens for h in got[1]] == [[]]
    for b in (0, 2, 3):
        step_b, state_b = model.decoding_start(*alone(b))
        expected = search.beam_search(
            step_b, state_b, 1, BOS, EOS, beam_size=3, max_len=default_limit(b), n_best=3
        )
        assert_same_hyps(got[b], expected[0])


@torch.no_grad()
def test_a_state_passed_through_is_reordered_after_inputs_leave():
    """A step function that hands its input state on unchanged ("previous": the state it was
    given) beside a static memory: after an input leaves the batch, "previous" still follows its
    beams (it is not the memory), so each input gets the hypotheses it gets alone."""
    V, H = 9, 6
    g = torch.Generator().manual_seed(3)
    embed, mix, out = (
        torch.randn(V, H, generator=g),
        torch.randn(3 * H, H, generator=g) / 2,
        torch.randn(H, V, generator=g) * 3,
    )

    def step(prev, state):
        h = torch.tanh(torch.cat([embed[prev], state["h"], state["previous"]], -1) @ mix)
        return h @ out, {"h": h, "previous": state["h"], "memory": state["memory"]}

    g = torch.Generator().manual_seed(7)
    start = {"h": torch.randn(3, H, generator=g), "previous": torch.zeros(3, H), "memory": torch.randn(3, 2)}
    limit = torch.tensor([2, 9, 9])  # the first input leaves after two steps
    got = search.beam_search(step, start, 3, BOS, EOS, beam_size=3, max_len=limit, n_best=3)
    for b in (1, 2):
        one = {k: v[b : b + 1] for k, v in start.items()}
        expected = search.beam_search(step, one, 1, BOS, EOS, beam_size=3, max_len=9, n_best=3)
        assert_same_hyps(got[b], expected[0])
