"""Special token ids shared by every model and vocabulary in seqcap, and the Vocabulary."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]

__all__ = ["PAD", "UNK", "BOS", "EOS", "SPECIALS", "Vocabulary"]


class Vocabulary:
    """A token <-> id mapping whose first four entries are always ``SPECIALS`` (ids 0..3).

    ``itos`` (id -> token) is a plain list of strings, so ``to_list()`` can go into a checkpoint
    that is loaded with ``torch.load(weights_only=True)``; ``from_list`` rebuilds the vocabulary.

    Raises:
        ValueError: if ``itos`` does not start with ``SPECIALS``, holds a non-string or holds a
            token twice.
    """

    def __init__(self, itos: list[str]):
        itos = list(itos)
        if itos[: len(SPECIALS)] != SPECIALS:
            raise ValueError(
                f"a vocabulary must start with the special tokens {SPECIALS}, got {itos[: len(SPECIALS)]!r}"
            )
        for i, token in enumerate(itos):
            if not isinstance(token, str):
                raise ValueError(f"vocabulary entry {i} must be a str, got {type(token).__name__}: {token!r}")
        stoi: dict[str, int] = {}
        for i, token in enumerate(itos):
            if token in stoi:
                raise ValueError(
                    f"token {token!r} appears twice in the vocabulary (ids {stoi[token]} and {i})"
                )
            stoi[token] = i
        self.itos: list[str] = itos
        self.stoi: dict[str, int] = stoi

    @classmethod
    def build(
        cls, sentences: Iterable[list[str]], min_freq: int = 1, max_size: int | None = None
    ) -> Vocabulary:
        """Count tokens over ``sentences`` (each a list of tokens) and keep the frequent ones.

        Tokens with ``count >= min_freq`` are kept, most frequent first, ties broken by the
        token string (so the result does not depend on the order of the data). ``max_size``
        counts the four specials too (``None``: no limit). Special strings (``"<unk>"``, ...)
        found in the data are not added a second time.
        """
        counts: Counter[str] = Counter()
        for sentence in sentences:
            if isinstance(sentence, str):
                raise TypeError(
                    f"Vocabulary.build expects sentences as lists of tokens, got a str: {sentence[:80]!r}"
                )
            counts.update(sentence)
        return cls.from_counts(counts, min_freq, max_size)

    @classmethod
    def from_counts(
        cls, counts: dict[str, int], min_freq: int = 1, max_size: int | None = None
    ) -> Vocabulary:
        """``build`` from token counts already made (data.core.rules: the prepared path counts in workers)."""
        if isinstance(min_freq, bool) or not isinstance(min_freq, int) or min_freq < 1:
            raise ValueError(f"min_freq must be an int >= 1, got {min_freq!r}")
        if max_size is not None and (
            isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < len(SPECIALS)
        ):
            raise ValueError(
                f"max_size must be None or an int >= {len(SPECIALS)} (it counts the specials), "
                f"got {max_size!r}"
            )
        specials = set(SPECIALS)
        kept = sorted(
            (token for token, count in counts.items() if count >= min_freq and token not in specials),
            key=lambda token: (-counts[token], token),
        )
        if max_size is not None:
            kept = kept[: max_size - len(SPECIALS)]
        return cls(SPECIALS + kept)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: object) -> bool:
        return token in self.stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and other.itos == self.itos

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = self.itos[len(SPECIALS) : len(SPECIALS) + 5]
        more = ", ..." if len(self) > len(SPECIALS) + 5 else ""
        preview = ", ".join(repr(token) for token in shown) + more
        return f"Vocabulary(size={len(self)}, tokens=[{preview}])"

    def encode(self, tokens: list[str], add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Token strings -> ids. Tokens not in the vocabulary become ``UNK``, and so do the
        strings ``"<pad>"``, ``"<bos>"``, ``"<eos>"`` when they occur in the text: those ids come
        only from ``add_bos`` / ``add_eos`` and padding, never from data."""
        if isinstance(tokens, str):
            raise TypeError(f"Vocabulary.encode expects a list of tokens, got a str: {tokens[:80]!r}")
        stoi = self.stoi
        ids = [stoi.get(token, UNK) for token in tokens]
        ids = [UNK if i in (PAD, BOS, EOS) else i for i in ids]
        if add_bos:
            ids.insert(0, BOS)
        if add_eos:
            ids.append(EOS)
        return ids

    def encode_array(self, tokens: Sequence[str]) -> np.ndarray:
        """:meth:`encode` of many tokens at once, as int32 ids (no markers): the prepared path maps
        the distinct tokens of a chunk of text with it."""
        ids = np.fromiter((self.stoi.get(t, UNK) for t in tokens), dtype=np.int32, count=len(tokens))
        ids[(ids == PAD) | (ids == BOS) | (ids == EOS)] = UNK
        return ids

    def decode(self, ids: Iterable[int], strip_special: bool = True) -> list[str]:
        """Ids -> token strings (accepts ints, numpy ints, 0-d tensors or a 1-d tensor).

        With ``strip_special`` (default), decoding stops at the first ``EOS`` and ``PAD`` / ``BOS``
        are dropped (``UNK`` stays, as ``"<unk>"``); without it every id is written out.
        """
        size = len(self.itos)
        tokens: list[str] = []
        for raw in ids:
            i = int(raw)
            if not 0 <= i < size:
                raise ValueError(f"token id {i} is outside this vocabulary of size {size}")
            if strip_special:
                if i == EOS:
                    break
                if i in (PAD, BOS):
                    continue
            tokens.append(self.itos[i])
        return tokens

    def to_list(self) -> list[str]:
        """The vocabulary as a plain list of strings (id order), e.g. for a checkpoint."""
        return list(self.itos)

    @classmethod
    def from_list(cls, itos: list[str]) -> Vocabulary:
        """Inverse of :meth:`to_list`."""
        return cls(list(itos))
