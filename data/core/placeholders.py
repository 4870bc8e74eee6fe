"""Placeholder protection: spans a rule-based tokenizer must leave whole, hidden behind sentinel words.

:data:`PLACEHOLDER` matches printf- and strftime-style placeholders (%s, %d, %5.2f, %-10s, %lu,
%1$s, %(name)s, %m, %H, %%: "%", optional flags, width, precision and length, then any ASCII
letter or %), str.format/brace placeholders ({}, {0}, {name}, {0:>10}, {name!r}) and long
command-line options (--help, --dry-run, --color=WHEN). Rule-based tokenizers split them ("%",
"s") and the Treebank detokenizer then glues "%" to the previous word ("File%s"), which breaks
exactly the strings a translation model must copy verbatim.

:class:`Protector` swaps matches of any pattern for sentinels (lowercase ASCII letters and digits,
so no tokenizer splits them and lowercasing leaves them alone) and puts the spans back afterwards.
"""

from __future__ import annotations

import re

__all__ = ["PLACEHOLDER", "Protector"]

_PRINTF = r"%(?:\d+\$)?(?:\([^()\s]+\))?[-+#0']*(?:\d+|\*)?(?:\.(?:\d+|\*))?(?:hh|h|ll|l|L|q|j|z|t)?[A-Za-z%]"
_BRACE = r"\{[\w.\[\]]*(?:![rsa])?(?::[^{}\s]*)?\}"
_LONG_OPTION = r"(?<![\w-])--(?:[A-Za-z0-9]|%s)[\w-]*(?:=[\w<>\[\]%-]+)?"
PLACEHOLDER = re.compile(f"{_PRINTF}|{_BRACE}|{_LONG_OPTION}")

_SENTINEL_MARK = "zqxj"
_SENTINEL = re.compile(_SENTINEL_MARK + r"(\d+)" + _SENTINEL_MARK[::-1])


class Protector:
    """Replaces spans with sentinel words and puts them back (per call; not thread-shared)."""

    def __init__(self, text: str):
        # If the text happens to contain the sentinel marker, protection is skipped altogether.
        self.enabled = _SENTINEL_MARK not in text.lower()
        self.spans: list[str] = []

    def sentinel(self, span: str) -> str:
        self.spans.append(span)
        return f"{_SENTINEL_MARK}{len(self.spans) - 1}{_SENTINEL_MARK[::-1]}"

    def protect(self, pattern: re.Pattern[str], text: str, standalone: bool = False, glue: str = "") -> str:
        """Replace every match of ``pattern`` with a sentinel.

        ``standalone``: pad the sentinel with spaces so it is a token of its own.
        ``glue``: store this instead of the match (used to rewrite quotes).
        """
        if not self.enabled:
            return text

        def replace(match: re.Match[str]) -> str:
            word = self.sentinel(glue or match.group(0))
            return f" {word} " if standalone else word

        return pattern.sub(replace, text)

    def restore(self, text: str) -> str:
        if not self.spans:
            return text
        return _SENTINEL.sub(lambda m: self.spans[int(m.group(1))], text)
