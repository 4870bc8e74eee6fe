"""Build a real English-to-X parallel corpus from the gettext catalogs installed on this machine.

Each ``<locale-dir>/<tgt>/LC_MESSAGES/*.mo`` holds human translations of software messages: the
English ``msgid`` and its ``msgstr`` in language ``<tgt>``. Usage::

    python -m data.builders.gettext --src en --tgt de --out data/gettext-en-de
    python -m data.builders.gettext --src en --tgt fr --out /tmp/gt-fr --include-iso --force

What is read and what is left out (the counts land in ``stats.json``):

- Only the exact language folder ``<tgt>`` is read; regional variants such as ``de_CH`` or
  ``sr@latin`` are separate corpora (ask for them with ``--tgt de_CH``), never mixed in, so that
  one corpus has one spelling convention.
- ISO code-list catalogs (``iso_639*``, ``iso_3166*``, ``iso_4217*``, ``iso_15924*``) hold names of
  languages, countries and currencies rather than sentences; they are left out unless
  ``--include-iso``.
- Dropped entries, by reason: ``header`` (the ``""`` entry), ``plural`` (``ngettext`` entries),
  ``context`` (entries with a ``msgctxt``: mostly short ambiguous UI labels whose other senses
  are translated elsewhere), ``empty`` (source or target empty after whitespace normalisation),
  ``untranslated`` (target equal to source) and ``duplicate`` (a source already kept: the first
  translation wins, catalogs read in file-name order and entries in msgid order, so the build is
  deterministic).
- Whitespace is normalised: every run of whitespace (newlines, tabs, non-breaking spaces) becomes
  one space and the ends are stripped, so a multi-line message becomes one line.
- Each catalog is decoded with the charset its header declares (``Content-Type: text/plain;
  charset=ISO-8859-1`` and so on; UTF-8 when it declares none), as GNU gettext does; an entry
  whose bytes are not valid in that charset is dropped as ``undecodable``. A catalog that cannot
  be read at all (not a .mo file, truncated, a charset Python does not know) is skipped with a
  warning naming it.

The split is a stable hash of the source sentence (SHA-1 salted with ``--seed``), so a source
is in exactly one split and the split is the same on every machine.
"""

from __future__ import annotations

import argparse
import codecs
import re
import struct
import sys
from pathlib import Path

from tqdm import tqdm

from data.core.corpus_io import (
    SPLITS,
    CorpusError,
    check_fractions,
    check_out_dir,
    split_of,
    write_parallel,
    write_stats,
)

DEFAULT_LOCALE_DIR = "/usr/share/locale"
ISO_PREFIXES = ("iso_639", "iso_3166", "iso_4217", "iso_15924")
DROP_REASONS = ("header", "plural", "context", "empty", "untranslated", "duplicate", "undecodable")
MO_MAGIC = 0x950412DE
_CHARSET = re.compile(rb"charset\s*=\s*([A-Za-z0-9_.:+-]+)", re.IGNORECASE)
_LANG_CODE = re.compile(r"^[A-Za-z]{2,3}(_[A-Za-z0-9]{2,3})?(@[A-Za-z0-9]+)?$")


def normalize(text: str) -> str:
    """Collapse every whitespace run (newlines, tabs, NBSP, ...) into one space and strip the ends."""
    return " ".join(text.split())


def is_iso_catalog(path: Path) -> bool:
    """True for the ISO code-list catalogs (names of languages, countries, currencies, scripts)."""
    return path.name.startswith(ISO_PREFIXES)


def languages_with_catalogs(locale_dir: Path) -> dict[str, int]:
    """Map each language folder under ``locale_dir`` that has ``.mo`` files to how many it has."""
    found = {}
    for lang_dir in sorted(Path(locale_dir).iterdir()):
        count = len(list((lang_dir / "LC_MESSAGES").glob("*.mo")))
        if count:
            found[lang_dir.name] = count
    return found


def _no_catalog_message(tgt: str, locale_dir: Path, include_iso: bool, n_iso: int) -> str:
    """The error for a language without usable catalogs, naming some languages that have them."""
    where = Path(locale_dir) / tgt / "LC_MESSAGES"
    if n_iso and not include_iso:
        return f"{where} holds only ISO code-list catalogs ({n_iso}); pass --include-iso to use them"
    langs = languages_with_catalogs(locale_dir)
    most = sorted(langs, key=lambda lang: (-langs[lang], lang))[:12]
    listed = ", ".join(f"{lang} ({langs[lang]})" for lang in most) or "none at all"
    return (
        f"no .mo catalogs for language {tgt!r} in {where}; languages under {locale_dir} with the "
        f"most catalogs: {listed}. Pick one of those with --tgt, or point --locale-dir elsewhere"
    )


def find_catalogs(tgt: str, locale_dir: Path, include_iso: bool) -> tuple[list[Path], int]:
    """The ``.mo`` files to read for ``tgt`` (sorted by name) and how many ISO catalogs were left out."""
    locale_dir = Path(locale_dir)
    if not locale_dir.is_dir():
        raise CorpusError(f"locale folder {locale_dir} does not exist; pass --locale-dir with .mo catalogs")
    paths = sorted((locale_dir / tgt / "LC_MESSAGES").glob("*.mo"), key=lambda p: p.name)
    kept = [p for p in paths if include_iso or not is_iso_catalog(p)]
    n_iso = len(paths) - len(kept)
    if not kept:
        raise CorpusError(_no_catalog_message(tgt, locale_dir, include_iso, n_iso))
    return kept, n_iso


def mo_entries(data: bytes) -> list[tuple[bytes, bytes]]:
    """The (msgid, msgstr) byte strings of a GNU .mo file, either byte order; ValueError naming
    what is wrong when the file is not one."""
    if len(data) < 20:
        raise ValueError("too short for a .mo file")
    for order in ("<", ">"):
        if struct.unpack(f"{order}I", data[:4])[0] == MO_MAGIC:
            break
    else:
        raise ValueError("not a .mo file (bad magic number)")
    version, n, ids_at, strs_at = struct.unpack(f"{order}4I", data[4:20])
    if version >> 16 not in (0, 1):
        raise ValueError(f"unsupported .mo file version {version >> 16}")
    entries = []
    for i in range(n):
        id_len, id_at = struct.unpack_from(f"{order}2I", data, ids_at + 8 * i)
        str_len, str_at = struct.unpack_from(f"{order}2I", data, strs_at + 8 * i)
        if id_at + id_len > len(data) or str_at + str_len > len(data):
            raise ValueError(f"entry {i} lies past the end of the file (truncated .mo file)")
        entries.append((data[id_at : id_at + id_len], data[str_at : str_at + str_len]))
    return entries


def mo_charset(entries: list[tuple[bytes, bytes]]) -> str:
    """The charset the header entry (msgid "") declares, checked with codecs; "utf-8" without one.
    LookupError for a charset Python does not know (e.g. the template's "CHARSET")."""
    header = next((msgstr for msgid, msgstr in entries if msgid == b""), b"")
    found = _CHARSET.search(header)
    charset = found.group(1).decode("ascii") if found else "utf-8"
    try:
        return codecs.lookup(charset).name
    except LookupError:
        raise LookupError(f"the header declares charset {charset!r}, which Python cannot decode") from None


def read_catalog(path: Path, dropped: dict[str, int] | None = None) -> dict:
    """One ``.mo`` file as ``GNUTranslations._catalog`` holds it (msgid or (msgid, n) -> msgstr),
    decoded with the charset its header declares. An entry that is not valid in that charset is
    left out (counted as dropped["undecodable"] when `dropped` is given); a file that is not a
    .mo catalog, or declares an unknown charset, is a ValueError or LookupError."""
    entries = mo_entries(Path(path).read_bytes())
    charset = mo_charset(entries)
    catalog: dict = {}
    for msgid, msgstr in entries:
        try:
            if b"\0" in msgid:  # a plural entry: msgid and msgid_plural, the forms joined by NULs
                singular = msgid.split(b"\0")[0].decode(charset)
                forms = [form.decode(charset) for form in msgstr.split(b"\0")]
                catalog.update(((singular, n), form) for n, form in enumerate(forms))
            else:
                catalog[msgid.decode(charset)] = msgstr.decode(charset)
        except UnicodeDecodeError:
            if dropped is not None:
                dropped["undecodable"] += 1
    return catalog


def catalog_pairs(catalog: dict, dropped: dict[str, int]) -> list[tuple[str, str]]:
    """Normalised (source, target) pairs of one catalog in msgid order; counts drops in ``dropped``.

    Duplicates are not handled here (they depend on what earlier catalogs kept).
    """
    pairs = []
    plural_keys = [k for k in catalog if isinstance(k, tuple)]
    dropped["plural"] += sum(1 for k in plural_keys if k[1] == 0)
    for msgid in sorted(k for k in catalog if isinstance(k, str)):
        if msgid == "":
            dropped["header"] += 1
            continue
        if "\x04" in msgid:
            dropped["context"] += 1
            continue
        src, tgt = normalize(msgid), normalize(catalog[msgid])
        if not src or not tgt:
            dropped["empty"] += 1
        elif src == tgt:
            dropped["untranslated"] += 1
        else:
            pairs.append((src, tgt))
    return pairs


def collect_pairs(paths: list[Path], stats: dict) -> list[tuple[str, str]]:
    """Read every catalog in ``paths`` and keep the first translation of each source sentence."""
    dropped = stats["dropped"]
    seen: set[str] = set()
    pairs = []
    for path in tqdm(paths, desc="catalogs", unit="mo", disable=None):
        try:
            catalog = read_catalog(path, dropped)
        except (OSError, ValueError, struct.error, IndexError, LookupError) as err:
            print(f"warning: skipping unreadable catalog {path}: {err}", file=sys.stderr)
            stats["catalogs"]["skipped"] += 1
            stats["catalogs"]["skipped_files"].append(str(path))
            continue
        stats["catalogs"]["read"] += 1
        kept = 0
        for src, tgt in catalog_pairs(catalog, dropped):
            if src in seen:
                dropped["duplicate"] += 1
                continue
            seen.add(src)
            pairs.append((src, tgt))
            kept += 1
        stats["pairs_per_catalog"][path.name] = kept
    return pairs


def _check_languages(src: str, tgt: str) -> None:
    """Only English sources (msgids are English); a plain language code for the target."""
    if src != "en":
        raise CorpusError(
            f"--src {src!r} is not supported: gettext msgids are English, so the source must be 'en' "
            "(for X-to-English, build en-X and swap the files)"
        )
    if not _LANG_CODE.match(tgt):
        raise CorpusError(f"--tgt {tgt!r} is not a locale code such as de, pt_BR or sr@latin")
    if tgt == src:
        raise CorpusError(f"--tgt {tgt!r} equals --src; choose another target language")


def build_gettext_corpus(
    src: str,
    tgt: str,
    out: str | Path,
    locale_dir: str | Path = DEFAULT_LOCALE_DIR,
    include_iso: bool = False,
    dev_fraction: float = 0.05,
    test_fraction: float = 0.05,
    seed: int = 0,
    force: bool = False,
) -> dict:
    """Build ``<out>/{train,dev,test}.{src,tgt}`` and ``<out>/stats.json``; return the stats.

    Raises :class:`CorpusError` for anything the user can fix (unsupported ``src``, no catalogs for
    ``tgt``, an occupied ``out`` without ``force``, no usable pairs).
    """
    out, locale_dir = Path(out), Path(locale_dir)
    _check_languages(src, tgt)
    check_fractions(dev_fraction, test_fraction)
    check_out_dir(out, force)
    paths, n_iso = find_catalogs(tgt, locale_dir, include_iso)
    stats = {
        "src": src,
        "tgt": tgt,
        "locale_dir": str(locale_dir),
        "include_iso": include_iso,
        "dev_fraction": dev_fraction,
        "test_fraction": test_fraction,
        "seed": seed,
        "catalogs": {"read": 0, "skipped": 0, "skipped_files": [], "iso_left_out": n_iso},
        "dropped": dict.fromkeys(DROP_REASONS, 0),
        "pairs_per_catalog": {},
    }
    pairs = collect_pairs(paths, stats)
    if not pairs:
        raise CorpusError(f"no usable sentence pairs in the {len(paths)} catalogs of {locale_dir / tgt}")
    splits: dict[str, list[tuple[str, str]]] = {name: [] for name in SPLITS}
    for pair in pairs:
        splits[split_of(pair[0], dev_fraction, test_fraction, salt=str(seed))].append(pair)
    for name, split_pairs in splits.items():
        write_parallel(out, name, [p[0] for p in split_pairs], [p[1] for p in split_pairs], src, tgt)
    stats["pairs"] = {name: len(split_pairs) for name, split_pairs in splits.items()}
    stats["pairs"]["total"] = len(pairs)
    write_stats(out, stats)
    return stats


def format_stats(stats: dict, out: Path) -> str:
    """A few human-readable lines with the counts of a build."""
    pairs, cats, dropped = stats["pairs"], stats["catalogs"], stats["dropped"]
    return "\n".join(
        [
            f"wrote {out}: train {pairs['train']}, dev {pairs['dev']}, test {pairs['test']} pairs "
            f"({pairs['total']} in all, {stats['src']}-{stats['tgt']})",
            f"catalogs: {cats['read']} read, {cats['skipped']} unreadable skipped, "
            f"{cats['iso_left_out']} ISO code lists left out",
            "dropped: " + ", ".join(f"{reason} {dropped[reason]}" for reason in DROP_REASONS),
        ]
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(
        prog="python -m data.builders.gettext",
        description="Build an English-to-X parallel corpus from installed gettext (.mo) catalogs.",
    )
    parser.add_argument("--src", default="en", help="source language; only 'en' (msgids are English)")
    parser.add_argument("--tgt", required=True, help="target locale folder name, e.g. de, fr, pt_BR")
    parser.add_argument("--out", required=True, type=Path, help="output folder for the corpus files")
    parser.add_argument("--locale-dir", default=DEFAULT_LOCALE_DIR, type=Path, help="gettext locale root")
    parser.add_argument("--include-iso", action="store_true", help="also read the ISO code-list catalogs")
    parser.add_argument("--dev-fraction", type=float, default=0.05, help="share of sources in dev")
    parser.add_argument("--test-fraction", type=float, default=0.05, help="share of sources in test")
    parser.add_argument("--seed", type=int, default=0, help="salt of the split hash")
    parser.add_argument("--force", action="store_true", help="overwrite corpus files in a non-empty --out")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: build the corpus and print its counts; user errors exit with a message."""
    args = parse_args(argv)
    try:
        stats = build_gettext_corpus(
            args.src,
            args.tgt,
            args.out,
            locale_dir=args.locale_dir,
            include_iso=args.include_iso,
            dev_fraction=args.dev_fraction,
            test_fraction=args.test_fraction,
            seed=args.seed,
            force=args.force,
        )
    except CorpusError as err:
        raise SystemExit(f"error: {err}") from None
    print(format_stats(stats, args.out))


if __name__ == "__main__":
    main()
