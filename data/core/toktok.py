"""toktok, as :class:`data.core.tokenizers.WordTokenizer` runs it: without its HTML escapes and on
the standard ``re`` engine (:class:`Toktok`).

Its own module because it subclasses NLTK's ``ToktokTokenizer``: importing NLTK takes about a
second and 80 MB, so only a tokenizer of kind "toktok" imports this (the plain-``re`` rules added to
NLTK's tokenizers are data/core/word_rules.py).
"""

from __future__ import annotations

import re

from nltk.tokenize import ToktokTokenizer

__all__ = ["TOKTOK_ESCAPES", "Toktok"]

TOKTOK_ESCAPES = (ToktokTokenizer.AMPERCENT, ToktokTokenizer.TAB, ToktokTokenizer.PIPE)


def _on_stdlib_re(rule: tuple) -> tuple:
    """One of toktok's (pattern, substitution) rules with the same pattern compiled by ``re``.

    NLTK wraps its patterns for the ``regex`` engine with a time limit (a guard for patterns fed
    untrusted input); toktok's fixed patterns give the same tokens on ``re`` (checked on the
    whole gettext en-de corpus, both sides) at about 2x the speed, which matters for corpora of
    millions of sentences (data.prepared.prepare)."""
    pattern, substitution = rule
    inner = getattr(pattern, "_rx", pattern)  # nltk.redos.TimedPattern -> the regex.Pattern
    return re.compile(inner.pattern, inner.flags & (re.IGNORECASE | re.MULTILINE | re.DOTALL)), substitution


class Toktok(ToktokTokenizer):
    """toktok without its HTML escapes: it writes "& " as "&amp; ", "|" as "&#124;" and tabs as
    "&#9;", which would leak into vocabularies and detokenized text. "|" is still split off."""

    TOKTOK_REGEXES = [
        (re.compile(r"\|"), " | ") if rule is ToktokTokenizer.PIPE else _on_stdlib_re(rule)
        for rule in ToktokTokenizer.TOKTOK_REGEXES
        if rule is ToktokTokenizer.PIPE or rule not in TOKTOK_ESCAPES
    ]
