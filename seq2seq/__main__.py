"""`python -m seq2seq fit|validate|test|predict -c CONFIG [--model.init_args.rnn.hidden_size 512 ...]`

Translation and language models through the shared LightningCLI (seq2seq/training/cli.py); see
configs/translation/ and configs/lm/.
"""

from seq2seq.training.cli import run

if __name__ == "__main__":
    run()
