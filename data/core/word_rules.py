"""The rules :class:`data.core.tokenizers.WordTokenizer` adds to NLTK's data-free word tokenizers.

Plain functions and patterns on strings and token lists, with no tokenizer state and no NLTK
import: the patterns whose matches stay whole inside toktok's output (protected with
:class:`data.core.placeholders.Protector`), typographic quotes and ellipses glued back for the
Treebank detokenizer (:func:`attach_quotes_and_ellipses`) and a sentence end inside the text split
off its word (:func:`split_inner_period`). Why each rule exists is said where it is defined; what
they do together is :class:`WordTokenizer`'s docstring. toktok itself, without its HTML escapes and
on the standard ``re`` engine, is data/core/toktok.py.
"""

from __future__ import annotations

import re

__all__ = [
    "DIGIT_COLON",
    "DOUBLE_QUOTE",
    "INNER_APOSTROPHE",
    "OPENING_DOUBLE_QUOTE",
    "OPENING_SINGLE_QUOTE",
    "attach_quotes_and_ellipses",
    "split_inner_period",
]

# toktok only (treebank handles these itself): an apostrophe inside a word (don't, l'homme,
# geht's) and a colon between digits (3:45) stay in the word, and an opening single quote or
# backtick stays on the word it opens ('hi' -> "'hi", "'"; `%s' -> "`%s", "'"), which is the form
# the Treebank detokenizer expects.
INNER_APOSTROPHE = re.compile(r"(?<=\w)['’](?=\w)")
DIGIT_COLON = re.compile(r"(?<=\d):(?=\d)")  # 3:45 stays one token, as with treebank
OPENING_SINGLE_QUOTE = re.compile(r"(?<![^\s(\[{<])[`'‘’](?=[^\s`'‘’\"])")
# toktok only: a straight double quote becomes `` (opening: at the start or after a space or an
# opening bracket) or '' (closing), the Penn Treebank convention the detokenizer turns back into ".
OPENING_DOUBLE_QUOTE = re.compile(r"(?<![^\s(\[{<])\"")
DOUBLE_QUOTE = re.compile(r"\"")

_ELLIPSES = {"...", "…"}

# Typographic quotes, opener -> closer. The Treebank detokenizer leaves a space on both sides of
# them; detokenize pairs them up left to right instead (a quote that closes the innermost open
# one closes, any other opener opens) and glues each to the word it quotes.
_QUOTE_PAIRS = {"„": "“", "“": "”", "»": "«", "«": "»", "‚": "‘", "‘": "’", "›": "‹", "‹": "›"}
_QUOTES = set(_QUOTE_PAIRS) | set(_QUOTE_PAIRS.values())


def attach_quotes_and_ellipses(tokens: list[str]) -> list[str]:
    """Glue typographic quotes to the words they quote, "..." and "()" to the word before them."""
    merged: list[str] = []
    open_quotes: list[str] = []  # the closers expected, innermost last
    prefix = ""  # opening quotes waiting for the next token
    for token in tokens:
        if token in _QUOTES:
            if open_quotes and token == open_quotes[-1]:
                open_quotes.pop()
                closing = True
            else:
                closing = token not in _QUOTE_PAIRS
                if not closing:
                    open_quotes.append(_QUOTE_PAIRS[token])
            if closing and merged and not prefix:
                merged[-1] += token
            else:
                prefix += token
        elif token == "`" and merged and not prefix and merged[-1].count("`") % 2 == 1:
            merged[-1] += token  # closes a `code` span opened inside the previous token
        elif token == ")" and merged and merged[-1] == "(" and not prefix:
            merged.pop()  # empty parentheses: a call, f()
            if merged and (merged[-1][-1:].isalnum() or merged[-1].endswith("_")):
                merged[-1] += "()"
            else:
                merged.append("()")
        elif token in _ELLIPSES and merged and not prefix and merged[-1][-1:].isalnum():
            merged[-1] += token
        else:
            merged.append(prefix + token)
            prefix = ""
    if prefix:
        merged.append(prefix)
    return merged


_WORD_PERIOD = re.compile(r"^([^\W\d_][\w-]*[^\W\d_])\.$")


def split_inner_period(token: str) -> list[str]:
    """NLTK splits only the text's final period; a sentence end inside the text ("Datei
    gelöscht. Neu starten") stays glued to its word and doubles the vocabulary. A word of letters
    ending in "." becomes word + "." (abbreviations like "etc." too: detokenizing joins them back)."""
    match = _WORD_PERIOD.match(token)
    return [match.group(1), "."] if match else [token]
