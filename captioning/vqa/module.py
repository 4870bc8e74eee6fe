"""VQAModule: a frozen pretrained CNN's grid + VQANet (captioning/vqa/network.py), trained to pick the
answer among the K most frequent training answers, scored with VQA accuracy.

Loss: the cross-entropy of the training answer (``multiple_choice_answer``) over the K answers,
-log softmax(W_o u)_a, as Antol et al. 2015 train their K = 1000 classifier; questions whose
answer is not among the K are not trained on (data/datamodules/vqa.py).

Validation and test: the arg-max answer of each question against its ten annotators' answers,
VQA accuracy (captioning/vqa/metrics.py) in percent, logged as ``{val,test}_acc`` (overall, what
the checkpoint keeps and the plateau reads) and ``{val,test}_acc_<question type>``. Every
validation writes run_dir/samples/val_epochNNN.txt (the first questions with the answer, its
probability and the ten answers) and, for the attention model, attention/val_epochNNN_i.png (each
hop's weights over the image). The vocabularies travel in checkpoint["seqcap"]
(seq2seq/training/module.py), so captioning.vqa.cli needs the checkpoint alone.

Images come from the feature cache when the CNN is frozen (seq2seq/training/image_features.py): computed once
per image, read from disk by every later epoch and run.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor

from captioning.vqa.metrics import vqa_scores
from captioning.vqa.network import QUESTION_RNN, Kind, VQANet
from data.core.vocab import Vocabulary
from data.core.vqa import pad_questions, tokenize_question
from data.datamodules.vqa import IGNORE
from seq2seq.modules.rnn import RecurrentOptions
from seq2seq.modules.vision import ImageEncoder, ImageOptions
from seq2seq.training.image_features import ImageFeatures, backbone_param_groups
from seq2seq.training.module import DecodingModule, as_options


class VQAModule(ImageFeatures, DecodingModule):
    """`model` picks the network (lstm_q_norm_i, attention, blind, image_only); `image` the CNN
    (ImageOptions, as CaptioningModule's), `rnn` the question encoder (RecurrentOptions)."""

    task = "vqa"
    vocab_sizes = {"vocab": "vocab_size", "answers": "num_answers"}
    vocab_hint = "data root, min_freq and max_answers"
    output_key = "question_id"

    def __init__(
        self,
        vocab_size: int,
        num_answers: int,
        model: Kind = "attention",
        image: ImageOptions = ImageOptions(),
        rnn: RecurrentOptions = QUESTION_RNN,
        joint_size: int = 512,
        hops: int = 2,
        dropout: float = 0.3,  # the classifier's (the question encoder's is rnn.dropout)
        lr: float = 1e-3,
        backbone_lr: float = 1e-4,
        weight_decay: float = 0.0,
        lr_patience: int = 2,
        lr_factor: float = 0.5,
        num_samples: int = 20,
        monitor: Literal["acc"] = "acc",  # val_acc picks the checkpoint (seq2seq/training/cli.py)
    ):
        super().__init__()
        self.image, self.rnn = as_options(ImageOptions, image), as_options(RecurrentOptions, rnn)
        self.save_options()
        self.encoder = self.image.encoder("grid")
        self.model = VQANet(
            vocab_size, num_answers, self.encoder.feature_dim, model, self.rnn, joint_size=joint_size,
            hops=hops, dropout=dropout,
        )  # fmt: skip
        self.vocab: Vocabulary | None = None
        self.answers: list[str] = []

    @property
    def image_encoder(self) -> ImageEncoder:
        return self.encoder

    def setup(self, stage: str) -> None:
        super().setup(stage)  # the vocabularies from the datamodule
        self.prepare_images(stage)

    def use_vocab_state(self, state: dict) -> None:
        self.vocab = Vocabulary.from_list(state["vocab"])
        self.answers = list(state["answers"])

    # -- the network ----------------------------------------------------------------------------
    def forward(self, question: Tensor, lengths: Tensor, features: Tensor) -> tuple[Tensor, list[Tensor]]:
        """(B, T), (B,), grid features (B, R, F) -> answer logits (B, K), attention [(B, R)] per hop."""
        return self.model(question, lengths, features)

    def encode_questions(self, questions: list[str]) -> tuple[Tensor, Tensor]:
        """Question strings -> (B, T) ids (unknown words -> <unk>) on this device, and lengths (B,)."""
        if self.vocab is None:
            raise RuntimeError("no vocabulary: fit with a VQADataModule or load a checkpoint")
        question, lengths = pad_questions([self.vocab.encode(tokenize_question(q)) for q in questions])
        return question.to(self.device), lengths

    def _answer(self, batch: dict) -> tuple[Tensor, list[Tensor]]:
        """A batch (cached features or images) -> logits (B, K), attention [(B, R)] per hop."""
        return self.model(batch["question"], batch["lengths"], self.image_features(batch))

    @staticmethod
    def answer_loss(logits: Tensor, target: Tensor) -> tuple[Tensor, int]:
        """Mean cross-entropy over the questions whose answer is among the K, and their count."""
        n = int((target != IGNORE).sum())
        if n == 0:  # no question of this batch has an answer among the K
            return logits.sum() * 0.0, 0
        return F.cross_entropy(logits.float(), target, ignore_index=IGNORE), n

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss, n = self.answer_loss(self._answer(batch)[0], batch["answer"])
        self.log("train_loss", loss, prog_bar=True, batch_size=max(n, 1))
        return loss

    # -- validation and test: the arg-max answer, VQA accuracy -----------------------------------
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val", "argmax")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test", "argmax")

    def _eval_step(self, batch: dict, prefix: str, method: str) -> None:
        """DecodingModule's step (the loss, then this batch's outputs) on one forward pass: for a
        classifier, eval_loss and decode_outputs would run the same network twice."""
        logits, weights = self._answer(batch)
        loss, n = self.answer_loss(logits, batch["answer"])
        self.log(f"{prefix}_loss", loss, batch_size=max(n, 1), sync_dist=True)
        self._outputs.extend(self.outputs(batch, logits, weights))

    def outputs(self, batch: dict, logits: Tensor, weights: list[Tensor]) -> list[dict]:
        """One dict a question: its id, text, type, ten answers, image, and the arg-max answer with
        its probability (and, for attention, the weights of each hop: (hops, R))."""
        probs = logits.float().softmax(-1)
        best, index = probs.max(-1)
        attention = torch.stack(weights, 1).float().cpu() if weights else None  # (B, hops, R)
        return [
            {
                "question_id": batch["question_ids"][b],
                "question": batch["questions"][b],
                "type": batch["types"][b],
                "answers": batch["answers"][b],
                "path": batch["paths"][b],
                "pred": self.answers[int(index[b])],
                "prob": float(best[b]),
                "attention": None if attention is None else attention[b],
            }
            for b in range(len(batch["question_ids"]))
        ]

    def score_outputs(self, prefix: str, outputs: list[dict]) -> tuple[float, str]:
        scores = vqa_scores((o["pred"], o["answers"], o["type"]) for o in outputs)
        for key, value in scores.items():
            name = f"{prefix}_acc" if key == "overall" else f"{prefix}_acc_{key}"
            self.log(name, value, prog_bar=key == "overall")
        by_type = ", ".join(f"{k} {v:.1f}" for k, v in scores.items() if k != "overall")
        header = f"{prefix} VQA accuracy {scores['overall']:.2f} on {len(outputs)} questions ({by_type})"
        return scores["overall"], header

    def log_samples(self, prefix: str, samples: list[dict], header: str) -> None:
        """samples/{prefix}_epochNNN.txt; attention/{prefix}_epochNNN_i.png for the first three
        (attention model)."""
        from seq2seq.training.plots import attention_overlay

        lines = [header] + [
            f"IMG {o['path']}\nQ   {o['question']}\nA   {o['pred']} ({o['prob']:.2f}); "
            f"annotators: {', '.join(sorted(set(o['answers'])))}"
            for o in samples
        ]
        self.write_samples(prefix, "\n\n".join(lines))
        for i, o in enumerate(samples[:3]):
            if o["attention"] is None:
                continue
            png = self.run_dir / "attention" / f"{prefix}_epoch{self.current_epoch:03d}_{i}.png"
            hops = [f"hop {k + 1}" for k in range(o["attention"].shape[0])]
            try:
                attention_overlay(o["path"], hops, o["attention"], png, title=f"{o['question']} {o['pred']}")
            except (OSError, ValueError) as e:  # an image gone since it was read: the run goes on
                rank_zero_warn(f"no attention plot for {o['path']}: {e}")

    # -- optimisation -------------------------------------------------------------------------
    def param_groups(self) -> list[dict]:
        """[the CNN's trainable parameters at backbone_lr (none when frozen), the rest at lr]."""
        hp = self.hparams
        return backbone_param_groups(self, self.encoder, hp.lr, hp.backbone_lr, "vqa")
