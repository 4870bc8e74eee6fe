"""`make quickstart`: build the gettext en-de corpus, train the attention translator for a fixed
number of steps (configs/translation/quickstart.yaml: 6 epochs), and report test BLEU beside the
copy-the-source baseline, with five example translations. The BLEU printed is `seq2seq test`'s,
the same number `python -m seq2seq.translation.evaluate` gives on the checkpoint.

Where the machine has no gettext catalogs for German, it falls back to the synthetic reversal
task and says so.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from data.builders.gettext import build_gettext_corpus
from data.builders.synthetic import build_synthetic_corpus
from data.core.corpus_io import CorpusError
from seq2seq.training.cli import main as cli
from seq2seq.training.metrics import sacre_bleu
from seq2seq.translation.predictor import Translator

GETTEXT_DIR = Path("data/corpora/gettext-en-de")
REVERSE_DIR = Path("data/corpora/reverse")


def prepare_data() -> list[str]:
    """Builds the corpus when missing; returns the CLI overrides that point the config at it."""
    if (GETTEXT_DIR / "train.en").exists():
        print(f"[quickstart] using the corpus in {GETTEXT_DIR}")
        return []
    try:
        build_gettext_corpus("en", "de", GETTEXT_DIR)
        return []
    except CorpusError as e:
        print(f"[quickstart] no gettext en-de corpus on this machine ({e});")
        print("[quickstart] falling back to the synthetic reversal task")
    if not (REVERSE_DIR / "train.src").exists():
        build_synthetic_corpus("reverse", REVERSE_DIR, n=20000)
    return [
        "--data.init_args.data_dir", str(REVERSE_DIR), "--data.init_args.src_lang", "src",
        "--data.init_args.tgt_lang", "tgt", "--data.init_args.word_tokenizer", "space",
        "--data.init_args.max_vocab_size", "null",
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m seq2seq.translation.quickstart", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--config", default="configs/translation/quickstart.yaml")
    args, extra = parser.parse_known_args(argv)  # the rest goes to LightningCLI
    os.environ.setdefault("WANDB_MODE", "offline")
    start = time.time()
    overrides = prepare_data()
    run = cli(["fit", "-c", args.config, *overrides, *extra])
    trainer = run.trainer
    best = trainer.checkpoint_callback.best_model_path or trainer.checkpoint_callback.last_model_path
    results = trainer.test(run.model, datamodule=run.datamodule, ckpt_path=best, verbose=False)[0]
    test = run.datamodule.datasets["test"].text
    translator = Translator.from_checkpoint(best)
    examples = translator.translate(test.src[:5], beam_size=5)
    bleu, signature = results["test_bleu"], getattr(run.model, "bleu_signature", "")
    copy, _ = sacre_bleu(test.src, test.tgt)
    print("\n" + "=" * 72)
    print(f"test BLEU (beam 5): {bleu:.2f}   copy-the-source baseline: {copy:.2f}   ({len(test)} sentences)")
    print(f"sacreBLEU signature: {signature}")
    for src, ref, hyp in zip(test.src[:5], test.tgt[:5], examples):
        print(f"\n  source:    {src}\n  output:    {hyp[0].text}\n  reference: {ref}")
    log_dir = Path(trainer.log_dir or trainer.default_root_dir)
    print(f"\ncheckpoint:      {best}")
    print(f"logs (CSV):      {log_dir / 'metrics.csv'}")
    print(f"attention plots: {log_dir / 'attention'}")
    print(f"samples:         {log_dir / 'samples'}")
    print(f"total time:      {(time.time() - start) / 60:.1f} min")
    print(f"translate more:  python -m seq2seq.translation.cli --checkpoint {best} < your_file.en")


if __name__ == "__main__":
    main()
