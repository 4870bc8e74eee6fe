"""TranslationModule: Seq2Seq trained with cross-entropy, validated with real decoding and BLEU.

Logs train loss/ppl, val loss/ppl and val BLEU (sacreBLEU on detokenized output against the raw
references), a table of sample translations and attention heatmaps (PNG) of a few dev sentences.
Adam with ReduceLROnPlateau on val BLEU; gradient clipping is the Trainer's
(`gradient_clip_val`, seed 004). The vocabularies and tokenizers travel inside the checkpoint
(the shared layer: seq2seq/training/module.py).

Multimodal translation: `fusion` other than "none" adds a pretrained CNN (`backbone`, as captioning's
ImageEncoder, always its grid of region vectors) whose features enter the decoder as
modules/decoder.py describes; the datamodule is then data.datamodules.multimodal.MultimodalDataModule. With a
frozen CNN the features come from the feature cache (seq2seq/training/image_features.py). fusion="none"
builds no CNN and is the text-only model, with the same numbers for the same seed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import torch
from torch import Tensor

from data.core.protocols import OptionalImages
from data.core.tokenizers import Tokenizer, tokenizer_from_state
from data.core.vocab import PAD, Vocabulary
from seq2seq.modules.output_loss import linear_cross_entropy
from seq2seq.modules.rnn import RecurrentOptions
from seq2seq.modules.vision import ImageEncoder, ImageOptions
from seq2seq.search import SearchOptions
from seq2seq.training.image_features import ImageFeatures
from seq2seq.training.metrics import sacre_bleu
from seq2seq.training.module import DecodingModule, as_options, perplexity
from seq2seq.training.plots import attention_heatmap
from seq2seq.translation.network import Seq2Seq
from seq2seq.translation.predictor import replace_unknowns


class TranslationModule(ImageFeatures, DecodingModule):
    """Three option groups travel as one object each (YAML: `rnn:`, `search:`, `image:` under
    init_args): `rnn` the recurrent options of encoder and decoder (RecurrentOptions; `peephole`
    and `gru_reset_after=False` select the seeds' cell variants, on the cell path), `search` the
    test decoding (and validation's with val_decode: beam), `image` the CNN of a multimodal model
    (fusion other than "none"; see seq2seq/modules/vision.py)."""

    task = "translation"
    vocab_sizes = {"src_vocab": "src_vocab_size", "tgt_vocab": "tgt_vocab_size"}
    vocab_hint = "data_dir and tokenizer options"
    output_key = "index"

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        rnn: RecurrentOptions = RecurrentOptions(dropout=0.2),
        bidirectional: bool = True,
        context: Literal["fixed", "attention"] = "attention",
        attention: Literal["bahdanau", "luong_dot", "luong_general"] = "bahdanau",
        input_feeding: bool = True,
        tie_embeddings: bool = False,
        label_smoothing: float = 0.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_patience: int = 2,  # validations without a better val BLEU before the LR is cut
        lr_factor: float = 0.5,
        val_decode: Literal["greedy", "beam"] = "greedy",
        search: SearchOptions = SearchOptions(method="beam", beam_size=5, alpha=0.6),
        num_samples: int = 5,
        unk_replace: bool = True,
        fusion: Literal["none", "decinit", "flat", "doubly"] = "none",
        image: ImageOptions = ImageOptions(),
    ):
        super().__init__()
        self.rnn, self.search, self.image = (
            as_options(RecurrentOptions, rnn),
            as_options(SearchOptions, search),
            as_options(ImageOptions, image),
        )
        self.save_options()
        self.image_encoder: ImageEncoder | None = None
        if fusion != "none":
            with torch.random.fork_rng(devices=[]):  # the text model's initial weights stay as without it
                self.image_encoder = self.image.encoder("grid")
        self.model = Seq2Seq(
            src_vocab_size, tgt_vocab_size, self.rnn, bidirectional=bidirectional, context=context,
            attention=attention, input_feeding=input_feeding, tie_embeddings=tie_embeddings, fusion=fusion,
            image_size=self.image_encoder.feature_dim if self.image_encoder is not None else 0,
        )  # fmt: skip

    @property
    def multimodal(self) -> bool:
        return self.image_encoder is not None

    def setup(self, stage: str) -> None:
        super().setup(stage)  # the vocabularies
        if isinstance(dm := getattr(self._trainer, "datamodule", None), OptionalImages):
            dm.use_images(self.multimodal)  # a text-only model on multimodal data reads no image
        if self.multimodal:
            self.prepare_images(stage, {"fit": ("train", "dev"), "validate": ("dev",), "test": ("test",)})

    def image_of(self, batch: dict) -> Tensor | None:
        """(B, R, C) grid features of the batch's images, or None for a text-only model."""
        if not self.multimodal:
            return None
        if "features" not in batch and "images" not in batch:
            raise ValueError(
                f"fusion={self.hparams.fusion!r} needs images: use "
                "data.datamodules.multimodal.MultimodalDataModule"
            )
        return self.image_features(batch)

    def use_vocab_state(self, state: dict) -> None:
        self.src_vocab = Vocabulary.from_list(state["src_vocab"])
        self.tgt_vocab = Vocabulary.from_list(state["tgt_vocab"])
        self.src_tokenizer: Tokenizer = tokenizer_from_state(state["src_tokenizer"])
        self.tgt_tokenizer: Tokenizer = tokenizer_from_state(state["tgt_tokenizer"])

    # -- training -----------------------------------------------------------------------------
    def _loss(self, batch: dict, label_smoothing: float) -> tuple[Tensor, int]:
        src, lengths, tgt_in = batch["src"], batch["src_lengths"], batch["tgt_in"]
        o, _ = self.model.features(src, lengths, tgt_in, image=self.image_of(batch))  # (B, T, O)
        real = batch["tgt_out"] != PAD  # the output layer and the loss skip the padding
        out = self.model.decoder.output
        loss = linear_cross_entropy(o[real], out.weight, out.bias, batch["tgt_out"][real], label_smoothing)
        return loss, int(real.sum())

    def eval_loss(self, batch: dict) -> tuple[Tensor, int]:
        return self._loss(batch, 0.0)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss, tokens = self._loss(batch, self.hparams.label_smoothing)
        B = batch["src"].shape[0]
        self.log("train_loss", loss, prog_bar=True, batch_size=B)
        self.log("train_ppl", perplexity(loss.item()), batch_size=B)
        self.log("train_tokens", float(tokens), reduce_fx="sum", batch_size=B)
        return loss

    # -- validation and test: real decoding ---------------------------------------------------
    @property
    def max_src_len(self) -> int:
        """Sources are cut to the training max_len before decoding, as seq2seq.translation.cli and
        seq2seq.translation.evaluate cut them (Translator.encode), so `seq2seq test` gives their BLEU."""
        return int((self.vocab_state or {}).get("max_len") or 100)

    def decode_batch(self, batch: dict, method: str, return_attention: bool = False):
        src, lengths = batch["src"][:, : self.max_src_len], batch["src_lengths"].clamp(max=self.max_src_len)
        hyps = self.model.translate(
            src, lengths, replace(self.search, method=method, n_best=1), return_attention=return_attention,
            image=self.image_of(batch),
        )  # fmt: skip
        return [h[0] for h in hyps]

    def decode_outputs(self, batch: dict, prefix: str, method: str) -> list[dict]:
        outputs = []
        hyps = self.decode_batch(batch, method, return_attention=prefix == "val" or self.hparams.unk_replace)
        for b, h in enumerate(hyps):
            tokens_out = self.tgt_vocab.decode(h.tokens)
            if self.hparams.unk_replace:
                src_tokens = self.src_tokenizer.tokenize(batch["src_text"][b])[: self.max_src_len]
                tokens_out = replace_unknowns(tokens_out, h.attention, src_tokens)
            n = min(int(batch["src_lengths"][b]), self.max_src_len)
            outputs.append(
                {
                    "index": batch["index"][b],
                    "src": batch["src_text"][b],
                    "ref": batch["tgt_text"][b],
                    "hyp": self.tgt_tokenizer.detokenize(tokens_out),
                    "hyp_tokens": tokens_out,
                    "src_tokens": self.src_vocab.decode(batch["src"][b, :n].tolist()),
                    "attention": None if h.attention is None else h.attention[:, :n].cpu(),  # source part
                }
            )
        return outputs

    def score_outputs(self, prefix: str, outputs: list[dict]) -> tuple[float, str]:
        refs = [o["ref"] for o in outputs]
        bleu, signature = sacre_bleu([o["hyp"] for o in outputs], refs)
        self.bleu_signature = signature
        self.log(f"{prefix}_bleu", bleu, prog_bar=True)
        if prefix == "test":
            self.test_outputs = outputs  # for experiments that score more than BLEU
            copy, _ = sacre_bleu([o["src"] for o in outputs], refs)
            self.log("test_copy_bleu", copy, rank_zero_only=True)
        return bleu, f"{prefix} BLEU {bleu:.2f} on {len(outputs)} sentences; sacreBLEU {signature}"

    def log_samples(self, prefix: str, samples: list[dict], header: str) -> None:
        """samples/{prefix}_epochNNN.txt, attention/{prefix}_epochNNN_i.png, and the same to wandb."""
        rows = [[o["src"], o["hyp"], o["ref"]] for o in samples]
        self.write_samples(prefix, "\n\n".join([header] + [f"SRC {s}\nHYP {h}\nREF {r}" for s, h, r in rows]))
        plots = []
        for i, o in enumerate(samples[:3]):
            if o["attention"] is not None and o["hyp_tokens"]:
                path = self.run_dir / "attention" / f"{prefix}_epoch{self.current_epoch:03d}_{i}.png"
                plots.append(attention_heatmap(o["attention"], o["src_tokens"], o["hyp_tokens"], path))
        self.wandb_table(f"{prefix}_samples", ["source", "output", "reference"], rows)
        self.wandb_images(f"{prefix}_attention", plots)
