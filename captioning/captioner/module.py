"""CaptioningModule: a pretrained CNN + ShowTell / ShowAttendTell trained with cross-entropy or
self-critically (SCST), validated with real decoding (greedy or beam, never teacher-forced) and the
COCO caption metrics.

Loss (seed 002 eq. 8.51): J = -sum_t log y~_t(z_t), the mean cross-entropy over the caption tokens
(w_1 .. <eos>), PAD ignored. With `self_critical: true` the loss is SCST's instead
(captioning/captioner/scst.py): `scst_samples` captions sampled per image, rewarded with CIDEr-D
against the image's references (document frequencies of the training captions, cached beside the
feature cache), the baseline the greedy caption's reward (`scst_baseline: greedy`) or the mean of
the image's other samples (`mean`); training batches are then images with all their references,
dropout is off in SCST steps, and `init_checkpoint` (a cross-entropy checkpoint of the same data)
gives the starting weights.
train_reward and train_baseline are logged every step; run_dir/plots/reward.png draws them.

Metrics (captioning/captioner/metrics.py, one function for validation, test and
captioning.captioner.evaluate):
pycocoevalcap's BLEU-1..4, METEOR (when java is on PATH), ROUGE-L and CIDEr-D, 0-100, logged as
`{val,test}_bleu1..4`, `_meteor`, `_rouge_l`, `_cider`, and nltk's corpus BLEU as `_nltk_bleu1..4`.
`monitor` (default cider) is the one the learning-rate plateau reads, and the CLI's checkpoint and
early stopping too (seq2seq/training/cli.py: val_<monitor>); run_dir/plots/metrics.png draws them by epoch.

Images: the datamodule's default transform (Resize to image_size x image_size, ToTensor, Normalize)
takes the backbone's mean/std (`setup` calls `CaptionDataModule.use_normalization`): (x - 127) / 128
for the packaged EfficientNet-Lite0 weights, ImageNet mean/std for torchvision backbones. The configs
set `image_size: 224`, the backbones' own input size.

Feature cache: with a frozen CNN (train_backbone="none", cache_features=True, the default) the
datamodule serves CNN features computed once per image and transform (seq2seq/training/image_features.py,
data/core/features.py); the key covers the backbone, a digest of its weights, the output kind
(global/grid), the transform and the image files. A random (augmenting) transform is not cached.

Optimisation: Adam with two parameter groups, the CNN's trainable parameters at `backbone_lr`
(an empty group with train_backbone="none") and everything else at `lr`; ReduceLROnPlateau on
val_<monitor> (val_cider by default), stepped right after each validation (as in TranslationModule).
The vocabulary travels in checkpoint["seqcap"] as plain lists, so `torch.load(..., weights_only=True)`
reads it (the shared layer: seq2seq/training/module.py).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from captioning.captioner import scst
from captioning.captioner.metrics import CiderD, caption_metrics, cider_d_for, format_metrics, java_available
from captioning.captioner.network import CAPTION_RNN, CAPTION_SEARCH, ShowAttendTell, ShowTell
from data.core.protocols import CaptionReferences
from data.core.vocab import PAD, Vocabulary
from seq2seq.modules.rnn import RecurrentOptions
from seq2seq.modules.vision import ImageEncoder, ImageOptions
from seq2seq.search import SearchOptions
from seq2seq.training.checkpoint import CheckpointError
from seq2seq.training.image_features import ImageFeatures, backbone_param_groups
from seq2seq.training.module import DecodingModule, as_options, perplexity

Monitor = Literal["cider", "bleu4", "meteor", "rouge_l", "nltk_bleu4"]


class CaptioningModule(ImageFeatures, DecodingModule):
    """Option groups (YAML `rnn:`, `image:`, `search:` under init_args): `rnn` the decoder's
    recurrent options (RecurrentOptions; `peephole` and `gru_reset_after=False` are the seeds'
    cell variants), `image` the CNN (ImageOptions), `search` the test's decoding and the longest
    caption (`max_len`, also SCST's samples)."""

    task = "captioning"
    vocab_sizes = {"vocab": "vocab_size"}
    vocab_hint = "source and min_freq"
    output_key = "path"  # a padded DDP shard may repeat images: one output per image

    def __init__(
        self,
        vocab_size: int,
        model: Literal["showtell", "attention"] = "showtell",
        rnn: RecurrentOptions = CAPTION_RNN,
        image: ImageOptions = ImageOptions(),
        search: SearchOptions = CAPTION_SEARCH,  # the test's decoding; max_len limits every caption
        tie_embeddings: bool = False,
        image_every_step: bool = False,  # ShowTell only
        global_pool: int = 1,  # ShowTell only: the image vector pools the CNN map to k x k (C*k*k values)
        lr: float = 1e-3,
        backbone_lr: float = 1e-4,
        weight_decay: float = 0.0,
        lr_patience: int = 2,  # validations without a better val_<monitor> before the LRs are cut
        lr_factor: float = 0.5,
        val_decode: Literal["greedy", "beam"] = "greedy",
        num_samples: int = 5,
        monitor: Monitor = "cider",  # val_<monitor> picks the checkpoint and drives the plateau
        self_critical: bool = False,  # SCST (captioning/captioner/scst.py) instead of cross-entropy
        scst_samples: int = 5,  # captions sampled per image
        scst_baseline: Literal["greedy", "mean"] = "greedy",
        init_checkpoint: str | None = None,  # weights to start from (e.g. a cross-entropy run for SCST)
    ):
        super().__init__()
        if monitor not in Monitor.__args__:
            raise ValueError(f"monitor must be one of {', '.join(Monitor.__args__)}, got {monitor!r}")
        if monitor == "meteor" and not java_available():
            raise ValueError("monitor: meteor needs java on PATH; install a Java runtime or monitor cider")
        if scst_baseline not in ("greedy", "mean"):
            raise ValueError(f"scst_baseline must be 'greedy' or 'mean', got {scst_baseline!r}")
        if scst_samples < (2 if scst_baseline == "mean" else 1):
            raise ValueError(
                f"scst_samples={scst_samples}: SCST needs at least one sample per image, "
                "two with baseline 'mean'"
            )
        if model not in ("showtell", "attention"):
            raise ValueError(f"model must be 'showtell' or 'attention', got {model!r}")
        if image_every_step and model != "showtell":
            raise ValueError("image_every_step applies to model='showtell' only")
        if global_pool != 1 and model != "showtell":
            raise ValueError("global_pool applies to model='showtell' only (attention reads the whole grid)")
        self.rnn, self.image = as_options(RecurrentOptions, rnn), as_options(ImageOptions, image)
        self.search = as_options(SearchOptions, search)
        if self.search.max_len is None:
            self.search = replace(self.search, max_len=CAPTION_SEARCH.max_len)
        self.save_options()
        # ShowTell projects the global vector into E's space itself (image_proj): no encoder proj
        self.encoder = self.image.encoder(
            "global" if model == "showtell" else "grid", global_pool=global_pool
        )
        C = self.encoder.feature_dim
        if model == "showtell":
            self.model = ShowTell(
                vocab_size, C, self.rnn, tie_embeddings=tie_embeddings, image_every_step=image_every_step
            )
        else:
            self.model = ShowAttendTell(vocab_size, C, self.rnn, tie_embeddings=tie_embeddings)
        self.vocab: Vocabulary | None = None
        self.cider: CiderD | None = None  # SCST's reward, set up in setup("fit")
        self._initialized = False  # init_checkpoint loaded
        self.history: dict[str, list] = {"epochs": [], "rewards": []}  # for the plots; in the checkpoint

    @property
    def image_encoder(self) -> ImageEncoder:
        return self.encoder

    # -- vocabulary from the datamodule, images from the feature cache (seq2seq/training/image_features.py)
    def setup(self, stage: str) -> None:
        super().setup(stage)  # the vocabulary
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if self.hparams.self_critical and stage == "fit" and isinstance(dm, CaptionReferences):
            dm.use_image_batches(True)  # SCST samples per image and scores against all references
        self.prepare_images(stage)
        if self.hparams.init_checkpoint and not self._initialized:  # once: later stages keep the training
            self.load_initial_weights(self.hparams.init_checkpoint)
            self._initialized = True
        if self.hparams.self_critical and stage == "fit":
            if not isinstance(dm, CaptionReferences):
                raise ValueError("self_critical needs a CaptionDataModule (the training references)")
            self.cider, hit = cider_d_for(dm.references("train"), dm.feature_cache_dir())
            rank_zero_info(
                f"[scst] CIDEr-D document frequencies of {self.cider.images} training images "
                f"({'from the cache' if hit else 'computed and cached'} in {dm.feature_cache_dir()})"
            )

    def load_initial_weights(self, path: str) -> None:
        """The weights of checkpoint `path` (same model and vocabulary), once, at the first setup;
        a checkpoint Lightning is given (--ckpt_path: resume, validate, test) loads after this."""
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as e:
            raise CheckpointError(f"init_checkpoint {path}: cannot read it ({e})") from e
        vocab = (ckpt.get("seqcap") or {}).get("vocab")
        if self.vocab_state is not None and vocab != self.vocab_state["vocab"]:
            raise CheckpointError(
                f"init_checkpoint {path}: its vocabulary differs from the data's; use the data "
                "options it was trained with"
            )
        try:
            self.load_state_dict(ckpt["state_dict"])
        except (KeyError, RuntimeError) as e:
            raise CheckpointError(
                f"init_checkpoint {path}: its weights do not fit this model ({str(e).splitlines()[0]}); "
                "use the model options it was trained with"
            ) from e

    def use_vocab_state(self, state: dict) -> None:
        self.vocab = Vocabulary.from_list(state["vocab"])

    # -- training -----------------------------------------------------------------------------
    def forward(self, images: Tensor, captions_in: Tensor) -> Tensor:
        """images: (B, 3, H, W), captions_in: (B, T) -> logits (B, T, V)."""
        return self.model(self.encoder(images), captions_in)

    def eval_loss(self, batch: dict) -> tuple[Tensor, int]:
        logits = self.model(self.image_features(batch), batch["captions_in"])  # (B, T, V)
        target = batch["captions_out"]
        loss = F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(), ignore_index=PAD)
        return loss, int((target != PAD).sum())

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        if self.hparams.self_critical:
            return self.self_critical_step(batch)
        loss, _ = self.eval_loss(batch)
        B = batch["captions_in"].shape[0]
        self.log("train_loss", loss, prog_bar=True, batch_size=B)
        self.log("train_ppl", perplexity(loss.item()), batch_size=B)
        return loss

    def self_critical_step(self, batch: dict) -> Tensor:
        """SCST on a batch of images with their references (captioning/captioner/scst.py)."""
        hp = self.hparams
        features = self.image_features(batch)
        B, k = features.shape[0], hp.scst_samples
        repeated = features.repeat_interleave(k, 0)  # image b's samples at rows b*k .. b*k+k-1
        self.model.eval()  # dropout off: the samples' log-probabilities are those they were drawn with
        try:
            # the draws of step n depend on (seed, rank, n) alone: a resumed run samples as a straight one
            seed = (torch.initial_seed() * 1_000_003 + self.global_rank * 7_919 + self.global_step) % 2**63
            generator = torch.Generator(device=features.device).manual_seed(seed)
            hyps = self.model.caption(repeated, replace(self.search, method="sample"), generator=generator)
            samples = [h[0].tokens for h in hyps]
            refs = [r for r in batch["references"] for _ in range(k)]
            rewards = self._rewards(samples, refs).view(B, k)
            if hp.scst_baseline == "greedy":
                greedy = [
                    h[0].tokens for h in self.model.caption(features, replace(self.search, method="greedy"))
                ]
                baselines = self._rewards(greedy, batch["references"]).view(B, 1).expand(B, k)
            else:
                baselines = scst.mean_of_others(rewards)
            captions_in, targets = scst.sample_batch(samples, self.search.max_len, features.device)
            # cuDNN has no backward for an RNN run in eval mode: the teacher-forced pass, whose
            # gradient this step takes, runs on PyTorch's own RNN kernels instead (CUDA only)
            with torch.backends.cudnn.flags(enabled=features.device.type != "cuda"):
                log_probs = scst.sequence_log_probs(self.model(repeated, captions_in), targets)
        finally:
            self.model.train()
        loss = scst.self_critical_loss(log_probs, rewards.flatten(), baselines.flatten())
        reward, baseline = float(rewards.mean()), float(baselines.mean())
        self.log("train_loss", loss, prog_bar=True, batch_size=B)
        self.log("train_reward", reward, prog_bar=True, batch_size=B)
        self.log("train_baseline", baseline, batch_size=B)
        if self.trainer.is_global_zero:
            self.history["rewards"].append([int(self.global_step), reward, baseline])
        return loss

    def _rewards(self, samples: list[list[int]], refs: list[list[list[str]]]) -> Tensor:
        """CIDEr-D (document frequencies of the training captions) of each sample: (N,) float."""
        words = [self.vocab.decode(s) for s in samples]
        return torch.as_tensor(self.cider.scores(words, refs), dtype=torch.float32, device=self.device)

    # -- validation and test: real decoding ---------------------------------------------------
    def decode_batch(self, batch: dict, method: str, return_attention: bool = False) -> list:
        """A batch (images or cached features) -> one hypothesis per image (seq2seq.search.Hypothesis:
        token ids without specials, score, and with return_attention (attention model only) the
        attention (len(tokens), HW) over the feature grid)."""
        if self.vocab is None:
            raise RuntimeError("no vocabulary: fit/validate with a CaptionDataModule or load a checkpoint")
        hyps = self.model.caption(
            self.image_features(batch), replace(self.search, method=method, n_best=1),
            return_attention=return_attention,
        )  # fmt: skip
        return [h[0] for h in hyps]

    def decode_outputs(self, batch: dict, prefix: str, method: str) -> list[dict]:
        attends = self.hparams.model == "attention"  # kept for the attention overlays of the samples
        return [
            {
                "image_id": batch["image_ids"][b],
                "path": batch["paths"][b],
                "hyp": self.vocab.decode(h.tokens),
                "refs": batch["references"][b],
                "attention": None if h.attention is None else h.attention.float().cpu(),
            }
            for b, h in enumerate(self.decode_batch(batch, method, return_attention=attends))
        ]

    def score_outputs(self, prefix: str, outputs: list[dict]) -> tuple[float, str]:
        scores = caption_metrics([o["hyp"] for o in outputs], [o["refs"] for o in outputs])
        monitor = self.hparams.monitor
        for key, value in scores.items():
            if value is not None:
                self.log(f"{prefix}_{key}", value, prog_bar=key == monitor)
        if prefix == "val" and self.fitting and self.trainer.is_global_zero:
            self.history["epochs"].append([int(self.current_epoch), scores])
        header = f"{prefix} {format_metrics(scores)} on {len(outputs)} images (pycocoevalcap, nltk)"
        return scores[monitor], header

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.trainer.is_global_zero and self.fitting:
            self.plot_history()

    @property
    def fitting(self) -> bool:
        """Validation of a fit (not its sanity check, not `validate`): what the history records."""
        return self.trainer.state.fn == TrainerFn.FITTING and not self.trainer.sanity_checking

    def plot_history(self) -> None:
        """run_dir/plots/metrics.png (validation metrics by epoch) and, for SCST,
        run_dir/plots/reward.png (mean reward and baseline by step); also to wandb."""
        from captioning.captioner.visualize import metrics_plot, reward_plot

        plots = []
        if self.history["epochs"]:
            plots.append(metrics_plot(self.history["epochs"], self.run_dir / "plots" / "metrics.png"))
        if self.history["rewards"]:
            plots.append(reward_plot(self.history["rewards"], self.run_dir / "plots" / "reward.png"))
        self.wandb_images("plots", plots)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["seqcap_history"] = self.history

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.history = checkpoint.get("seqcap_history") or {"epochs": [], "rewards": []}

    def log_samples(self, prefix: str, samples: list[dict], header: str) -> None:
        """samples/{prefix}_epochNNN.txt and .png (the images with their captions and first
        reference); for an attention model attention/{prefix}_epochNNN_i.png per sample (where
        each word looks on the image); wandb tables and images when a WandbLogger is attached."""
        from captioning.captioner.visualize import caption_grid
        from seq2seq.training.plots import attention_overlay

        epoch = self.current_epoch
        rows = [[o["path"], " ".join(o["hyp"]), " | ".join(" ".join(r) for r in o["refs"])] for o in samples]
        text = "\n\n".join([header] + [f"IMG {p}\nHYP {h}\nREF {r}" for p, h, r in rows])
        path = self.write_samples(prefix, text)
        grid = caption_grid(rows, path.with_suffix(".png"), title=header) if rows else None
        plots = []
        for i, o in enumerate(samples[:3]):
            if o["attention"] is None or not o["hyp"]:
                continue
            try:
                png = self.run_dir / "attention" / f"{prefix}_epoch{epoch:03d}_{i}.png"
                title = Path(o["path"]).name
                plots.append(attention_overlay(o["path"], o["hyp"], o["attention"], png, title=title))
            except (OSError, ValueError) as e:  # an image gone since it was read: the run goes on
                rank_zero_warn(f"no attention plot for {o['path']}: {e}")
        if any(isinstance(logger, WandbLogger) for logger in self.loggers):
            import wandb

            images = [[wandb.Image(p), h, r] for p, h, r in rows]
            self.wandb_table(f"{prefix}_samples", ["image", "output", "references"], images)
            self.wandb_images(f"{prefix}_captions", [grid] if grid is not None else [])
            self.wandb_images(f"{prefix}_attention", plots)

    # -- optimisation -------------------------------------------------------------------------
    def param_groups(self) -> list[dict]:
        """[CNN parameters that train at backbone_lr (possibly none), the rest at lr]."""
        hp = self.hparams
        return backbone_param_groups(self, self.encoder, hp.lr, hp.backbone_lr, "decoder")
