"""The one way to load a trained seqcap model for inference.

    from seq2seq.predictor import Predictor

    p = Predictor.from_checkpoint("runs/.../checkpoints/last.ckpt", device="auto")
    p.translate(["a sentence", ...])              # translation (and multimodal): Translator
    p.generate(num=5) / p.score(["a sentence"])   # language model: LanguageModelPredictor
    p.caption(["photo.jpg", pil_image, ...])      # captioning: Captioner
    p.answer("photo.jpg", ["what colour ...?"])   # visual question answering: Answerer

    Predictor.from_checkpoint([A, B, C])          # an ensemble: one search over the mean probability
    Predictor.from_checkpoint(A, quantize="int8") # int8 products for CPU decoding

A checkpoint is read with `torch.load(weights_only=True)` (it cannot run code) and holds all that
inference needs: the hyperparameters, the weights (the CNN's too), the vocabularies and, for image
tasks, the image size and normalisation. `checkpoint["seqcap"]["task"]` names its task; checkpoints
written before the task was recorded are recognised by what they hold (`checkpoint_task`).

A task's predictor class is found through the `seqcap.predictors` entry points that pyproject.toml
declares (task name -> "module:Class"), so this module imports no task package: `seq2seq` never
imports `captioning`, and a new task registers its predictor the same way. A predictor builds its
networks from the saved hyperparameters (`build_from_hparams`), never the training module.

`Translator.from_checkpoint(path)` (any subclass) works too, and refuses a checkpoint of another
task with a message that says which command takes it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import ClassVar

import torch

from data.core.images import default_transform
from seq2seq.modules.pretrained import input_normalization
from seq2seq.training.checkpoint import CheckpointError, load_checkpoint, resolve_device

ENTRY_POINTS = "seqcap.predictors"
# what each task is called in messages, and the `seqcap` sub-command that runs it
TASKS = {
    "translation": ("translation", "seqcap translate"),
    "lm": ("language model", "seqcap generate"),
    "captioning": ("captioning", "seqcap caption"),
    "vqa": ("VQA", "seqcap answer"),
}
DEFAULT_IMAGE_SIZE = 224  # checkpoints written before "image_size" went into checkpoint["seqcap"]


def checkpoint_task(ckpt: dict, path: str | Path) -> str:
    """The task a loaded checkpoint was trained for: checkpoint["seqcap"]["task"], or for older
    checkpoints what their vocabularies say (src_vocab: translation, answers: VQA, vocab with a
    showtell/attention captioner: captioning, vocab alone: language model)."""
    meta = ckpt.get("seqcap")
    if not isinstance(meta, dict) or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{path}: not a seqcap checkpoint (no vocabularies inside); train one with `seqcap fit -c CONFIG`"
        )
    if isinstance(meta.get("task"), str):
        return meta["task"]
    if "src_vocab" in meta:
        return "translation"
    if "answers" in meta:
        return "vqa"
    if "vocab" in meta:
        hp = ckpt.get("hyper_parameters") or {}
        return "captioning" if hp.get("model") in ("showtell", "attention") else "lm"
    raise CheckpointError(f"{path}: a seqcap checkpoint of no known task (keys: {sorted(meta)})")


VOCABULARIES = ("src_vocab", "tgt_vocab", "vocab", "answers")  # lists of strings in checkpoint["seqcap"]
TOKENIZERS = ("src_tokenizer", "tgt_tokenizer", "tokenizer")


def vocabulary_difference(a: dict, b: dict) -> str | None:
    """The first difference between two checkpoints' vocabularies and tokenizers (their
    checkpoint["seqcap"] dicts), in words ("tgt_vocab id 17: 'Haus' in one, 'Hause' in the
    other"), or None when they are the same: models that share them can be ensembled or averaged."""
    for key in VOCABULARIES:
        x, y = a.get(key), b.get(key)
        if x == y:
            continue
        if x is None or y is None:
            return f"{key} in one checkpoint only"
        for i, (u, v) in enumerate(zip(x, y)):
            if u != v:
                return f"{key} id {i}: {u!r} in one, {v!r} in the other"
        return f"{key} has {len(x)} entries in one, {len(y)} in the other"
    for key in TOKENIZERS:
        if a.get(key) != b.get(key):
            return f"{key} differs ({a.get(key)!r} vs {b.get(key)!r})"
    return None


def predictor_class(task: str, path: str | Path = "") -> type[Predictor]:
    """The predictor class registered for `task` under the seqcap.predictors entry points."""
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINTS)}
    if task not in found:
        known = ", ".join(sorted(found)) or "none: install seqcap with `pip install -e .`"
        raise CheckpointError(f"{path}: no predictor for task {task!r} (registered: {known})")
    return found[task].load()


def image_transform(ckpt: dict):
    """PIL image -> (3, H, W) as the checkpoint's CNN was trained: the saved image size and mean/std
    (older checkpoints: the mean/std the backbone's weights expect, from the hyperparameters)."""
    meta, hp = ckpt["seqcap"], ckpt.get("hyper_parameters") or {}
    if "image_mean" in meta:
        mean, std = meta["image_mean"], meta["image_std"]
    else:
        mean, std = input_normalization(
            hp.get("backbone", "efficientnet_lite0"), hp.get("pretrained", True), hp.get("weights_path")
        )
    return default_transform(int(meta.get("image_size") or DEFAULT_IMAGE_SIZE), mean, std)


class Predictor(ABC):
    """Base of every task's predictor. A subclass sets `task` (a key of TASKS and its entry point's
    name) and implements `from_loaded(ckpt, path, device, **options)`."""

    task: ClassVar[str] = ""

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path | Sequence[str | Path],
        device: str | torch.device = "auto",
        quantize: str | None = None,
        **options,
    ) -> Predictor:
        """The predictor of the checkpoint's task, on `device` ("auto": cuda when there is one).
        Several paths make an ensemble (`join`): checkpoints of one task with the same vocabularies.
        quantize="int8": each model's products in int8 for CPU decoding (`quantize`; device "auto"
        then means the CPU).
        CheckpointError naming the file when it is missing, not a seqcap checkpoint, (called on a
        subclass) of another task, or of another task or vocabulary than the first of an ensemble."""
        paths = [path] if isinstance(path, (str, Path)) else list(path)
        if not paths:
            raise CheckpointError("no checkpoint given")
        if quantize not in (None, "int8"):
            raise CheckpointError(f"quantize must be None or 'int8', got {quantize!r}")
        if quantize and str(device) == "auto":
            device = "cpu"  # int8 products are CPU kernels
        device = resolve_device(device)
        if quantize and device.type != "cpu":
            raise CheckpointError(f"int8 quantization decodes on the CPU, not on {device}: use device cpu")
        predictors, first = [], None
        for p in paths:
            ckpt = load_checkpoint(p)
            task = checkpoint_task(ckpt, p)
            if cls.task and task != cls.task:
                what, command = TASKS.get(task, (task, "seqcap"))
                raise CheckpointError(
                    f"{p}: a {what} checkpoint, not a {TASKS[cls.task][0]} one; use it with `{command}`"
                )
            if first is None:
                first = (p, task, ckpt["seqcap"])
            elif task != first[1]:
                raise CheckpointError(
                    f"{p}: a {task} checkpoint, but {first[0]} is a {first[1]} one: "
                    "an ensemble takes checkpoints of one task"
                )
            elif (difference := vocabulary_difference(first[2], ckpt["seqcap"])) is not None:
                raise CheckpointError(
                    f"{p}: cannot be ensembled with {first[0]}: {difference} (an ensemble's models "
                    "share their vocabularies: train them from one data configuration)"
                )
            target = cls if cls.task else predictor_class(task, p)
            predictor = target.from_loaded(ckpt, p, device, **options)
            predictor.checkpoint = str(p)
            if quantize:
                predictor.quantize()
            predictors.append(predictor)
            del ckpt
        if len(predictors) > 1:
            predictors[0].join(predictors[1:])
        return predictors[0]

    def quantize(self) -> None:
        """The network's matrix products in int8 for CPU decoding (seq2seq.modules.quantize: the
        LSTM cells', the attention's and the output layer's weights; the CNN of an image task and
        the embeddings stay float). Its outputs may differ from fp32 at near-ties."""
        from seq2seq.modules.quantize import quantize_int8

        self.model = quantize_int8(self.model)

    def join(self, others: list[Predictor]) -> None:
        """Makes this predictor an ensemble of itself and `others` (same task and vocabularies,
        checked by from_checkpoint). A task whose predictor does not ensemble refuses."""
        raise CheckpointError(f"{TASKS[self.task][0]} checkpoints do not ensemble; give one checkpoint")

    @classmethod
    @abstractmethod
    def from_loaded(cls, ckpt: dict, path: str | Path, device: torch.device, **options) -> Predictor:
        """The task's predictor from a loaded, checked checkpoint (`options`: the task's own)."""


def add_inference_arguments(parser) -> None:
    """--device and --quantize, the options every inference CLI shares."""
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--quantize", choices=("int8",), default=None,
        help="int8 matrix products for CPU decoding (seq2seq.modules.quantize; may differ at near-ties)",
    )  # fmt: skip
