"""What the three LightningModules share (translation, language model, captioning).

SeqCapModule   the vocabularies in the checkpoint (from the datamodule's `vocab_state()` in `setup`,
               then `checkpoint["seqcap"]` as plain types, so `torch.load(weights_only=True)` reads
               it), Adam with ReduceLROnPlateau stepped right after each validation (plateau.py),
               the run folder and its sample files, wandb tables and images.
DecodingModule validation and test by real decoding: every step decodes its batch into output
               dicts, the epoch end gathers them from every process, scores them (BLEU) and writes
               samples. A subclass keeps its loss, its decoding and its metric.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from pathlib import Path
from typing import Literal, TypeVar

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from torch import Tensor

from data.core.protocols import VocabularySource
from seq2seq.training.checkpoint import legacy_defaults
from seq2seq.training.plateau import Plateau
from seq2seq.training.resume import gather, mine, random_states, set_random_states

Options = TypeVar("Options")


def as_options(kind: type[Options], value: Options | dict) -> Options:
    """An option group (a frozen dataclass: RecurrentOptions, SearchOptions, ImageOptions) as given,
    or built from the plain dict a checkpoint holds (`load_from_checkpoint` passes that)."""
    return kind(**value) if isinstance(value, dict) else value


def perplexity(loss: float) -> float:
    """exp(mean token cross-entropy in nats), capped at exp(50) for a diverged loss."""
    return math.exp(min(float(loss), 50.0))


class SeqCapModule(pl.LightningModule):
    """Subclasses call `save_hyperparameters()` (with `lr`, `weight_decay`, `lr_factor` and
    `lr_patience` among their arguments) and set:

    task          the task's name, written into checkpoint["seqcap"]["task"]: which predictor loads
                  the checkpoint (seq2seq/predictor.py)
    monitor_mode  "max" (BLEU) or "min" (loss): how the plateau reads the monitored value
    vocab_sizes   vocab_state key -> the hyperparameter its length must equal ({} for no check)
    vocab_hint    the data options that decide the vocabulary, for the mismatch message
    and implement `use_vocab_state(state)` (build the vocabularies and tokenizers it holds).
    """

    task: str = ""
    monitor_mode: Literal["min", "max"] = "max"
    vocab_sizes: dict[str, str] = {}
    vocab_hint: str = "data options"

    def __init__(self) -> None:
        super().__init__()
        self.vocab_state: dict | None = None
        self._plateau: Plateau | None = None
        self._run_dir: Path | None = None
        self._training_states: dict | None = None  # the training's random states while validating
        self._resume_states: list | None = None  # every process's, from the checkpoint resumed

    def save_options(self) -> None:
        """save_hyperparameters() of the caller's arguments, each option group as a plain dict: the
        checkpoint then holds only plain types (torch.load(weights_only=True) reads it), and
        build_from_hparams / load_from_checkpoint build the groups again."""
        self.save_hyperparameters(frame=inspect.currentframe().f_back)
        for hparams in (self._hparams, self._hparams_initial):
            for key, value in hparams.items():
                if dataclasses.is_dataclass(value):
                    hparams[key] = dataclasses.asdict(value)

    # -- vocabularies: from the datamodule, then from the checkpoint --------------------------
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if isinstance(dm, VocabularySource):
            self.set_vocab_state(dm.vocab_state())

    def set_vocab_state(self, state: dict) -> None:
        """Checks `state` against the model (sizes) and the checkpoint's (same words), then uses it."""
        for key, size_name in self.vocab_sizes.items():
            if self.vocab_state is not None and self.vocab_state[key] != state[key]:
                # vocab, src_vocab -> vocabulary, src vocabulary; answers -> answer vocabulary
                name = key.replace("_", " ") + "ulary" if key.endswith("vocab") else f"{key[:-1]} vocabulary"
                raise ValueError(
                    f"the data's {name} differs from the checkpoint's: use the {self.vocab_hint} "
                    "the checkpoint was trained with"
                )
            n, size = len(state[key]), self.hparams[size_name]
            if n != size:
                raise ValueError(f"a vocabulary of {n} entries ({key}) for a model with {size_name}={size}")
        self.vocab_state = state
        self.use_vocab_state(state)

    def use_vocab_state(self, state: dict) -> None:
        raise NotImplementedError

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """checkpoint["seqcap"]: the vocabularies, the task and, for a model with a CNN, the mean/std
        its images are normalised with (all plain types: torch.load(weights_only=True) reads it)."""
        meta = {**(self.vocab_state or {}), "task": self.task}
        encoder = getattr(self, "image_encoder", None)
        if encoder is not None:
            meta["image_mean"], meta["image_std"] = list(encoder.mean), list(encoder.std)
        checkpoint["seqcap"] = meta
        self.plateau.save(checkpoint)
        # every process's random states of the training stream (not validation's: see below)
        checkpoint["random_states"] = gather(self._training_states or random_states())

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        rnn = self.hparams.get("rnn") or {}
        for key, old in legacy_defaults(checkpoint.get("hyper_parameters") or {}).items():
            if rnn.get(key, old) != old:  # the same weights would compute another function
                raise ValueError(
                    f"this checkpoint was trained with {key}={old} (the default then); set "
                    f"model.init_args.rnn.{key}: {old} to resume or use it"
                )
        if checkpoint.get("seqcap"):
            self.set_vocab_state(checkpoint["seqcap"])
        self.plateau.load(checkpoint)
        self._resume_states = checkpoint.get("random_states")

    # -- random states: a resumed run draws what the interrupted one would have -----------------
    def on_train_start(self) -> None:
        """A resumed fit continues the random streams of the run it resumes (seq2seq/training/resume.py)."""
        if self._resume_states:
            set_random_states(mine(self._resume_states, "random states"))
        self._resume_states = None

    def on_validation_start(self) -> None:
        """Validation draws from a copy of the random states (restored at its end): where it ran,
        or whether a resumed run skipped it, does not change the training's dropout masks."""
        self._training_states = random_states()

    def on_validation_end(self) -> None:
        if self._training_states is not None:
            set_random_states(self._training_states)
        self._training_states = None

    # -- optimisation -------------------------------------------------------------------------
    @property
    def plateau(self) -> Plateau:
        if self._plateau is None:
            hp = self.hparams
            self._plateau = Plateau(self.monitor_mode, hp.lr_factor, hp.lr_patience)
        return self._plateau

    def param_groups(self) -> list[dict] | list[Tensor]:
        """What Adam optimises (a subclass may give groups with their own learning rates)."""
        return list(self.parameters())

    def configure_optimizers(self):
        """Adam; ReduceLROnPlateau on the monitored value, stepped by this module (plateau.py).

        Adam is the fused kernel (one pass over each parameter instead of a dozen elementwise ops:
        about 15% of a gettext_attention step on a 2-core CPU) on CPU and CUDA, except under
        mixed precision (16 or bf16), where Lightning refuses to clip the gradients of an
        optimizer that could unscale them inside its step."""
        hp = self.hparams
        groups = self.param_groups()
        params = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
        precision = str(self._trainer.precision) if self._trainer is not None else "32-true"
        mixed = "mixed" in precision or precision.startswith("16")
        fused = all(p.device.type in ("cpu", "cuda") for p in params) and not mixed
        optimizer = torch.optim.Adam(groups, lr=hp.lr, weight_decay=hp.weight_decay, fused=fused)
        self.plateau.attach(optimizer)
        return optimizer

    # -- the run folder -----------------------------------------------------------------------
    def resolve_run_dir(self) -> Path:
        """The logger's version folder. `trainer.log_dir` is a broadcast under DDP: call this on
        every rank (at the end of each evaluation) before rank 0 writes into `run_dir`."""
        self._run_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        return self._run_dir

    @property
    def run_dir(self) -> Path:
        if self._run_dir is None:
            if self.trainer.world_size > 1:  # resolving here, on rank 0 alone, would hang the others
                raise RuntimeError("run_dir used before resolve_run_dir() was called on every rank")
            self.resolve_run_dir()
        return self._run_dir

    def write_samples(self, prefix: str, text: str) -> Path:
        """run_dir/samples/{prefix}_epochNNN.txt."""
        path = self.run_dir / "samples" / f"{prefix}_epoch{self.current_epoch:03d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
        return path

    def wandb_table(self, key: str, columns: list[str], rows: list[list]) -> None:
        """A table to every attached WandbLogger (none: nothing happens)."""
        for logger in self.loggers:
            if isinstance(logger, WandbLogger) and rows:
                logger.log_table(key=key, columns=columns, data=rows)

    def wandb_images(self, key: str, paths: list[Path]) -> None:
        """PNG files to every attached WandbLogger."""
        for logger in self.loggers:
            if isinstance(logger, WandbLogger) and paths:
                logger.log_image(key=key, images=[str(p) for p in paths])


class DecodingModule(SeqCapModule):
    """Validation and test decode for real. A subclass implements:

    eval_loss(batch) -> (loss, tokens)            teacher-forced loss, logged as {prefix}_loss
    decode_outputs(batch, prefix, method) -> [dict]  one dict an input; `output_key` names it
    score_outputs(prefix, outputs) -> (value, header)  logs the metric; value is monitored
    log_samples(prefix, samples, header)          writes the first `num_samples` of this rank
    and has `search` (SearchOptions: the test decodes with its method). Outputs go to other
    processes without their "attention" entries (plots are drawn from this rank's own outputs).
    """

    output_key: str = "index"

    def __init__(self) -> None:
        super().__init__()
        self._outputs: list[dict] = []

    @property
    def test_decode(self) -> str:
        """The test's decoding method: the `search` option group's."""
        return self.search.method

    def _eval_step(self, batch: dict, prefix: str, method: str) -> None:
        loss, tokens = self.eval_loss(batch)
        self.log(f"{prefix}_loss", loss, batch_size=tokens, sync_dist=True)
        self._outputs.extend(self.decode_outputs(batch, prefix, method))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val", self.hparams.val_decode)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_decode)

    def gather_outputs(self) -> list[dict]:
        """Every process's outputs (one per input: a padded DDP shard may repeat some), sorted."""
        outputs, self._outputs = self._outputs, []
        if self.trainer.world_size > 1 and torch.distributed.is_initialized():
            light = [{k: v for k, v in o.items() if k != "attention"} for o in outputs]
            everything: list = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(everything, light)
            outputs = [o for part in everything for o in part]
        unique = {o[self.output_key]: o for o in outputs}
        return sorted(unique.values(), key=lambda o: o[self.output_key])

    def _eval_epoch_end(self, prefix: str) -> None:
        local = sorted(self._outputs, key=lambda o: o[self.output_key])  # this process's, with attention
        outputs = self.gather_outputs()
        if not outputs:
            return
        value, header = self.score_outputs(prefix, outputs)  # every rank has all outputs: same value
        self.resolve_run_dir()  # all ranks: a broadcast
        if prefix == "val":
            self.plateau.step(self.trainer, value)
            loss = self.trainer.callback_metrics.get("val_loss")
            if loss is not None:
                self.log("val_ppl", perplexity(loss), rank_zero_only=True)
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self.log_samples(prefix, local[: self.hparams.num_samples], header)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def eval_loss(self, batch: dict) -> tuple[Tensor, int]:
        raise NotImplementedError

    def decode_outputs(self, batch: dict, prefix: str, method: str) -> list[dict]:
        raise NotImplementedError

    def score_outputs(self, prefix: str, outputs: list[dict]) -> tuple[float, str]:
        raise NotImplementedError

    def log_samples(self, prefix: str, samples: list[dict], header: str) -> None:
        raise NotImplementedError
