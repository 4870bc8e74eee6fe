"""Caption metrics from the COCO caption evaluation code (pycocoevalcap), and CIDEr-D rewards.

caption_metrics  BLEU-1..4, METEOR, ROUGE-L and CIDEr-D of a corpus, as the COCO evaluation server
                 computes them (pycocoevalcap's Bleu, Meteor, Rouge and Cider scorers; its Cider is
                 CIDEr-D: clipped n-gram counts and the Gaussian length penalty, sigma 6), on the
                 0-100 scale the papers print (CIDEr-D 111.4 = the scorer's 1.114). The document
                 frequencies of the evaluation CIDEr-D come from the references being scored, as in
                 the official code. METEOR runs the scorer's Java jar: without `java` on PATH it is
                 None ("METEOR: needs java") and nothing fails. SPICE is left out: it downloads
                 Stanford CoreNLP the first time it runs. nltk's corpus BLEU-1..4 (what seqcap
                 reported before) are kept beside them as `nltk_bleu1` .. `nltk_bleu4`.
                 Tokenisation: the captions are compared as seqcap's caption tokens
                 (data.core.caption_sources.tokenize_caption: lower case, runs of letters and digits,
                 punctuation dropped), the tokens the model is trained on and outputs, joined by
                 spaces. The library's own PTBTokenizer is not used: it needs Java, and one
                 tokenisation for every machine keeps the numbers comparable.
CiderD           CIDEr-D of single captions with document frequencies fixed from a reference corpus
                 (the training captions, as in Rennie et al. 2017 and ruotianluo's cached n-grams):
                 the reward of self-critical training. `cider_d_for(references, cache_dir)` computes
                 them once per data set and keeps them in cache_dir/cider_df-<digest>.json.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import math
import os
import shutil
import threading
import warnings
from pathlib import Path

import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.cider.cider_scorer import CiderScorer, cook_refs
from pycocoevalcap.rouge.rouge import Rouge

from seq2seq.training.metrics import nltk_bleu

METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider")
NAMES = {  # as printed
    "bleu1": "BLEU-1", "bleu2": "BLEU-2", "bleu3": "BLEU-3", "bleu4": "BLEU-4", "meteor": "METEOR",
    "rouge_l": "ROUGE-L", "cider": "CIDEr-D",
    **{f"nltk_bleu{n}": f"nltk BLEU-{n}" for n in range(1, 5)},
}  # fmt: skip
METEOR_MISSING = "needs java"


def java_available() -> bool:
    return shutil.which("java") is not None


_meteor = None
_meteor_lock = threading.Lock()


def _meteor_scorer():
    """One METEOR process for the whole run (it loads its paraphrase tables once), closed at exit."""
    global _meteor
    with _meteor_lock:
        if _meteor is None:
            from pycocoevalcap.meteor.meteor import Meteor

            _meteor = Meteor()
            atexit.register(_close_meteor)
        return _meteor


def _close_meteor() -> None:
    global _meteor
    if _meteor is not None:
        try:
            if _meteor.lock.locked():  # a failed compute_score keeps it: its __del__ would hang
                _meteor.lock.release()
            _meteor.meteor_p.kill()
            _meteor.meteor_p.wait()
        except Exception:  # the process may be gone already at interpreter exit
            pass
        _meteor = None


_meteor_failed: str | None = None  # why METEOR failed once: it is not started again


def _meteor_score(gts: dict, res: dict) -> float | None:
    """The library's METEOR (0-1), or None, with a warning, when its java process fails (a broken
    or too small Java runtime: the scorer then reads no number back); the other metrics go on."""
    global _meteor_failed
    if _meteor_failed is not None:
        return None
    try:
        value, _ = _meteor_scorer().compute_score(gts, res)
        return float(value)
    except (OSError, ValueError) as e:
        _meteor_failed = f"{type(e).__name__}: {e}"
        _close_meteor()
        warnings.warn(
            f"METEOR failed ({_meteor_failed}); check `java -jar` runs with -Xmx2G here. "
            "It is left out of this run's metrics.",
            stacklevel=2,
        )
        return None


def _inputs(hypotheses: list[list[str]], references: list[list[list[str]]]) -> tuple[dict, dict]:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    if not hypotheses:
        raise ValueError("no captions to score")
    for i, refs in enumerate(references):
        if not refs:
            raise ValueError(f"caption {i} has no reference")
    gts = {i: [" ".join(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [" ".join(h)] for i, h in enumerate(hypotheses)}
    return gts, res


def caption_metrics(
    hypotheses: list[list[str]], references: list[list[list[str]]], meteor: bool | None = None
) -> dict[str, float | None]:
    """Tokenized hypotheses (one per image) and each image's tokenized references -> {"bleu1" ..
    "bleu4", "meteor", "rouge_l", "cider", "nltk_bleu1" .. "nltk_bleu4"}, all 0-100 (see the
    module docstring).
    meteor: None = when java is on PATH; False = skip; "meteor" is None when skipped."""
    gts, res = _inputs(hypotheses, references)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    scores: dict[str, float | None] = {f"bleu{n}": 100.0 * float(bleu[n - 1]) for n in range(1, 5)}
    scores["meteor"] = None
    if meteor or (meteor is None and java_available()):
        value = _meteor_score(gts, res)
        scores["meteor"] = None if value is None else 100.0 * value
    scores["rouge_l"] = 100.0 * float(rouge)
    scores["cider"] = 100.0 * float(cider)
    scores.update({f"nltk_{k}": v for k, v in nltk_bleu(hypotheses, references, max_n=4).items()})
    return scores


def format_metrics(scores: dict[str, float | None]) -> str:
    """'BLEU-1 80.12 ... METEOR 30.00 (or METEOR: needs java) ROUGE-L .. CIDEr-D .. nltk BLEU-4 ..'."""
    parts = []
    for key in (*METRICS, "nltk_bleu4"):
        if key not in scores:
            continue
        value = scores[key]
        parts.append(f"{NAMES[key]}: {METEOR_MISSING}" if value is None else f"{NAMES[key]} {value:.2f}")
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------
# CIDEr-D rewards with fixed document frequencies


class _Frequencies(dict):
    """n-gram -> document frequency; an unseen n-gram reads 0 without being added (the scorer
    indexes it like a defaultdict, which would grow the shared table with every sample)."""

    def __missing__(self, key):
        return 0.0


class _FixedScorer(CiderScorer):
    """pycocoevalcap's CIDEr-D scorer on given document frequencies: its compute_cider() sets
    ref_len = log(number of images scored); here it stays log(number of images of the corpus
    the frequencies come from)."""

    def __init__(self, frequencies: _Frequencies, log_images: float, n: int, sigma: float):
        super().__init__(n=n, sigma=sigma)
        self.document_frequency = frequencies
        self._log_images = log_images

    @property
    def ref_len(self) -> float | None:
        return getattr(self, "_log_images", None)

    @ref_len.setter
    def ref_len(self, value) -> None:  # CiderScorer.__init__ and compute_cider assign it
        pass


class CiderD:
    """CIDEr-D per caption (the scorer's scale: 10 at most for n = 4; not x100) against document
    frequencies of a fixed corpus of `images` reference sets."""

    def __init__(
        self, frequencies: dict[tuple[str, ...], float], images: int, n: int = 4, sigma: float = 6.0
    ):
        if images < 1:
            raise ValueError("CIDEr-D needs document frequencies of at least one image")
        self.frequencies = _Frequencies(frequencies)
        self.images, self.n, self.sigma = images, n, sigma

    @classmethod
    def from_references(cls, references: list[list[list[str]]], n: int = 4) -> CiderD:
        """Document frequencies of every n-gram (1..n) over the images' reference sets: in how
        many images' references it occurs (pycocoevalcap's compute_doc_freq)."""
        frequencies: dict[tuple[str, ...], float] = {}
        for refs in references:
            for ngram in {g for ref in cook_refs([" ".join(r) for r in refs], n) for g in ref}:
                frequencies[ngram] = frequencies.get(ngram, 0.0) + 1.0
        return cls(frequencies, len(references), n)

    def scores(self, hypotheses: list[list[str]], references: list[list[list[str]]]) -> np.ndarray:
        """(N,) CIDEr-D of hypothesis i against references[i]."""
        gts, res = _inputs(hypotheses, references)
        scorer = _FixedScorer(self.frequencies, math.log(self.images), self.n, self.sigma)
        for i in gts:
            scorer += (res[i][0], gts[i])
        return np.asarray(scorer.compute_cider(), dtype=np.float64)

    # -- the cache file -------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """JSON {"images", "n", "df": {"w1 w2": count}}, written atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "images": self.images,
            "n": self.n,
            "df": {" ".join(g): c for g, c in self.frequencies.items()},
        }
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> CiderD:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        frequencies = {tuple(g.split(" ")): float(c) for g, c in data["df"].items()}
        return cls(frequencies, int(data["images"]), int(data["n"]))


def references_digest(references: list[list[list[str]]]) -> str:
    """A digest of the reference corpus (its images' token lists, in order)."""
    h = hashlib.sha256()
    for refs in references:
        h.update(json.dumps(refs, ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:16]


def cider_d_for(
    references: list[list[list[str]]], cache_dir: str | Path | None = None
) -> tuple[CiderD, bool]:
    """CiderD on the document frequencies of `references` (the training captions), read from
    cache_dir/cider_df-<digest>.json when it was computed before (the digest covers every
    reference), else computed and stored there. Returns (scorer, True for a cache hit)."""
    if cache_dir is None:
        return CiderD.from_references(references), False
    path = Path(cache_dir) / f"cider_df-{references_digest(references)}.json"
    if path.is_file():
        try:
            return CiderD.load(path), True
        except (OSError, ValueError, KeyError):  # a damaged file is recomputed, never trusted
            pass
    scorer = CiderD.from_references(references)
    try:
        scorer.save(path)
    except OSError as e:  # a read-only data folder: computed again next time, nothing lost
        warnings.warn(
            f"cannot cache the CIDEr-D document frequencies in {path} ({e}); set cache_dir", stacklevel=2
        )
    return scorer, False
