"""Settings of the three protocols: defaults are the paper's recipes (ViT-B), YAML files in
`configs/` hold the others, and every field is also a command-line flag."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from crossmae.data.paths import check_data_path
from crossmae.errors import CrossMAEError
from crossmae.train.options import (
    DashesFormatter,
    add_dataclass_arguments,
    build_dataclass,
    check_output_folder,
    read_yaml,
    setting,
)
from crossmae.train.schedule import check_schedule

MODEL, DATA, OPTIM, RUN = "model", "data", "optimisation", "run"
S = TypeVar("S", bound="EvalSettings")


@dataclass
class EvalSettings:
    """What every protocol needs: a checkpoint, labeled data, and where to run."""

    checkpoint: str = setting(
        "", "checkpoint to evaluate: ours or the authors' (MAE/CrossMAE, pretrain or fine-tuned)",
        MODEL, metavar="CKPT",
    )  # fmt: skip
    img_size: int | None = setting(
        None, "input height (and width); none: the checkpoint's (positions are resampled)", MODEL
    )
    img_width: int | None = setting(None, "input width, for non-square inputs", MODEL)
    data: str | None = setting(
        None,
        "labeled images: a folder with train/ and val/ or test/ (one folder per class), tar "
        "shards with .cls labels, or none (builtin) for the built-in CIFAR-10 demo set",
        DATA,
        metavar="PATH",
    )
    eval_data: str | None = setting(
        None, "evaluation images, when they are not DATA's val/ or test/ split", DATA, "PATH"
    )
    num_classes: int | None = setting(
        None, "class count; needed for tar shards, checked against folder data sets", DATA
    )
    eval_images: int | None = setting(
        None, "use a fixed random subset of this many evaluation images", DATA
    )
    num_workers: int = setting(4, "DataLoader worker processes per process", DATA)
    batch_size: int = setting(256, "images per process and step", OPTIM)
    precision: Literal["auto", "bf16", "fp16", "fp32"] = setting(
        "auto", "auto: bf16 autocast on GPU, fp32 on CPU", OPTIM
    )
    device: str = setting("auto", "cpu, cuda, or auto (cuda when there is a GPU)", RUN, "DEV")
    seed: int = setting(0, "seed for the head's initialisation, data order and augmentation", RUN)
    output_dir: str | None = setting(
        None, "where results (and checkpoints) go (default: kNN beside the checkpoint; the others "
        "runs/<command>/<checkpoint name>, its folder's name first for a checkpoint*.pth)",
        RUN, metavar="DIR",
    )  # fmt: skip

    def image_size(self) -> tuple[int, int] | None:
        if self.img_size is None:
            if self.img_width is not None:
                raise CrossMAEError("--img-width needs --img-size (the height)")
            return None
        return self.img_size, self.img_width or self.img_size

    def run_dir(self, command: str) -> Path:
        if self.output_dir is not None:
            return Path(self.output_dir)
        path = Path(self.checkpoint)
        name = path.stem
        if name.startswith("checkpoint") and path.parent.name:  # every pretraining run's name
            name = f"{path.parent.name}-{name}"
        return Path("runs") / command / name

    def validate(self: S) -> S:
        """Raise CrossMAEError naming the first impossible setting."""
        if not self.checkpoint:
            raise CrossMAEError("--checkpoint is required")
        if not Path(self.checkpoint).is_file():  # said before torch is even imported
            raise CrossMAEError(f"checkpoint {self.checkpoint} does not exist")
        _at_least(self, 1, "batch_size", "img_size", "img_width", "num_classes", "eval_images")
        _at_least(self, 0, "num_workers")
        self.image_size()
        check_data_path(self.data)
        if self.eval_data is not None:
            check_data_path(self.eval_data, "--eval-data")
        if self.output_dir is not None:
            check_output_folder(self.output_dir)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainSplitSettings(EvalSettings):
    """Protocols that read the training split too: kNN's neighbours, the probe, fine-tuning."""

    train_images: int | None = setting(
        None, "use a fixed random subset of this many training images (quick comparisons)", DATA
    )

    def validate(self: S) -> S:
        super().validate()
        _at_least(self, 1, "train_images")
        return self


@dataclass
class ClassifierEvalSettings(EvalSettings):
    """A classifier's accuracy with its own head (MAE's main_finetune.py --eval)."""

    checkpoint: str = setting(
        "", "classifier: ours (a crossmae finetune checkpoint, a linprobe run's "
        "classifier.pth, or their timm exports) or the authors' (fine-tuned or linear probe)",
        MODEL, metavar="CKPT",
    )  # fmt: skip
    data: str | None = setting(
        None,
        "labeled images: a folder's val/ or test/ split (or the folder itself, one folder per "
        "class), tar shards with .cls labels, or none (builtin) for the built-in CIFAR-10 demo set",
        DATA,
        metavar="PATH",
    )
    eval_data: str | None = setting(None, "evaluation images (instead of DATA)", DATA, "PATH")
    num_classes: int | None = setting(
        None, "class count, checked against the classifier's outputs", DATA
    )
    ema: bool = setting(False, "evaluate the moving average that a --ema fine-tune kept", MODEL)
    seed: int = setting(0, "seed for the --eval-images subset", RUN)
    output_dir: str | None = setting(
        None, "where eval.json (eval-ema.json) goes (default: beside the checkpoint, as "
        "<name>.eval.json)",
        RUN, metavar="DIR",
    )  # fmt: skip


@dataclass
class TrainedSettings(TrainSplitSettings):
    """Protocols that train something (a head, or the whole network) for some epochs."""

    samples_per_epoch: int | None = setting(
        None, "training images per epoch for tar shards, which have no length", DATA
    )
    epochs: int = setting(100, "epochs to train", OPTIM)
    accum_iter: int = setting(
        1, "batches accumulated per optimizer step (effective batch: × this × processes)", OPTIM
    )
    warmup_epochs: float = setting(5.0, "epochs of linear learning-rate warmup", OPTIM)
    blr: float = setting(5e-4, "base learning rate: lr = blr × effective batch / 256", OPTIM)
    lr: float | None = setting(None, "absolute learning rate (overrides --blr)", OPTIM)
    min_lr: float = setting(1e-6, "learning rate at the end of the cosine decay", OPTIM)
    weight_decay: float = setting(0.05, "weight decay (not on norms, biases, tokens)", OPTIM)
    resume: str | None = setting(
        None, "auto: continue from checkpoint-last.pth in --output-dir if there is one; "
        "or a checkpoint path", RUN, metavar="auto|PATH",
    )  # fmt: skip
    log_every: int = setting(20, "log (and check the loss) every N steps", RUN)
    tensorboard: bool = setting(True, "write TensorBoard scalars (if installed)", RUN)

    def validate(self: S) -> S:
        super().validate()
        _at_least(self, 1, "epochs", "accum_iter", "log_every", "samples_per_epoch")
        check_schedule(self.epochs, self.warmup_epochs, self.lr, self.blr, self.min_lr)
        if self.weight_decay < 0:
            raise CrossMAEError("--weight-decay must not be negative")
        return self


@dataclass
class FinetuneSettings(TrainedSettings):
    """MAE's end-to-end fine-tuning recipe (ViT-B defaults; configs/ has the others)."""

    global_pool: Literal["avg", "token"] = setting(
        "avg", "avg: mean of patch tokens + fc_norm (MAE); token: [CLS] after the final norm",
        MODEL,
    )  # fmt: skip
    drop_path: float = setting(0.1, "stochastic depth rate", MODEL)
    batch_size: int = setting(128, "images per process and step", OPTIM)
    grad_checkpointing: bool = setting(
        False,
        "recompute each block in the backward instead of keeping its activations: a "
        "fraction of the memory for about a third more compute",
        OPTIM,
    )
    layer_decay: float = setting(0.65, "layer-wise lr decay (0.65 ViT-S/B, 0.75 L/H)", OPTIM)
    clip_grad: float | None = setting(None, "clip the gradient norm to this value", OPTIM)
    auto_augment: str | None = setting(
        "rand-m9-mstd0.5-inc1", "timm RandAugment policy; none: off", OPTIM, "POLICY"
    )
    reprob: float = setting(0.25, "random erasing probability", OPTIM)
    mixup: float = setting(0.8, "mixup alpha (0: off)", OPTIM)
    cutmix: float = setting(1.0, "cutmix alpha (0: off)", OPTIM)
    smoothing: float = setting(0.1, "label smoothing", OPTIM)
    ema: bool = setting(False, "also keep (and evaluate) an exponential moving average", OPTIM)
    ema_decay: float = setting(0.9999, "EMA decay per step", OPTIM)

    def validate(self) -> FinetuneSettings:
        super().validate()
        for name in ("drop_path", "reprob", "smoothing"):
            if not 0 <= getattr(self, name) < 1:
                raise CrossMAEError(f"--{name.replace('_', '-')} must be in [0, 1)")
        if self.mixup < 0 or self.cutmix < 0:
            raise CrossMAEError("--mixup and --cutmix must not be negative")
        if (self.mixup > 0 or self.cutmix > 0) and self.batch_size % 2:
            raise CrossMAEError(
                f"mixup and cutmix need an even --batch-size, got {self.batch_size}"
            )
        if not 0 < self.layer_decay <= 1 or not 0 < self.ema_decay < 1:
            raise CrossMAEError("--layer-decay must be in (0, 1] and --ema-decay in (0, 1)")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise CrossMAEError(f"--clip-grad must be positive, got {self.clip_grad}")
        if self.auto_augment:
            from crossmae.eval.augment import check_policy  # timm: imported when needed

            check_policy(self.auto_augment)
        return self


@dataclass
class LinprobeSettings(TrainedSettings):
    """MAE's linear probe: frozen encoder, BatchNorm + linear head, LARS, 90 epochs."""

    features: Literal["avg", "token", "fused"] = setting(
        "avg", "avg: patch-token mean + parameter-free fc_norm (as MAE fine-tuning starts); "
        "token: [CLS]; fused: CrossMAE's fused encoder layers", MODEL,
    )  # fmt: skip
    cached: bool = setting(
        False, "extract features once (no augmentation) and train the head on them: fast", MODEL
    )
    epochs: int = setting(90, "epochs to train", OPTIM)
    warmup_epochs: float = setting(10.0, "epochs of linear learning-rate warmup", OPTIM)
    batch_size: int = setting(512, "images (or cached features) per process and step", OPTIM)
    blr: float = setting(0.1, "base learning rate: lr = blr × effective batch / 256", OPTIM)
    min_lr: float = setting(0.0, "learning rate at the end of the cosine decay", OPTIM)
    weight_decay: float = setting(0.0, "LARS weight decay", OPTIM)


@dataclass
class KnnSettings(TrainSplitSettings):
    """Weighted kNN on frozen features (DINO's protocol)."""

    features: Literal["avg", "token", "fused"] = setting(
        "avg", "avg: patch-token mean + parameter-free fc_norm; token: [CLS]; fused: "
        "CrossMAE's fused encoder layers", MODEL,
    )  # fmt: skip
    k: int = setting(20, "neighbours that vote", MODEL)
    temperature: float = setting(0.07, "votes weigh exp(cosine similarity / temperature)", MODEL)

    def validate(self) -> KnnSettings:
        super().validate()
        _at_least(self, 1, "k")
        if self.temperature <= 0:
            raise CrossMAEError(f"--temperature must be positive, got {self.temperature}")
        return self


def _at_least(settings: Any, low: int, *names: str) -> None:
    for name in names:
        value = getattr(settings, name)
        if value is not None and value < low:
            raise CrossMAEError(f"--{name.replace('_', '-')} must be at least {low}, got {value}")


def add_settings_arguments(parser: argparse.ArgumentParser, cls: type, description: str) -> None:
    """`--config FILE.yaml` and one flag per setting, as `crossmae pretrain` has."""
    parser.formatter_class = DashesFormatter
    parser.description = description
    parser.add_argument(
        "--config", metavar="FILE.yaml", help="YAML file of settings (a recipe from configs/)"
    )
    add_dataclass_arguments(parser, cls)


def settings_from_args(cls: type[S], args: argparse.Namespace) -> S:
    """Defaults, then the YAML file, then the flags given, validated."""
    layers = [read_yaml(args.config)] if args.config else []
    flags = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)
    }
    return build_dataclass(cls, *layers, flags, source=args.config or "").validate()
