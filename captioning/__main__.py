"""`python -m captioning fit|validate|test -c CONFIG [--model.init_args.rnn.hidden_size 512 ...]`

The shared LightningCLI (seq2seq/training/cli.py: CSV logger, optional wandb, checkpoints and early stopping
on val_<monitor>, val_cider by default; data.vocab_size linked to model.init_args.vocab_size) over
the CaptioningModule and CaptionDataModule named in the config; see configs/captioning/.
"""

from seq2seq.training.cli import run

if __name__ == "__main__":
    run()
