"""`python -m captioning fit|validate|test -c CONFIG [--model.init_args.hidden_size 512 ...]`

The seq2seq LightningCLI (SeqCapCLI: CSV logger, optional wandb, checkpoints and early stopping on
val_bleu, data.vocab_size linked to model.init_args.vocab_size) over the CaptioningModule and
CaptionDataModule named in the config; see configs/captioning/.
"""

from __future__ import annotations

from seq2seq.__main__ import main

if __name__ == "__main__":
    from data.parallel import DataError

    try:
        main()
    except DataError as e:  # the user's data: say which file and image, without a traceback
        raise SystemExit(f"error: {e}") from None
