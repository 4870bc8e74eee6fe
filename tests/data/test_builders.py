"""Corpus builders: gettext catalogs, synthetic tasks, Multi30k (text, image lists, images) from
local files. No network."""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
from pathlib import Path
from urllib.error import URLError

import pytest

from data.builders import multi30k
from data.builders.gettext import build_gettext_corpus
from data.builders.multi30k import build_multi30k
from data.builders.synthetic import build_synthetic_corpus, parse_range
from data.core.corpus_io import CorpusError, split_of, stable_fraction

ROOT = Path(__file__).resolve().parents[2]
HEADER = "Content-Type: text/plain; charset=UTF-8\n"


# ---------------------------------------------------------------------------------------------
# helpers


def write_mo(path: Path, messages: dict[str, str], encoding: str = "utf-8") -> Path:
    """Write a GNU .mo file (little-endian, no hash table) holding ``messages`` in ``encoding``.

    Keys are msgids as gettext stores them: ``"ctx\\x04msgid"`` for a msgctxt, ``"one\\0many"``
    for a plural entry (then the value is the forms joined by ``"\\0"``), ``""`` for the header.
    """
    items = sorted((k.encode(encoding), v.encode(encoding)) for k, v in messages.items())
    n = len(items)
    ids_start = 28 + 16 * n
    ids_blob, strs_blob, id_table, str_table = b"", b"", b"", b""
    for key, _ in items:
        id_table += struct.pack("<2I", len(key), ids_start + len(ids_blob))
        ids_blob += key + b"\0"
    strs_start = ids_start + len(ids_blob)
    for _, value in items:
        str_table += struct.pack("<2I", len(value), strs_start + len(strs_blob))
        strs_blob += value + b"\0"
    header = struct.pack("<7I", 0x950412DE, 0, n, 28, 28 + 8 * n, 0, ids_start)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + id_table + str_table + ids_blob + strs_blob)
    return path


def read(path: Path) -> list[str]:
    """Lines of a UTF-8 file."""
    return path.read_text(encoding="utf-8").splitlines()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """Run ``python -m <args>`` from the repository root, as a user would."""
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


CATALOG_A = {
    "": HEADER,
    "Hello": "Hallo",
    "Open file": "Datei öffnen",
    "%d file\0%d files": "%d Datei\0%d Dateien",  # plural
    "OK": "OK",  # untranslated
    "Empty": "",  # empty msgstr
    " \n\t": "leer",  # empty msgid after normalisation
    "Line one\nline two\tend": "Zeile eins\n  Zeile zwei",  # multi-line
    "menu\x04Open": "Öffnen",  # msgctxt
}
CATALOG_B = {"": HEADER, "Hello": "Servus", "Save": "Speichern", "Quit": "Beenden"}
EXPECTED = {
    "Hello": "Hallo",  # a.mo comes before b.mo, so its translation wins
    "Open file": "Datei öffnen",
    "Line one line two end": "Zeile eins Zeile zwei",
    "Save": "Speichern",
    "Quit": "Beenden",
}


@pytest.fixture
def locale_dir(tmp_path: Path) -> Path:
    """A locale root with de (two catalogs, an ISO list, a broken file), de_CH and fr."""
    root = tmp_path / "locale"
    de = root / "de" / "LC_MESSAGES"
    write_mo(de / "a.mo", CATALOG_A)
    write_mo(de / "b.mo", CATALOG_B)
    write_mo(de / "iso_639-3.mo", {"": HEADER, "German": "Deutsch"})
    (de / "broken.mo").write_bytes(b"this is not a catalog")
    write_mo(root / "de_CH" / "LC_MESSAGES" / "a.mo", {"": HEADER, "Hello": "Grüezi", "Bye": "Ade"})
    write_mo(root / "fr" / "LC_MESSAGES" / "a.mo", {"": HEADER, "Hello": "Bonjour"})
    return root


def corpus_pairs(out: Path, src: str = "en", tgt: str = "de") -> dict[str, dict[str, str]]:
    """{split: {source: target}} of a built corpus, checking the two sides are parallel."""
    result = {}
    for split in ("train", "dev", "test"):
        src_lines, tgt_lines = read(out / f"{split}.{src}"), read(out / f"{split}.{tgt}")
        assert len(src_lines) == len(tgt_lines)
        result[split] = dict(zip(src_lines, tgt_lines))
    return result


# ---------------------------------------------------------------------------------------------
# gettext


def test_write_mo_round_trips_through_gnutranslations(tmp_path):
    import gettext

    path = write_mo(tmp_path / "x.mo", CATALOG_A)
    with open(path, "rb") as f:
        catalog = gettext.GNUTranslations(f)._catalog
    assert catalog["Open file"] == "Datei öffnen"
    assert catalog[("%d file", 1)] == "%d Dateien"
    assert catalog["menu\x04Open"] == "Öffnen"


def test_gettext_filters_and_counts(locale_dir, tmp_path, capsys):
    out = tmp_path / "gt"
    stats = build_gettext_corpus("en", "de", out, locale_dir=locale_dir)
    pairs = corpus_pairs(out)
    merged = {**pairs["train"], **pairs["dev"], **pairs["test"]}
    assert merged == EXPECTED
    assert stats["pairs"]["total"] == 5
    assert sum(stats["pairs"][s] for s in ("train", "dev", "test")) == 5
    assert stats["dropped"] == {
        "header": 2,
        "plural": 1,
        "context": 1,
        "empty": 2,
        "untranslated": 1,
        "duplicate": 1,
        "undecodable": 0,
    }
    assert stats["catalogs"]["read"] == 2
    assert stats["catalogs"]["skipped"] == 1
    assert stats["catalogs"]["skipped_files"] == [str(locale_dir / "de" / "LC_MESSAGES" / "broken.mo")]
    assert stats["catalogs"]["iso_left_out"] == 1
    assert stats["pairs_per_catalog"] == {"a.mo": 3, "b.mo": 2}
    assert "broken.mo" in capsys.readouterr().err
    assert json.loads((out / "stats.json").read_text()) == stats
    assert "Grüezi" not in merged.values()  # de_CH is a separate corpus


def test_gettext_include_iso(locale_dir, tmp_path):
    stats = build_gettext_corpus("en", "de", tmp_path / "gt", locale_dir=locale_dir, include_iso=True)
    pairs = corpus_pairs(tmp_path / "gt")
    assert {**pairs["train"], **pairs["dev"], **pairs["test"]} == {**EXPECTED, "German": "Deutsch"}
    assert stats["catalogs"]["read"] == 3
    assert stats["catalogs"]["iso_left_out"] == 0


def test_gettext_variant_folder_is_its_own_language(locale_dir, tmp_path):
    stats = build_gettext_corpus("en", "de_CH", tmp_path / "ch", locale_dir=locale_dir)
    assert stats["pairs"]["total"] == 2
    pairs = corpus_pairs(tmp_path / "ch", tgt="de_CH")
    assert {**pairs["train"], **pairs["dev"], **pairs["test"]} == {"Hello": "Grüezi", "Bye": "Ade"}


def test_split_is_pinned_disjoint_and_deterministic(locale_dir, tmp_path):
    kwargs = dict(locale_dir=locale_dir, dev_fraction=0.3, test_fraction=0.3)
    build_gettext_corpus("en", "de", tmp_path / "one", **kwargs)
    build_gettext_corpus("en", "de", tmp_path / "two", **kwargs)
    for name in ("train.en", "train.de", "dev.en", "dev.de", "test.en", "test.de"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    pairs = corpus_pairs(tmp_path / "one")
    # Pinned: SHA-1 of "0\0<source>" decides, the same on every machine.
    assert set(pairs["test"]) == {"Line one line two end", "Save"}
    assert set(pairs["dev"]) == {"Quit"}
    assert set(pairs["train"]) == {"Hello", "Open file"}
    assert stable_fraction("Hello", "0") == pytest.approx(0.7133503211148902, abs=1e-15)


def test_split_fractions_on_a_larger_catalog(tmp_path):
    messages = {"": HEADER, **{f"Message number {i}": f"Nachricht Nummer {i}" for i in range(2000)}}
    write_mo(tmp_path / "loc" / "de" / "LC_MESSAGES" / "many.mo", messages)
    stats = build_gettext_corpus(
        "en", "de", tmp_path / "gt", locale_dir=tmp_path / "loc", dev_fraction=0.1, test_fraction=0.2
    )
    pairs = corpus_pairs(tmp_path / "gt")
    sets = [set(pairs[s]) for s in ("train", "dev", "test")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert len(sets[0] | sets[1] | sets[2]) == 2000
    assert 150 <= stats["pairs"]["dev"] <= 250
    assert 340 <= stats["pairs"]["test"] <= 460
    assert all(split_of(s, 0.1, 0.2, salt="0") == "dev" for s in pairs["dev"])
    other_seed = build_gettext_corpus(
        "en", "de", tmp_path / "gt1", locale_dir=tmp_path / "loc", dev_fraction=0.1, test_fraction=0.2, seed=1
    )
    assert set(corpus_pairs(tmp_path / "gt1")["test"]) != sets[2]
    assert other_seed["pairs"]["total"] == 2000


def test_gettext_no_catalog_error_lists_languages(locale_dir, tmp_path):
    with pytest.raises(CorpusError, match=r"no \.mo catalogs for language 'xx'.*de \(4\).*fr \(1\)"):
        build_gettext_corpus("en", "xx", tmp_path / "gt", locale_dir=locale_dir)
    assert not (tmp_path / "gt").exists()


def test_gettext_only_iso_catalogs_suggests_flag(tmp_path):
    write_mo(tmp_path / "loc" / "de" / "LC_MESSAGES" / "iso_3166.mo", {"": HEADER, "Germany": "Deutschland"})
    with pytest.raises(CorpusError, match="--include-iso"):
        build_gettext_corpus("en", "de", tmp_path / "gt", locale_dir=tmp_path / "loc")


def test_gettext_rejects_other_sources_and_bad_codes(locale_dir, tmp_path):
    with pytest.raises(CorpusError, match="--src 'fr' is not supported"):
        build_gettext_corpus("fr", "de", tmp_path / "gt", locale_dir=locale_dir)
    with pytest.raises(CorpusError, match="not a locale code"):
        build_gettext_corpus("en", "../de", tmp_path / "gt", locale_dir=locale_dir)
    with pytest.raises(CorpusError, match="leave nothing for training"):
        build_gettext_corpus(
            "en", "de", tmp_path / "gt", locale_dir=locale_dir, dev_fraction=0.5, test_fraction=0.5
        )


def test_gettext_never_overwrites_without_force(locale_dir, tmp_path):
    out = tmp_path / "gt"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(CorpusError, match="not empty.*--force"):
        build_gettext_corpus("en", "de", out, locale_dir=locale_dir)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    build_gettext_corpus("en", "de", out, locale_dir=locale_dir, force=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "train.en").exists()


def test_gettext_cli(locale_dir, tmp_path):
    out = tmp_path / "gt"
    args = [
        "data.builders.gettext",
        "--src",
        "en",
        "--tgt",
        "de",
        "--out",
        str(out),
        "--locale-dir",
        str(locale_dir),
    ]
    done = run_cli(*args, "--dev-fraction", "0.3", "--test-fraction", "0.3")
    assert done.returncode == 0, done.stderr
    assert "train 2, dev 1, test 2 pairs (5 in all, en-de)" in done.stdout
    assert "2 read, 1 unreadable skipped, 1 ISO code lists left out" in done.stdout
    assert "broken.mo" in done.stderr
    assert read(out / "dev.en") == ["Quit"] and read(out / "dev.de") == ["Beenden"]

    again = run_cli(*args)
    assert again.returncode == 1
    assert "already exists and is not empty" in again.stderr and "--force" in again.stderr
    assert "Traceback" not in again.stderr

    missing = run_cli(
        "data.builders.gettext", "--tgt", "xx", "--out", str(tmp_path / "x"), "--locale-dir", str(locale_dir)
    )
    assert missing.returncode == 1 and "no .mo catalogs for language 'xx'" in missing.stderr
    assert "Traceback" not in missing.stderr


# ---------------------------------------------------------------------------------------------
# synthetic


def load_synthetic(out: Path, split: str) -> list[tuple[list[int], list[int]]]:
    """(source ids, target ids) per line of a synthetic split."""
    src, tgt = read(out / f"{split}.src"), read(out / f"{split}.tgt")
    assert len(src) == len(tgt)
    ids = lambda line: [int(tok[1:]) for tok in line.split()]  # noqa: E731
    return [(ids(s), ids(t)) for s, t in zip(src, tgt)]


@pytest.mark.parametrize(
    "task, transform",
    [("copy", list), ("reverse", lambda ids: ids[::-1]), ("sort", sorted)],
)
def test_synthetic_targets_and_lengths(tmp_path, task, transform):
    out = tmp_path / task
    stats = build_synthetic_corpus(
        task, out, vocab=12, train_len=(3, 7), test_len=(10, 15), n=300, n_dev=50, n_test=80
    )
    assert stats["pairs"] == {"train": 300, "dev": 50, "test": 80}
    for split, (low, high) in (("train", (3, 7)), ("dev", (3, 7)), ("test", (10, 15))):
        rows = load_synthetic(out, split)
        assert len(rows) == stats["pairs"][split]
        for src, tgt in rows:
            assert low <= len(src) <= high
            assert tgt == transform(src)
            assert all(0 <= i < 12 for i in src)
        lengths = {len(src) for src, _ in rows}
        assert min(lengths) == low and max(lengths) == high  # the whole range is used
    assert read(out / "train.src")[0].startswith("w")


def test_sort_is_numeric_not_lexicographic(tmp_path):
    build_synthetic_corpus("sort", tmp_path / "s", vocab=20, train_len=(20, 20), n=50, n_dev=0, n_test=0)
    src, tgt = read(tmp_path / "s" / "train.src")[0], read(tmp_path / "s" / "train.tgt")[0]
    assert tgt.split() == sorted(src.split(), key=lambda tok: int(tok[1:]))
    assert read(tmp_path / "s" / "dev.src") == []


def test_synthetic_is_deterministic(tmp_path):
    kw = dict(vocab=20, n=200, n_dev=20, n_test=30)
    build_synthetic_corpus("reverse", tmp_path / "a", seed=3, **kw)
    build_synthetic_corpus("reverse", tmp_path / "b", seed=3, **kw)
    build_synthetic_corpus("reverse", tmp_path / "c", seed=4, **kw)
    build_synthetic_corpus("reverse", tmp_path / "d", seed=3, **{**kw, "n": 100})
    for name in ("train.src", "train.tgt", "dev.src", "test.tgt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert read(tmp_path / "a" / "train.src") != read(tmp_path / "c" / "train.src")
    assert read(tmp_path / "a" / "test.src") == read(tmp_path / "d" / "test.src")  # n leaves test alone
    assert read(tmp_path / "a" / "train.src")[:100] == read(tmp_path / "d" / "train.src")


@pytest.mark.parametrize(
    "text, message",
    [
        ("20-5", "LOW above HIGH"),
        ("x", "not LOW-HIGH"),
        ("5-", "not LOW-HIGH"),
        ("1-2-3", "not LOW-HIGH"),
        ("0-5", "below 1"),
    ],
)
def test_bad_ranges(text, message):
    with pytest.raises(CorpusError, match=message):
        parse_range(text, "--train-len")


def test_good_ranges():
    assert parse_range("5-20") == (5, 20)
    assert parse_range("7") == (7, 7)


def test_synthetic_rejects_bad_sizes_and_occupied_out(tmp_path):
    with pytest.raises(CorpusError, match="--vocab 0"):
        build_synthetic_corpus("copy", tmp_path / "x", vocab=0)
    with pytest.raises(CorpusError, match="task 'shuffle' is unknown"):
        build_synthetic_corpus("shuffle", tmp_path / "x")
    with pytest.raises(CorpusError, match="--test-len 9-2"):
        build_synthetic_corpus("copy", tmp_path / "x", test_len=(9, 2))
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep").write_text("x")
    with pytest.raises(CorpusError, match="--force"):
        build_synthetic_corpus("copy", tmp_path / "x", n=5)


def test_synthetic_cli(tmp_path):
    out = tmp_path / "syn"
    done = run_cli(
        "data.builders.synthetic", "--task", "reverse", "--vocab", "20", "--train-len", "5-20",
        "--test-len", "5-60",
        "--n", "500", "--n-dev", "10", "--n-test", "20", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "train 500, dev 10, test 20 pairs" in done.stdout
    assert len(read(out / "train.src")) == 500
    bad = run_cli(
        "data.builders.synthetic", "--task", "copy", "--train-len", "20-5", "--out", str(tmp_path / "bad")
    )
    assert bad.returncode == 1
    assert "--train-len 20-5 has LOW above HIGH" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------------------------------------
# multi30k


M30K = {
    "train": (
        ["A dog runs.", "Two men talk.", "A child plays."],
        ["Ein Hund rennt.", "Zwei Männer reden.", "Ein Kind spielt."],
    ),
    "val": (["A cat sleeps.", "A red car."], ["Eine Katze schläft.", "Ein rotes Auto."]),
    "test_2016_flickr": (["People walk.", "A bird."], ["Leute gehen.", "Ein Vogel."]),
}


M30K_IMAGES = {
    "train": ["1000092795.jpg", "10002456.jpg", "1000268201.jpg"],
    "val": ["1018148011.jpg", "1029450589.jpg"],
    "test_2016_flickr": ["1007129816.jpg", "1009434119.jpg"],
}


def write_image_lists(folder: Path) -> Path:
    """The three official image split lists (train.txt, val.txt, test_2016_flickr.txt) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem, names in M30K_IMAGES.items():
        (folder / f"{stem}.txt").write_text("".join(name + "\n" for name in names))
    return folder


def write_m30k(folder: Path, plain_test_de: bool = False) -> Path:
    """The six official files with tiny content; optionally test_2016_flickr.de unpacked."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem, (en, de) in M30K.items():
        for lang, lines in (("en", en), ("de", de)):
            data = "".join(line + "\n" for line in lines).encode()
            if plain_test_de and stem == "test_2016_flickr" and lang == "de":
                (folder / f"{stem}.{lang}").write_bytes(data)
            else:
                with gzip.open(folder / f"{stem}.{lang}.gz", "wb") as f:
                    f.write(data)
    return folder


def test_multi30k_from_dir(tmp_path, capsys):
    raw = write_m30k(tmp_path / "raw", plain_test_de=True)
    stats = build_multi30k(tmp_path / "m30k", from_dir=raw)
    assert stats["pairs"] == {"train": 3, "dev": 2, "test": 2}
    out = tmp_path / "m30k"
    assert read(out / "train.en") == M30K["train"][0]
    assert read(out / "train.de") == M30K["train"][1]
    assert read(out / "dev.de") == M30K["val"][1]
    assert read(out / "test.de") == M30K["test_2016_flickr"][1]
    assert sorted(stats["sha256"]) == sorted(
        n for n in multi30k.official_files() if n != "test_2016_flickr.de.gz"
    )
    assert "the official train split has 29000" in capsys.readouterr().err


def test_multi30k_mismatched_lines_name_both_files(tmp_path):
    raw = write_m30k(tmp_path / "raw")
    with gzip.open(raw / "val.de.gz", "wb") as f:
        f.write(b"Nur eine Zeile.\n")
    with pytest.raises(CorpusError, match=r"val\.en\.gz has 2 lines but .*val\.de\.gz has 1"):
        build_multi30k(tmp_path / "m30k", from_dir=raw)


def test_multi30k_missing_file_and_checksum(tmp_path, monkeypatch):
    raw = write_m30k(tmp_path / "raw")
    (raw / "test_2016_flickr.en.gz").unlink()
    with pytest.raises(CorpusError, match=r"no test_2016_flickr\.en\.gz"):
        build_multi30k(tmp_path / "m30k", from_dir=raw)
    write_m30k(raw)
    monkeypatch.setitem(multi30k.SHA256, "train.en.gz", "0" * 64)
    with pytest.raises(CorpusError, match=r"train\.en\.gz has SHA-256 .* but the official"):
        build_multi30k(tmp_path / "m30k", from_dir=raw)
    monkeypatch.setitem(multi30k.SHA256, "train.en.gz", multi30k.sha256_of(raw / "train.en.gz"))
    assert build_multi30k(tmp_path / "m30k", from_dir=raw, force=True)["pairs"]["train"] == 3


def test_multi30k_offline_says_what_to_place_where(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise URLError("Name or service not known")

    monkeypatch.setattr(multi30k, "urlopen", offline)
    out = tmp_path / "m30k"
    with pytest.raises(SystemExit) as exc:
        multi30k.main(["--out", str(out)])
    message = str(exc.value.code)
    assert "offline" in message
    for name in multi30k.official_files():
        assert name in message
        assert f"{multi30k.BASE_URL}/{name}" in message
    for name in multi30k.image_list_files():
        assert f"{multi30k.IMAGE_SPLITS_URL}/{name}" in message
    assert f"--from-dir {out / 'raw'}" in message
    assert not out.exists()  # nothing left behind


def test_multi30k_download_with_fake_opener(tmp_path, monkeypatch):
    served = write_image_lists(write_m30k(tmp_path / "served") / "image_splits")
    requested = []

    def serve(url, timeout=None):
        requested.append(url)
        folder = served if "/image_splits/" in url else served.parent
        return open(folder / url.rsplit("/", 1)[1], "rb")

    monkeypatch.setattr(multi30k, "urlopen", serve)
    stats = build_multi30k(tmp_path / "m30k")
    assert stats["pairs"] == {"train": 3, "dev": 2, "test": 2} and stats["image_lists"]
    raw = tmp_path / "m30k" / "raw"
    assert sorted(p.name for p in raw.iterdir() if p.is_file()) == sorted(multi30k.official_files())
    assert sorted(p.name for p in (raw / "image_splits").iterdir()) == sorted(multi30k.image_list_files())
    assert f"{multi30k.IMAGE_SPLITS_URL}/val.txt" in requested
    assert read(tmp_path / "m30k" / "dev_images.txt") == M30K_IMAGES["val"]


@pytest.mark.parametrize("subfolder", [True, False], ids=["image_splits", "flat"])
def test_multi30k_image_lists_follow_the_pairs(tmp_path, subfolder):
    raw = write_m30k(tmp_path / "raw")
    write_image_lists(raw / "image_splits" if subfolder else raw)
    stats = build_multi30k(tmp_path / "m30k", from_dir=raw)
    out = tmp_path / "m30k"
    for split, stem in multi30k.OFFICIAL_STEMS.items():
        assert read(out / f"{split}_images.txt") == M30K_IMAGES[stem]
        assert len(read(out / f"{split}_images.txt")) == len(read(out / f"{split}.en"))
    assert stats["image_lists"] and stats["image_dir"] is None
    assert "image_splits/val.txt" in stats["sha256"]


def test_multi30k_without_image_lists_is_text_only_and_says_so(tmp_path, capsys):
    raw = write_m30k(tmp_path / "raw")
    out = tmp_path / "m30k"
    out.mkdir()
    (out / "train_images.txt").write_text("stale.jpg\n")  # from an older build: must not survive
    stats = build_multi30k(out, from_dir=raw, force=True)
    assert not stats["image_lists"] and not list(out.glob("*_images.txt"))
    err = capsys.readouterr().err
    assert "no image split lists" in err and "text only" in err and multi30k.IMAGE_SPLITS_URL in err


def test_multi30k_bad_image_lists_are_named(tmp_path):
    raw = write_m30k(tmp_path / "raw")
    lists = write_image_lists(raw / "image_splits")
    (lists / "val.txt").write_text("1018148011.jpg\n")
    with pytest.raises(CorpusError, match=r"val\.txt has 1 lines but .*val\.en\.gz has 2"):
        build_multi30k(tmp_path / "m30k", from_dir=raw)
    (lists / "val.txt").unlink()
    with pytest.raises(CorpusError, match=r"not val\.txt"):
        build_multi30k(tmp_path / "m30k", from_dir=raw)
    (lists / "val.txt").write_text("1018148011.jpg\n\n")
    with pytest.raises(CorpusError, match=r"val\.txt, line 2: empty image name"):
        build_multi30k(tmp_path / "m30k", from_dir=raw)
    assert not (tmp_path / "m30k").exists()  # nothing written on a bad list


def test_multi30k_images_folder_is_checked(tmp_path):
    raw = write_m30k(tmp_path / "raw")
    write_image_lists(raw / "image_splits")
    images = tmp_path / "flickr30k-images"
    images.mkdir()
    every = [name for names in M30K_IMAGES.values() for name in names]
    for name in every[1:]:
        (images / name).write_bytes(b"jpeg")
    (images / "10002456.jpg").unlink()
    with pytest.raises(CorpusError) as err:
        build_multi30k(tmp_path / "m30k", from_dir=raw, images=images)
    message = str(err.value)
    assert "2 listed images are not in" in message
    assert "train.txt line 1: 1000092795.jpg" in message and "train.txt line 2: 10002456.jpg" in message
    assert not (tmp_path / "m30k").exists()
    for name in every:
        (images / name).write_bytes(b"jpeg")
    stats = build_multi30k(tmp_path / "m30k", from_dir=raw, images=images)
    assert stats["image_dir"] == str(images.resolve())
    assert json.loads((tmp_path / "m30k" / "stats.json").read_text())["image_dir"] == str(images.resolve())
    with pytest.raises(CorpusError, match="is not a folder"):
        build_multi30k(tmp_path / "m30k", from_dir=raw, images=images / "nope", force=True)
    text_only = write_m30k(tmp_path / "text_only")
    with pytest.raises(CorpusError, match="--images needs the image split lists"):
        build_multi30k(tmp_path / "other", from_dir=text_only, images=images)


def test_multi30k_cli(tmp_path):
    raw = write_m30k(tmp_path / "raw")
    done = run_cli("data.builders.multi30k", "--out", str(tmp_path / "m30k"), "--from-dir", str(raw))
    assert done.returncode == 0, done.stderr
    assert "train 3, dev 2, test 2 pairs (en-de)" in done.stdout
    assert "sha256 train.en.gz " in done.stdout
    write_image_lists(raw)
    images = tmp_path / "images"
    images.mkdir()
    args = [
        "data.builders.multi30k",
        "--out",
        str(tmp_path / "mm"),
        "--from-dir",
        str(raw),
        "--images",
        str(images),
    ]
    missing = run_cli(*args)
    assert missing.returncode == 1 and "7 listed images are not in" in missing.stderr
    assert "Traceback" not in missing.stderr
    for names in M30K_IMAGES.values():
        for name in names:
            (images / name).write_bytes(b"jpeg")
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    assert f"--data.init_args.image_dir {images}" in done.stdout


LATIN1_HEADER = (
    "Project-Id-Version: net-tools 1.51\nLast-Translator: Ralf B\u00e4chle\n"
    "Content-Type: text/plain; charset=ISO-8859-1\nContent-Transfer-Encoding: 8bit\n"
)


def test_a_latin1_catalog_is_decoded_with_the_charset_it_declares(tmp_path, capsys):
    """Like net-tools.mo: an ISO-8859-1 catalog (its header too) used to be skipped as unreadable
    (Python's GNUTranslations decodes the header as UTF-8); it is read with its own charset."""
    from data.builders.gettext import read_catalog

    messages = {
        "": LATIN1_HEADER,
        "Counts": "Z\u00e4hler",
        "Size": "Gr\u00f6\u00dfe",
        "%d file\0%d files": "%d Datei\0%d Dateien",
    }
    path = write_mo(tmp_path / "loc" / "de" / "LC_MESSAGES" / "net-tools.mo", messages, "iso-8859-1")
    assert "\u00e4".encode("utf-8") not in path.read_bytes() and b"Z\xe4hler" in path.read_bytes()
    catalog = read_catalog(path)
    assert catalog["Counts"] == "Z\u00e4hler" and catalog["Size"] == "Gr\u00f6\u00dfe"
    assert catalog[("%d file", 1)] == "%d Dateien"
    stats = build_gettext_corpus("en", "de", tmp_path / "gt", locale_dir=tmp_path / "loc")
    merged = {k: v for split in corpus_pairs(tmp_path / "gt").values() for k, v in split.items()}
    assert merged == {"Counts": "Z\u00e4hler", "Size": "Gr\u00f6\u00dfe"}
    assert stats["catalogs"]["read"] == 1 and stats["catalogs"]["skipped"] == 0
    assert "skipping" not in capsys.readouterr().err


def test_only_what_cannot_be_decoded_is_skipped(tmp_path, capsys):
    """A UTF-8 catalog with one entry of Latin-1 bytes loses that entry, not the catalog; a
    catalog that declares a charset Python does not know is skipped with a warning naming it."""
    from data.builders.gettext import read_catalog

    good = write_mo(
        tmp_path / "loc" / "de" / "LC_MESSAGES" / "a.mo",
        {"": HEADER, "Open": "\u00d6ffnen", "Save": "Sichern"},
    )
    data = good.read_bytes().replace("\u00d6ffnen".encode(), b"\xd6ffnen!")  # same length, not UTF-8
    good.write_bytes(data)
    dropped = {"undecodable": 0}
    assert read_catalog(good, dropped) == {"": HEADER, "Save": "Sichern"} and dropped == {"undecodable": 1}
    odd = HEADER.replace("UTF-8", "CHARSET")
    assert "CHARSET" in odd
    bad = write_mo(tmp_path / "loc" / "de" / "LC_MESSAGES" / "b.mo", {"": odd, "Close": "Schlie\u00dfen"})
    stats = build_gettext_corpus("en", "de", tmp_path / "gt", locale_dir=tmp_path / "loc")
    assert stats["catalogs"]["skipped_files"] == [str(bad)] and stats["dropped"]["undecodable"] == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "CHARSET" in err
