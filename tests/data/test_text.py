"""Vocabulary and tokenizers: exact expected values, round trips, checkpoint-safe state."""

import io
import os
import random

import pytest
import torch

from data.core.tokenizers import (
    CharTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    WordTokenizer,
    build_tokenizer,
    tokenizer_from_state,
)
from data.core.vocab import BOS, EOS, PAD, SPECIALS, UNK, Vocabulary

# ---------------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------------

# counts: a 4, b 3, c 2, d 2, e 1
SENTENCES = [["a", "b", "c"], ["a", "b", "d"], ["a", "c", "d"], ["a", "b", "e"]]


def test_specials_are_ids_0_to_3():
    assert (PAD, UNK, BOS, EOS) == (0, 1, 2, 3)
    assert SPECIALS == ["<pad>", "<unk>", "<bos>", "<eos>"]
    vocab = Vocabulary.build([])
    assert vocab.itos == SPECIALS
    assert [vocab.stoi[s] for s in SPECIALS] == [PAD, UNK, BOS, EOS]
    assert len(vocab) == 4


def test_build_orders_by_count_then_alphabetically():
    vocab = Vocabulary.build(SENTENCES)
    assert vocab.itos == SPECIALS + ["a", "b", "c", "d", "e"]
    assert vocab.stoi == {token: i for i, token in enumerate(vocab.itos)}
    assert len(vocab) == 9
    assert "c" in vocab and "z" not in vocab and "<eos>" in vocab


def test_build_min_freq():
    assert Vocabulary.build(SENTENCES, min_freq=2).itos == SPECIALS + ["a", "b", "c", "d"]
    assert Vocabulary.build(SENTENCES, min_freq=3).itos == SPECIALS + ["a", "b"]
    assert Vocabulary.build(SENTENCES, min_freq=5).itos == SPECIALS


def test_build_max_size_counts_the_specials():
    assert Vocabulary.build(SENTENCES, max_size=7).itos == SPECIALS + ["a", "b", "c"]
    assert Vocabulary.build(SENTENCES, max_size=4).itos == SPECIALS
    assert Vocabulary.build(SENTENCES, max_size=100).itos == SPECIALS + ["a", "b", "c", "d", "e"]
    assert Vocabulary.build(SENTENCES, min_freq=2, max_size=5).itos == SPECIALS + ["a"]
    with pytest.raises(ValueError, match="max_size"):
        Vocabulary.build(SENTENCES, max_size=3)
    with pytest.raises(ValueError, match="min_freq"):
        Vocabulary.build(SENTENCES, min_freq=0)


def test_build_tie_breaking_is_deterministic():
    sentences = [["zeta", "alpha", "Mu", "beta"], ["beta", "émile", "10"]]
    expected = SPECIALS + ["beta", "10", "Mu", "alpha", "zeta", "émile"]  # count, then code points
    assert Vocabulary.build(sentences).itos == expected
    rng = random.Random(0)
    for _ in range(5):
        shuffled = [rng.sample(s, len(s)) for s in rng.sample(sentences, len(sentences))]
        assert Vocabulary.build(shuffled).itos == expected
    # max_size cuts inside a tie the same way
    assert Vocabulary.build(sentences, max_size=6).itos == SPECIALS + ["beta", "10"]


def test_build_does_not_add_specials_twice():
    vocab = Vocabulary.build([["<unk>", "x", "<eos>", "<pad>", "<bos>", "<unk>", "x"]])
    assert vocab.itos == SPECIALS + ["x"]


def test_build_rejects_untokenized_strings():
    with pytest.raises(TypeError, match="lists of tokens"):
        Vocabulary.build(["a b c"])


def test_encode_maps_oov_to_unk_and_adds_markers():
    vocab = Vocabulary.build(SENTENCES)  # a=4 b=5 c=6 d=7 e=8
    assert vocab.encode(["a", "e", "zzz", "b"]) == [4, 8, UNK, 5]
    assert vocab.encode(["a", "zzz"], add_bos=True, add_eos=True) == [BOS, 4, UNK, EOS]
    assert vocab.encode(["c"], add_eos=True) == [6, EOS]
    assert vocab.encode([], add_bos=True) == [BOS]
    # special strings in the text never become PAD/BOS/EOS ids
    assert vocab.encode(["<pad>", "<bos>", "<eos>", "<unk>"]) == [UNK, UNK, UNK, UNK]


def test_decode_stops_at_eos_and_drops_pad_bos():
    vocab = Vocabulary.build(SENTENCES)
    ids = [BOS, 4, UNK, 5, EOS, 6, PAD, PAD]
    assert vocab.decode(ids) == ["a", "<unk>", "b"]
    assert vocab.decode(ids, strip_special=False) == [
        "<bos>",
        "a",
        "<unk>",
        "b",
        "<eos>",
        "c",
        "<pad>",
        "<pad>",
    ]
    assert vocab.decode([4, PAD, 5, BOS, 6]) == ["a", "b", "c"]
    assert vocab.decode(torch.tensor([BOS, 8, 7, EOS, EOS])) == ["e", "d"]
    assert vocab.decode([]) == []
    assert vocab.decode(vocab.encode(["d", "x", "a"], add_bos=True, add_eos=True)) == ["d", "<unk>", "a"]
    with pytest.raises(ValueError, match="outside this vocabulary of size 9"):
        vocab.decode([4, 9])
    with pytest.raises(ValueError, match="-1"):
        vocab.decode([-1])


def test_to_list_from_list_round_trip_through_a_checkpoint():
    vocab = Vocabulary.build(SENTENCES, min_freq=2)
    itos = vocab.to_list()
    assert itos == SPECIALS + ["a", "b", "c", "d"]
    assert type(itos) is list and all(type(t) is str for t in itos)
    itos.append("mutated")  # a copy, not the vocabulary's own list
    assert len(vocab) == 8

    buffer = io.BytesIO()
    torch.save({"vocab": vocab.to_list()}, buffer)
    buffer.seek(0)
    loaded = Vocabulary.from_list(torch.load(buffer, weights_only=True)["vocab"])
    assert loaded == vocab
    assert loaded.itos == vocab.itos and loaded.stoi == vocab.stoi
    assert loaded.encode(["b", "e"]) == vocab.encode(["b", "e"]) == [5, UNK]


def test_constructor_rejects_lists_without_the_specials():
    with pytest.raises(ValueError, match=r"got \['a', 'b'\]"):
        Vocabulary(["a", "b"])
    with pytest.raises(ValueError, match=r"got \['<unk>', '<pad>', '<bos>', '<eos>'\]"):
        Vocabulary(["<unk>", "<pad>", "<bos>", "<eos>", "x"])
    with pytest.raises(ValueError, match="twice"):
        Vocabulary(SPECIALS + ["x", "y", "x"])
    with pytest.raises(ValueError, match="must be a str"):
        Vocabulary(SPECIALS + [5])
    assert Vocabulary(SPECIALS + ["x"]).stoi["x"] == 4


# ---------------------------------------------------------------------------------------------
# Word tokenizer
# ---------------------------------------------------------------------------------------------

# Sentences that come back exactly from toktok and treebank (see the WordTokenizer docstring).
TYPICAL = [
    "Hello, world!",
    'It\'s a "quoted" word.',
    "Don't do that, I can't.",
    "He said 'hi' and left.",
    "He paid $3.50 for 2,000 items (10%).",
    "It's 3:45 now; is it?",
    "Größe ändern: Über die Straße, bitte.",
    "Das ist „gut“ und »schön«.",
    "Say “hello” to me.",
    "File %s not found.",
    "Hello {name}, you have %d new messages.",
    "Can't open '%s': No such file or directory",
    "Use --help for more information.",
    "Try '%s --help' or '%s --usage' for more information.",
    "Usage: prog [OPTION]... FILE",
    "%(count)d files, %5.2f%% done, {0:>10} %1$s",
    "Wait... what?",
    "Open...",
    "Tom & Jerry | Bugs",
    "cannot stat `%s'",
    "call f() now",
    'Press Ctrl+C to quit; or type "exit".',
]


@pytest.mark.parametrize("kind", ["toktok", "treebank"])
def test_word_round_trip_on_typical_sentences(kind):
    tokenizer = WordTokenizer(kind=kind)
    for sentence in TYPICAL:
        assert tokenizer.detokenize(tokenizer.tokenize(sentence)) == sentence, (kind, sentence)
    # whitespace is normalised
    assert tokenizer.detokenize(tokenizer.tokenize("  Hello ,\tworld !\n")) == "Hello, world!"


def test_word_tokens_exact():
    toktok = WordTokenizer()
    assert toktok.kind == "toktok" and toktok.lowercase is False
    assert toktok.tokenize("Hello, world!") == ["Hello", ",", "world", "!"]
    assert toktok.detokenize(["Hello", ",", "world", "!"]) == "Hello, world!"
    assert toktok.tokenize("File %s not found.") == ["File", "%s", "not", "found", "."]
    assert toktok.tokenize("Use --help, {name} or %(n)d%%!") == [
        "Use",
        "--help",
        ",",
        "{name}",
        "or",
        "%(n)d%%",
        "!",
    ]
    assert toktok.tokenize('Don\'t say "Größe".') == ["Don't", "say", "``", "Größe", "''", "."]
    assert toktok.tokenize("Tom & Jerry | x") == ["Tom", "&", "Jerry", "|", "x"]  # no &amp; / &#124;
    assert toktok.tokenize("He paid $3.50 for 2,000 items.") == [
        "He",
        "paid",
        "$",
        "3.50",
        "for",
        "2,000",
        "items",
        ".",
    ]
    treebank = WordTokenizer(kind="treebank")
    assert treebank.tokenize("Don't open '%s'.") == ["Do", "n't", "open", "'%s", "'", "."]
    assert treebank.detokenize(["Do", "n't", "open", "'%s", "'", "."]) == "Don't open '%s'."


def test_word_documented_inexact_cases():
    toktok, treebank = WordTokenizer(kind="toktok"), WordTokenizer(kind="treebank")
    wordpunct = WordTokenizer(kind="wordpunct")
    for tokenizer in (toktok, treebank):
        assert tokenizer.detokenize(tokenizer.tokenize("a , b")) == "a, b"
        assert tokenizer.detokenize(tokenizer.tokenize("SELECT ... INTO")) == "SELECT... INTO"
    assert treebank.detokenize(treebank.tokenize("mail a@b.com")) == "mail a @ b.com"
    assert toktok.detokenize(toktok.tokenize("Path /usr/share")) == "Path / usr/share"
    assert wordpunct.tokenize("It costs 3.50") == ["It", "costs", "3", ".", "50"]
    assert wordpunct.detokenize(wordpunct.tokenize("It costs 3.50")) == "It costs 3. 50"
    assert wordpunct.detokenize(wordpunct.tokenize("Hello, world! Größe %s.")) == "Hello, world! Größe %s."


def test_space_tokenizer():
    tokenizer = WordTokenizer(kind="space")
    assert tokenizer.tokenize("  w3 w1\tw2,  w1\n") == ["w3", "w1", "w2,", "w1"]
    assert tokenizer.detokenize(["w3", "w1", "w2,"]) == "w3 w1 w2,"
    assert WordTokenizer(lowercase=True, kind="space").tokenize("A Bc") == ["a", "bc"]


@pytest.mark.parametrize("kind", ["toktok", "treebank", "wordpunct", "space"])
def test_word_empty_lines(kind):
    tokenizer = WordTokenizer(kind=kind)
    for text in ["", " ", "\t \n  ", "\u00a0"]:
        assert tokenizer.tokenize(text) == []
    assert tokenizer.detokenize([]) == ""


def test_word_lowercase():
    tokenizer = WordTokenizer(lowercase=True)
    assert tokenizer.tokenize("Größe ÄNDERN, Hello!") == ["größe", "ändern", ",", "hello", "!"]
    # placeholders keep their case: %M (minutes) is not %m (month)
    assert tokenizer.tokenize("At %H:%M, {Name} --Foo") == ["at", "%H", ":", "%M", ",", "{Name}", "--Foo"]
    assert WordTokenizer(lowercase=True, kind="treebank").tokenize("It's OK") == ["it", "'s", "ok"]


def test_word_rejects_unknown_kind():
    with pytest.raises(ValueError, match="'nltk'"):
        WordTokenizer(kind="nltk")


# ---------------------------------------------------------------------------------------------
# SentencePiece
# ---------------------------------------------------------------------------------------------


def make_corpus(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    subjects = ["The cat", "A dog", "My friend", "The old man", "Our teacher", "Die Katze", "Der Hund"]
    verbs = ["sees", "likes", "finds", "opens", "sieht", "öffnet", "mag"]
    objects = ["the red ball", "a small house", "the file", "die Tür", "das große Fenster", "the window"]
    ends = [".", "!", "?", " today.", " again!", ", she said."]
    return [
        f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} {rng.randint(1, 99)} times"
        f"{rng.choice(ends)}"
        for _ in range(n)
    ]


CORPUS = make_corpus()
# new combinations of the corpus's characters, for round trips on unseen sentences
UNSEEN = ["The red dog opens 7 windows, she said!", "Die große Katze mag das Haus?", "Tür times cat."]


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def sp_tokenizer(request):
    return SentencePieceTokenizer.train(CORPUS + ["", "   "], vocab_size=75, model_type=request.param)


def test_sentencepiece_round_trip(sp_tokenizer):
    assert sp_tokenizer.vocab_size == 75
    for sentence in CORPUS[:50] + UNSEEN:
        pieces = sp_tokenizer.tokenize(sentence)
        assert all(type(p) is str and p for p in pieces)
        assert sp_tokenizer.detokenize(pieces) == sentence
    assert sum(map(len, map(sp_tokenizer.tokenize, CORPUS))) < 0.7 * sum(map(len, CORPUS))  # merges
    assert sp_tokenizer.detokenize(sp_tokenizer.tokenize("  The   cat\tsees \n")) == "The cat sees"
    assert "".join(sp_tokenizer.tokenize("The cat")).replace("\u2581", " ").strip() == "The cat"


def test_sentencepiece_empty_lines(sp_tokenizer):
    for text in ["", " ", "\t \n  "]:
        assert sp_tokenizer.tokenize(text) == []
    assert sp_tokenizer.detokenize([]) == ""


def test_sentencepiece_is_deterministic_and_leaves_nothing_behind(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    capfd.readouterr()
    first = SentencePieceTokenizer.train(CORPUS, vocab_size=50, model_type="unigram", seed=3)
    second = SentencePieceTokenizer.train(iter(CORPUS), vocab_size=50, model_type="unigram", seed=3)
    assert first.state() == second.state()
    assert first.tokenize(UNSEEN[0]) == second.tokenize(UNSEEN[0])
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")  # sentencepiece's logging is silenced, at the fd level too
    assert os.listdir(tmp_path) == []


def test_sentencepiece_lowercase():
    tokenizer = SentencePieceTokenizer.train(CORPUS, vocab_size=50, lowercase=True)
    pieces = tokenizer.tokenize("THE CAT Sees DIE TÜR")
    assert pieces == tokenizer.tokenize("the cat sees die tür")
    assert all(p == p.lower() for p in pieces)
    assert tokenizer.detokenize(pieces) == "the cat sees die tür"
    assert tokenizer.state()["lowercase"] is True


def test_sentencepiece_vocab_too_large_is_a_clear_error():
    with pytest.raises(ValueError, match=r"vocab_size=5000 is too high .* at most \d+ for a bpe model"):
        SentencePieceTokenizer.train(CORPUS[:20], vocab_size=5000)
    with pytest.raises(ValueError, match=r"vocab_size=10 is too low .* at least \d+"):
        SentencePieceTokenizer.train(CORPUS, vocab_size=10)
    with pytest.raises(ValueError, match="no non-empty sentences"):
        SentencePieceTokenizer.train(["", "  "], vocab_size=10)
    with pytest.raises(ValueError, match="model_type"):
        SentencePieceTokenizer.train(CORPUS, vocab_size=50, model_type="char")
    with pytest.raises(ValueError, match="base64"):
        SentencePieceTokenizer("not base64!")


# ---------------------------------------------------------------------------------------------
# State and factories
# ---------------------------------------------------------------------------------------------


def assert_plain(value):
    """Only str, int, float, bool, None, list and dict (with str keys), recursively."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str
            assert_plain(item)
    elif isinstance(value, list):
        for item in value:
            assert_plain(item)
    else:
        assert value is None or type(value) in (str, int, float, bool), type(value)


def checkpoint_round_trip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save({"tokenizer": state}, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)["tokenizer"]


@pytest.mark.parametrize(
    "tokenizer",
    [
        WordTokenizer(),
        WordTokenizer(lowercase=True, kind="treebank"),
        WordTokenizer(kind="wordpunct"),
        WordTokenizer(kind="space"),
        CharTokenizer(),
        CharTokenizer(lowercase=True),
        SentencePieceTokenizer.train(CORPUS, vocab_size=60, model_type="bpe"),
        SentencePieceTokenizer.train(CORPUS, vocab_size=60, model_type="unigram", lowercase=True),
    ],
    ids=["toktok", "treebank-lower", "wordpunct", "space", "char", "char-lower", "sp-bpe", "sp-unigram-low"],
)
def test_state_survives_a_weights_only_checkpoint(tokenizer):
    state = tokenizer.state()
    assert_plain(state)
    assert state["type"] in ("word", "char", "sentencepiece")
    loaded = checkpoint_round_trip(state)
    assert loaded == state
    rebuilt = tokenizer_from_state(loaded)
    assert type(rebuilt) is type(tokenizer) and rebuilt == tokenizer
    for sentence in CORPUS[:20] + UNSEEN + TYPICAL:
        tokens = tokenizer.tokenize(sentence)
        assert rebuilt.tokenize(sentence) == tokens
        assert rebuilt.detokenize(tokens) == tokenizer.detokenize(tokens)


def test_word_state_values():
    assert WordTokenizer(lowercase=True, kind="treebank").state() == {
        "type": "word",
        "lowercase": True,
        "kind": "treebank",
    }


def test_states_in_existing_checkpoints_restore_the_same_tokenizers():
    """The states checkpoints hold (word: translation and LM; char: LM) rebuild what they did."""
    word = tokenizer_from_state({"type": "word", "lowercase": False, "kind": "toktok"})
    assert type(word) is WordTokenizer and word == WordTokenizer()
    char = tokenizer_from_state({"type": "char", "lowercase": True})
    assert type(char) is CharTokenizer and char == CharTokenizer(lowercase=True)
    assert char.tokenize("  Ab\tc ") == ["a", "b", " ", "c"]
    assert char.detokenize(["a", "b", " ", "c"]) == "ab c"


def test_tokenizer_from_state_errors():
    with pytest.raises(ValueError, match="'bytes'"):
        tokenizer_from_state({"type": "bytes"})
    with pytest.raises(ValueError, match="'type'"):
        tokenizer_from_state({"kind": "toktok"})
    with pytest.raises(ValueError, match="word"):
        tokenizer_from_state({"type": "word", "casing": True})
    with pytest.raises(ValueError, match="'char' tokenizer state"):
        tokenizer_from_state({"type": "char", "kind": "toktok"})


def test_build_tokenizer():
    word = build_tokenizer("word", lowercase=True, kind="treebank")
    assert isinstance(word, WordTokenizer) and isinstance(word, Tokenizer)
    assert word.state() == {"type": "word", "lowercase": True, "kind": "treebank"}
    assert build_tokenizer("word", CORPUS).state() == WordTokenizer().state()
    assert build_tokenizer("char", lowercase=True) == CharTokenizer(lowercase=True)

    sp = build_tokenizer("sentencepiece", CORPUS, vocab_size=55, model_type="bpe")
    assert isinstance(sp, SentencePieceTokenizer) and sp.vocab_size == 55
    assert sp.detokenize(sp.tokenize(CORPUS[0])) == CORPUS[0]
    with pytest.raises(ValueError, match="needs sentences"):
        build_tokenizer("sentencepiece")
    with pytest.raises(ValueError, match="'bpe'"):
        build_tokenizer("bpe", CORPUS)


def test_tokens_feed_a_vocabulary():
    tokenizer = WordTokenizer()
    vocab = Vocabulary.build((tokenizer.tokenize(s) for s in ["Hello, world!", "Hello again."]), max_size=7)
    assert vocab.itos == SPECIALS + ["Hello", "!", ","]
    ids = vocab.encode(tokenizer.tokenize("Hello, moon!"), add_bos=True, add_eos=True)
    assert ids == [BOS, 4, 6, UNK, 5, EOS]
    assert tokenizer.detokenize(vocab.decode(ids)) == "Hello, <unk>!"


def test_toktok_on_stdlib_re_tokenizes_as_nltk_does():
    """Toktok runs toktok's own patterns on `re` (for speed): the same tokens as NLTK's engine."""
    import re

    from nltk.tokenize import ToktokTokenizer

    from data.core.toktok import TOKTOK_ESCAPES, Toktok

    class OnNltkEngine(ToktokTokenizer):
        TOKTOK_REGEXES = [
            (re.compile(r"\|"), " | ") if rule is ToktokTokenizer.PIPE else rule
            for rule in ToktokTokenizer.TOKTOK_REGEXES
            if rule is ToktokTokenizer.PIPE or rule not in TOKTOK_ESCAPES
        ]

    texts = [
        "Hello, world!", "Wait... what?", "It costs $3.50, or 2,000 ¥ -- maybe.", "see http://x.org/a/b now",
        "a,,b , c", "„Datei“ gelöscht. Neu starten.", "(a) [b] {c} «d» 'e' `f`", "x – y — z---w",
        "Don't stop. \"Quoted\" text.", "path /usr/share | less", "1,000,000 and 3.14.", "ends with.'",
    ]  # fmt: skip
    fast, reference = Toktok(), OnNltkEngine()
    for text in texts:
        assert fast.tokenize(text) == reference.tokenize(text), text
