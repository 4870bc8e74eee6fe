"""Tokenizers: text <-> list of string tokens, with a plain-typed state for checkpoints.

Three kinds, one registry:

- :class:`WordTokenizer` (``"word"``): rule-based word tokenization with NLTK tokenizers that need
  no downloaded data (``toktok``, ``treebank``, ``wordpunct``) or plain whitespace splitting
  (``space``); detokenized with NLTK's ``TreebankWordDetokenizer``. Placeholders such as ``%s``
  stay whole (data/core/placeholders.py); the rules added to NLTK's are data/core/word_rules.py.
  NLTK is imported only by a word tokenizer that uses it (not ``space``).
- :class:`CharTokenizer` (``"char"``): every character is a token.
- :class:`SentencePieceTokenizer` (``"sentencepiece"``): a subword model (BPE or unigram) trained
  in memory with sentencepiece; the model travels as base64 text inside the tokenizer's state.

Every tokenizer has ``state()``, a dict of plain values (``str``, ``int``, ``float``, ``bool``,
``list``, ``dict``) that survives ``torch.save`` + ``torch.load(weights_only=True)``, and
:func:`tokenizer_from_state` rebuilds the tokenizer from it.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterable, Iterator
from typing import Any, Literal, get_args

from data.core.placeholders import PLACEHOLDER, Protector
from data.core.word_rules import (
    DIGIT_COLON,
    DOUBLE_QUOTE,
    INNER_APOSTROPHE,
    OPENING_DOUBLE_QUOTE,
    OPENING_SINGLE_QUOTE,
    attach_quotes_and_ellipses,
    split_inner_period,
)

__all__ = [
    "VERSION",
    "Tokenizer",
    "WordTokenizer",
    "CharTokenizer",
    "SentencePieceTokenizer",
    "tokenizer_from_state",
    "build_tokenizer",
]

# Bump when a tokenizer gives other tokens for the same text: prepared corpora (data.prepared.parallel)
# made with another version are then rebuilt, or refused when given directly.
VERSION = 1

WordKind = Literal["toktok", "treebank", "wordpunct", "space"]
SentencePieceModelType = Literal["bpe", "unigram"]


def _normalize(text: str, lowercase: bool) -> str:
    """Strip, collapse every whitespace run (tabs, newlines, NBSP) to one space, lowercase if asked."""
    text = " ".join(text.split())
    return text.lower() if lowercase else text


class Tokenizer:
    """Base class: ``tokenize(text) -> list[str]``, ``detokenize(tokens) -> str``, ``state() -> dict``."""

    def tokenize(self, text: str) -> list[str]:
        raise NotImplementedError

    def detokenize(self, tokens: list[str]) -> str:
        raise NotImplementedError

    def state(self) -> dict:
        """Plain-typed constructor arguments plus ``"type"``; see :func:`tokenizer_from_state`."""
        raise NotImplementedError

    def __call__(self, text: str) -> list[str]:
        return self.tokenize(text)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.state() == self.state()

    __hash__ = None  # type: ignore[assignment]


# ---------------------------------------------------------------------------------------------
# Word tokenization (its rules on top of NLTK: data/core/word_rules.py)
# ---------------------------------------------------------------------------------------------


class WordTokenizer(Tokenizer):
    """Word-level tokenizer on NLTK's data-free tokenizers; detokenizes with ``TreebankWordDetokenizer``.

    Args:
        lowercase: lowercase the text before tokenizing.
        kind: ``"toktok"`` (NLTK ``ToktokTokenizer``, the default), ``"treebank"``
            (``TreebankWordTokenizer``; ``"`` becomes ````` / ``''`` and ``don't`` becomes
            ``do n't``), ``"wordpunct"`` (``wordpunct_tokenize``: every run of punctuation is a
            token; lossy on detokenization) or ``"space"`` (``str.split``; ``detokenize`` is
            ``" ".join``, an exact inverse up to whitespace).

    On top of NLTK (all kinds except ``"space"``):

    - Text is stripped and every whitespace run becomes one space first; empty text gives ``[]``.
    - Placeholders and long options stay single tokens: ``%s``, ``%d``, ``%5.2f``, ``%1$s``,
      ``%(name)s``, ``%%``, ``{}``, ``{0}``, ``{name}``, ``{0:>10}``, ``--help``, ``--color=WHEN``.
      Without this they come out as ``%`` + ``s`` and detokenize to ``File% s`` / ``File%s``.
    - ``"..."`` / ``"…"`` after a word is attached to it on detokenization (``Wait... what?``
      rather than the Treebank detokenizer's ``Wait...what?``).
    - toktok only: no HTML escapes (``&`` stays ``&``, not ``&amp;``); apostrophes inside words stay
      in the word (``Don't``, ``l'homme``: toktok alone gives ``Don ' t`` -> ``Don' t``), and so
      does a colon between digits (``3:45``; toktok alone gives ``3 : 45`` -> ``3: 45``); an
      opening ``'`` or ````` stays on its word (``'hi`` ``'``, as treebank does); straight
      double quotes become ````` / ``''`` by position (as treebank does), so they detokenize back.

    Round trips ``detokenize(tokenize(s)) == s`` (whitespace-normalised ``s``) hold for toktok and
    treebank on ordinary sentences: punctuation ``Hello, world!``, ``"quoted"``, ``'quoted'``,
    ``„quoted“``, ``»quoted«`` and ``“quoted”`` words, contractions (``Don't``, ``can't``,
    ``the '90s``), numbers (``$3.50``, ``2,000``, ``10%``, ``3:45``), German umlauts and ß,
    placeholders, ``--help``, ``Usage: prog [OPTION]... FILE``, ``Open...``, ``Wait... what?``,
    ``(%s)``, ``f()``. On 20,000 msgids/msgstrs from this machine's gettext catalogs (en + de) 96%
    come back exactly with either (toktok alone: 87%; wordpunct: 65%). Known inexact cases (the
    detokenizer cannot know the original spacing):

    - space before a mark that normally attaches, or none after one that normally has a space:
      ``a , b`` and ``a,b`` -> ``a, b``; ``%s:%u`` -> ``%s: %u``; ``x -- y`` -> ``x--y``;
      ``see .git`` -> ``see.git``; ``x != y`` -> ``x! = y``; ``page(s)`` -> ``page (s)``.
    - ``...`` is attached to the word before it: ``SELECT ... INTO`` -> ``SELECT... INTO``,
      ``a...b`` -> ``a... b``.
    - treebank only: ``a@b.com`` -> ``a @ b.com``.
    - toktok only: ``/`` after a space is split off (``Path /usr/share`` -> ``Path / usr/share``).
    - wordpunct: any punctuation run inside a word or number is split and comes back spaced
      (``3.50`` -> ``3. 50``, ``e-mail`` -> ``e - mail``, ``Don't`` -> ``Don' t``, ``'hi'`` ->
      ``' hi'``); use it only when detokenized text does not matter.
    - ``lowercase=True`` loses case, of course (placeholders and options keep theirs: ``%S`` is
      not ``%s``, nor ``%M`` ``%m``).
    """

    def __init__(self, lowercase: bool = False, kind: WordKind = "toktok"):
        if kind not in get_args(WordKind):
            raise ValueError(f"WordTokenizer kind must be one of {list(get_args(WordKind))}, got {kind!r}")
        self.lowercase = bool(lowercase)
        self.kind = kind
        if kind == "space":  # plain splitting; the other kinds import NLTK here (about a second, 80 MB)
            return
        from nltk.tokenize import TreebankWordDetokenizer, TreebankWordTokenizer, wordpunct_tokenize

        self._detokenizer = TreebankWordDetokenizer()
        if kind == "toktok":
            from data.core.toktok import Toktok

            self._toktok = Toktok()
        elif kind == "treebank":
            self._treebank = TreebankWordTokenizer()
        else:
            self._wordpunct = wordpunct_tokenize

    def __repr__(self) -> str:
        return f"WordTokenizer(lowercase={self.lowercase}, kind={self.kind!r})"

    def state(self) -> dict:
        return {"type": "word", "lowercase": self.lowercase, "kind": self.kind}

    def tokenize(self, text: str) -> list[str]:
        text = _normalize(text, lowercase=False)
        if not text:
            return []
        if self.kind == "space":
            return (text.lower() if self.lowercase else text).split(" ")
        # Each rule runs only when the characters it needs are in the text: the same tokens, and
        # about a third less time on a corpus where most sentences have no placeholder or quote.
        protector = Protector(text)
        if "%" in text or "{" in text or "--" in text:
            text = protector.protect(PLACEHOLDER, text)
        if self.lowercase:  # after protecting: %S, %M, {Name}, --Foo keep their case
            text = text.lower()
        if self.kind == "toktok":
            quotes = "'" in text or "’" in text
            if quotes:
                text = protector.protect(INNER_APOSTROPHE, text)
            if ":" in text:
                text = protector.protect(DIGIT_COLON, text)
            if quotes or "`" in text or "‘" in text:
                text = protector.protect(OPENING_SINGLE_QUOTE, text)
            if '"' in text:
                text = protector.protect(OPENING_DOUBLE_QUOTE, text, standalone=True, glue="``")
                text = protector.protect(DOUBLE_QUOTE, text, standalone=True, glue="''")
            tokens = self._toktok.tokenize(text)
        elif self.kind == "treebank":
            tokens = self._treebank.tokenize(text)
        else:
            tokens = self._wordpunct(text)
        if protector.spans:  # sentinels restore one by one, in place (a token may hold several)
            tokens = [protector.restore(token) for token in tokens]
        split = split_inner_period
        return [part for token in tokens for part in (split(token) if token[-1] == "." else (token,))]

    def detokenize(self, tokens: list[str]) -> str:
        tokens = [token for token in tokens if token and not token.isspace()]
        if self.kind == "space":
            return " ".join(tokens)
        protector = Protector(" ".join(tokens))
        merged = [protector.protect(PLACEHOLDER, token) for token in attach_quotes_and_ellipses(tokens)]
        return protector.restore(self._detokenizer.detokenize(merged)).strip()


class CharTokenizer(Tokenizer):
    """Character level: every character of the whitespace-normalised text is a token (the space
    too); ``detokenize`` joins them, an exact inverse."""

    def __init__(self, lowercase: bool = False):
        self.lowercase = bool(lowercase)

    def __repr__(self) -> str:
        return f"CharTokenizer(lowercase={self.lowercase})"

    def state(self) -> dict:
        return {"type": "char", "lowercase": self.lowercase}

    def tokenize(self, text: str) -> list[str]:
        return list(_normalize(text, self.lowercase))

    def detokenize(self, tokens: list[str]) -> str:
        return "".join(tokens).strip()


# ---------------------------------------------------------------------------------------------
# SentencePiece
# ---------------------------------------------------------------------------------------------

_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")
_TOO_LOW = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")


class SentencePieceTokenizer(Tokenizer):
    """Subword tokenizer on a sentencepiece model held in memory (no files).

    ``tokenize`` gives the model's pieces as strings (``"▁Hello"``, ``","``, ...), ``detokenize``
    decodes pieces back to text. ``detokenize(tokenize(s)) == s`` for text whose characters the
    model has seen, after sentencepiece's ``nmt_nfkc`` normalisation (whitespace collapsed,
    NFKC: ``…`` -> ``...``, full-width -> ASCII). A piece outside the model decodes as ``⁇``.

    The model's own special ids (bos/eos/pad) are switched off: sequence markers come from
    :class:`data.core.vocab.Vocabulary`, which is built over the pieces.

    Args:
        model_proto_b64: the serialized ``ModelProto`` as base64 text (from :meth:`train`).
        lowercase: lowercase text before encoding (must match how the model was trained).
    """

    def __init__(self, model_proto_b64: str, lowercase: bool = False):
        import sentencepiece as spm

        if not isinstance(model_proto_b64, str):
            raise TypeError(
                f"model_proto_b64 must be base64 text (str), got {type(model_proto_b64).__name__}"
            )
        try:
            proto = base64.b64decode(model_proto_b64.encode("ascii"), validate=True)
        except ValueError as error:
            raise ValueError(f"model_proto_b64 is not valid base64: {error}") from None
        self._processor = spm.SentencePieceProcessor()
        try:
            self._processor.LoadFromSerializedProto(proto)
        except (RuntimeError, OSError) as error:
            raise ValueError(f"model_proto_b64 does not hold a sentencepiece model: {error}") from None
        self.model_proto_b64 = model_proto_b64
        self.lowercase = bool(lowercase)

    @classmethod
    def train(
        cls,
        sentences: Iterable[str],
        vocab_size: int = 8000,
        model_type: SentencePieceModelType = "bpe",
        character_coverage: float = 1.0,
        lowercase: bool = False,
        seed: int = 0,
    ) -> SentencePieceTokenizer:
        """Train a BPE or unigram model in memory on ``sentences`` (one sentence per item).

        Empty and whitespace-only sentences are skipped. ``vocab_size`` is a hard limit: if the
        corpus is too small to fill it, this raises ``ValueError`` naming the requested size and
        the largest one sentencepiece allows (and if it is below the number of distinct
        characters + 1, the smallest) (``hard_vocab_limit=False`` is not used, so a
        config's vocab_size always means what it says). Deterministic for a given ``seed``.
        Logging is silenced; nothing is written to disk.
        """
        import sentencepiece as spm

        if model_type not in get_args(SentencePieceModelType):
            raise ValueError(
                f"model_type must be one of {list(get_args(SentencePieceModelType))}, got {model_type!r}"
            )
        if not isinstance(vocab_size, int) or vocab_size < 1:
            raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
        if not 0.0 < character_coverage <= 1.0:
            raise ValueError(f"character_coverage must be in (0, 1], got {character_coverage!r}")

        count = 0

        def lines() -> Iterator[str]:
            nonlocal count
            for sentence in sentences:
                text = _normalize(sentence, lowercase)
                if text:
                    count += 1
                    yield text

        model = io.BytesIO()
        spm.set_random_generator_seed(int(seed))
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=lines(),
                model_writer=model,
                vocab_size=vocab_size,
                model_type=model_type,
                character_coverage=character_coverage,
                unk_id=0,
                bos_id=-1,
                eos_id=-1,
                pad_id=-1,
                minloglevel=2,
            )
        except RuntimeError as error:
            message = str(error)
            if count == 0:
                raise ValueError("cannot train a sentencepiece model: no non-empty sentences given") from None
            too_high = _TOO_HIGH.search(message)
            if too_high:
                raise ValueError(
                    f"sentencepiece vocab_size={vocab_size} is too high for this corpus ({count} "
                    f"sentences): sentencepiece allows at most {too_high.group(2)} for a {model_type} "
                    "model here; lower vocab_size or give more text"
                ) from None
            too_low = _TOO_LOW.search(message)
            if too_low:
                raise ValueError(
                    f"sentencepiece vocab_size={vocab_size} is too low for this corpus: its characters "
                    f"(at character_coverage={character_coverage}) and <unk> need at least "
                    f"{too_low.group(2)}; raise vocab_size or lower character_coverage"
                ) from None
            raise ValueError(f"sentencepiece training failed: {message}") from None
        return cls(base64.b64encode(model.getvalue()).decode("ascii"), lowercase=lowercase)

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer(vocab_size={self.vocab_size}, lowercase={self.lowercase})"

    @property
    def vocab_size(self) -> int:
        """Number of pieces in the model (including its ``<unk>``)."""
        return self._processor.GetPieceSize()

    def pieces(self) -> list[str]:
        """All pieces of the model, in id order."""
        return [self._processor.IdToPiece(i) for i in range(self.vocab_size)]

    def state(self) -> dict:
        return {"type": "sentencepiece", "model_proto_b64": self.model_proto_b64, "lowercase": self.lowercase}

    def tokenize(self, text: str) -> list[str]:
        text = _normalize(text, self.lowercase)
        if not text:
            return []
        return list(self._processor.EncodeAsPieces(text))

    def detokenize(self, tokens: list[str]) -> str:
        return self._processor.DecodePieces(list(tokens)).strip()


# ---------------------------------------------------------------------------------------------
# Factories
# ---------------------------------------------------------------------------------------------


TokenizerKind = Literal["word", "char", "sentencepiece"]
_KINDS: dict[str, type[Tokenizer]] = {
    "word": WordTokenizer,
    "char": CharTokenizer,
    "sentencepiece": SentencePieceTokenizer,
}


def tokenizer_from_state(state: dict) -> Tokenizer:
    """Rebuild a tokenizer of any kind from ``Tokenizer.state()`` (e.g. read back from a checkpoint)."""
    if not isinstance(state, dict) or "type" not in state:
        raise ValueError(f"tokenizer state must be a dict with a 'type' key, got {state!r:.200}")
    options: dict[str, Any] = {key: value for key, value in state.items() if key != "type"}
    kind = state["type"]
    if kind not in _KINDS:
        raise ValueError(f"unknown tokenizer type {kind!r} in state; expected one of {list(_KINDS)}")
    try:
        return _KINDS[kind](**options)
    except TypeError as error:
        raise ValueError(f"bad {kind!r} tokenizer state {sorted(options)}: {error}") from None


def build_tokenizer(
    kind: TokenizerKind, /, sentences: Iterable[str] | None = None, **options: Any
) -> Tokenizer:
    """Make a tokenizer: ``"word"`` / ``"char"`` -> ``WordTokenizer(**options)`` /
    ``CharTokenizer(**options)`` (``sentences`` unused); ``"sentencepiece"`` ->
    ``SentencePieceTokenizer.train(sentences, **options)``.

    ``kind`` is positional-only, so ``build_tokenizer("word", kind="treebank")`` passes
    ``kind`` on to :class:`WordTokenizer`.
    """
    if kind not in _KINDS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of {list(_KINDS)}")
    if kind != "sentencepiece":
        return _KINDS[kind](**options)
    if sentences is None:
        raise ValueError("build_tokenizer('sentencepiece') needs sentences to train on")
    return SentencePieceTokenizer.train(sentences, **options)
