"""Every setting of a pretraining run; the paper's defaults, and the built-in demo.

The defaults are the paper's pretraining recipe (AdamW 0.9/0.95, blr 1.5e-4, wd 0.05, 800
epochs, 40 warmup). Without `--model`, a run is the demo: `DEMO` settings sit under the
user's, so `crossmae pretrain` alone trains a small CrossMAE on the CIFAR-10 images shipped
in the package, on a CPU, in a few minutes. The recipes in `configs/` set these keys; any
key can also be given on the command line.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from crossmae.data.paths import check_data_path
from crossmae.errors import CrossMAEError
from crossmae.train.options import check_output_folder, coerce, setting
from crossmae.train.schedule import check_schedule

if TYPE_CHECKING:
    from crossmae.models.config import AutoencoderConfig

# `crossmae pretrain` without --model: a model and schedule that learn visibly in minutes on
# a laptop CPU (a fifth of the paper's 800 epochs would take that laptop a year).
DEMO: dict[str, Any] = {
    "model": "crossmae_vit_tiny_patch4_32",
    "model_overrides": {"embed_dim": 128, "num_heads": 4, "depth": 4, "decoder_depth": 2},
    "epochs": 3,
    "warmup_epochs": 0.5,
    "batch_size": 64,
    "blr": 1.2e-2,  # lr 1e-3 at batch 64 after the γ/p = 1/3 scaling
}

MODEL, DATA, OPTIM, RUN, SAVE, WATCH = (
    "model",
    "data",
    "optimisation",
    "run",
    "checkpoints",
    "monitoring",
)


@dataclass
class PretrainConfig:
    # model
    model: str = setting(
        DEMO["model"],
        "registered model name (see `crossmae models`)",
        MODEL,
        metavar="NAME",
        shown="the demo: "
        + " ".join(str(v) for v in DEMO.values() if not isinstance(v, (dict, float, int)))
        + " with "
        + " ".join(f"{k}={v}" for k, v in DEMO["model_overrides"].items())
        + ", trained with "
        + " ".join(f"{k}={v}" for k, v in DEMO.items() if isinstance(v, (int, float))),
    )
    model_overrides: dict[str, Any] = setting(  # noqa: RUF009 (a field with help, copied)
        {}, "change any field of the model config, e.g. depth=6 decoder_depth=4", MODEL
    )
    img_size: int | None = setting(None, "input resolution in pixels", MODEL, shown="the model's")
    mask_ratio: float | None = setting(
        None, "fraction p of patches masked", MODEL, "P", "the model's, 0.75"
    )
    prediction_ratio: float | None = setting(
        None, "fraction γ of ALL patches that CrossMAE decodes and scores, γ <= p", MODEL,
        "G", "the model's",
    )  # fmt: skip
    norm_pix_loss: bool | None = setting(
        None, "regress per-patch normalised pixels", MODEL, shown="the model's, true"
    )
    # data
    data: str | None = setting(
        None,
        "image folder (PATH/train/<class>/*, PATH/<class>/* or a flat folder), .tar shards "
        "(file, folder or pattern like shards-{000..099}.tar); none or builtin = the built-in "
        "CIFAR-10 demo set",
        DATA,
        "PATH",
        "the built-in demo set",
    )
    samples_per_epoch: int | None = setting(
        None, "images per epoch for tar shards, which have no length (e.g. 1281167)", DATA
    )
    train_images: int | None = setting(
        None, "train on a fixed random subset of this many images (quick comparisons)", DATA
    )
    in_memory: bool | None = setting(
        None,
        "decode the images once and augment batches on the training device; auto: when the "
        "data set is a folder of images at the model's size that fits in 2 GiB",
        DATA,
        shown="auto",
    )
    num_workers: int = setting(8, "DataLoader worker processes per training process", DATA)
    pin_memory: bool = setting(True, "pin host memory for faster copies to the GPU", DATA)
    # optimisation
    epochs: int = setting(800, "epochs to train", OPTIM)
    warmup_epochs: float = setting(40, "epochs of linear learning-rate warmup", OPTIM)
    batch_size: int = setting(
        64, "images per process and step (effective: × accum-iter × processes)", OPTIM
    )
    accum_iter: int = setting(1, "micro-batches accumulated per optimizer step", OPTIM)
    blr: float = setting(1.5e-4, "base learning rate: lr = blr × effective batch / 256", OPTIM)
    lr: float | None = setting(None, "absolute learning rate (overrides --blr)", OPTIM)
    scale_lr_by_ratio: bool = setting(
        True, "multiply the learning rate by γ/p, as the paper does for CrossMAE", OPTIM
    )
    min_lr: float = setting(0.0, "learning rate at the end of the cosine decay", OPTIM)
    weight_decay: float = setting(0.05, "AdamW weight decay (not on norms or biases)", OPTIM)
    betas: list[float] = setting([0.9, 0.95], "AdamW betas", OPTIM)  # noqa: RUF009
    clip_grad: float | None = setting(None, "clip the gradient norm to this value", OPTIM)
    precision: Literal["auto", "bf16", "fp16", "fp32"] = setting(
        "auto", "auto: bf16 autocast on GPU, fp32 on CPU; fp16 uses a loss scaler", OPTIM
    )
    compile: bool = setting(False, "torch.compile the model (faster steps on GPU)", OPTIM)
    grad_checkpointing: bool = setting(
        False,
        "recompute each block in the backward instead of keeping its activations: a "
        "fraction of the memory for about a third more compute",
        OPTIM,
    )
    fsdp: bool = setting(
        False, "shard parameters, gradients and optimizer state (FSDP2) for ViT-L/H", OPTIM
    )
    max_steps: int | None = setting(
        None, "stop after this many optimizer steps (the schedule still spans all epochs)", OPTIM
    )
    # run
    device: str = setting("auto", "cpu, cuda, or auto (cuda when there is a GPU)", RUN, "DEV")
    seed: int = setting(0, "seed for initialisation, data order, augmentation and masks", RUN)
    output_dir: str | None = setting(
        None, "where checkpoints, logs and figures go", RUN, "DIR", "runs/pretrain-<time>"
    )
    resume: str | None = setting(
        None,
        "auto: continue from the checkpoint furthest along in --output-dir (start fresh if "
        "none); "
        "or a checkpoint path",
        RUN,
        "auto|PATH",
    )
    init_from: str | None = setting(
        None, "start from this checkpoint's weights (ours or the authors', of this architecture; "
        "a ViT's give the encoder alone); the optimizer, schedule and epochs start afresh",
        RUN, "PATH",
    )  # fmt: skip
    # checkpoints
    keep_every_epochs: int = setting(
        20, "keep a copy checkpoint-epochNNNN.pth every N epochs (0: only the latest)", SAVE
    )
    save_every_steps: int | None = setting(
        None, "also update the latest checkpoint every N steps (preemptible jobs)", SAVE
    )
    # monitoring
    log_every: int = setting(20, "log (and check the loss) every N optimizer steps", WATCH)
    tensorboard: bool = setting(True, "write TensorBoard scalars (if installed)", WATCH)
    recon_every_epochs: int = setting(1, "write reconstruction.png every N epochs (0: no)", WATCH)
    knn_every_epochs: int = setting(
        0, "online kNN accuracy on a labeled split every N epochs (0: never)", WATCH
    )
    knn_data: str | None = setting(None, "labeled data for kNN", WATCH, "PATH", "--data")
    knn_train_split: str = setting("train", "split whose features vote in kNN", WATCH, "SPLIT")
    knn_eval_split: str = setting("val", "split whose accuracy kNN reports", WATCH, "SPLIT")
    knn_k: int = setting(20, "neighbours that vote in kNN", WATCH)
    knn_max_images: int = setting(10000, "at most this many images per kNN split", WATCH)
    max_nonfinite: int = setting(
        5,
        "stop when this many steps in a row had a non-finite loss or gradient (checked at "
        "each log line: the step keeps no host sync; skipped steps change nothing)",
        WATCH,
    )

    def model_config(self) -> AutoencoderConfig:
        """The validated model config: the registered one with this run's overrides."""
        from crossmae.models.config import AutoencoderConfig
        from crossmae.models.registry import get_config

        hints = typing.get_type_hints(AutoencoderConfig)  # unknown names: get_config says so
        overrides = {
            key: coerce(key, value, hints[key], f"--model-overrides {key}")
            if key in hints
            else value
            for key, value in self.model_overrides.items()
        }
        for key in ("img_size", "mask_ratio", "prediction_ratio", "norm_pix_loss"):
            if getattr(self, key) is not None:
                overrides[key] = getattr(self, key)
        return get_config(self.model, **overrides)

    def validate(self) -> PretrainConfig:
        """Raise CrossMAEError naming the first impossible setting (the model's included)."""
        self.model_config()
        positive = ("epochs", "batch_size", "accum_iter", "log_every", "knn_k", "knn_max_images",
                    "max_nonfinite")  # fmt: skip
        for name in positive:
            if getattr(self, name) < 1:
                raise CrossMAEError(f"--{name.replace('_', '-')} must be at least 1")
        for name in ("num_workers", "keep_every_epochs", "recon_every_epochs", "knn_every_epochs",
                     "seed"):  # fmt: skip
            if getattr(self, name) < 0:
                raise CrossMAEError(f"--{name.replace('_', '-')} must not be negative")
        for name in ("samples_per_epoch", "train_images", "save_every_steps", "max_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise CrossMAEError(f"--{name.replace('_', '-')} must be at least 1")
        check_schedule(self.epochs, self.warmup_epochs, self.lr, self.blr, self.min_lr)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise CrossMAEError(f"--betas must be two numbers in [0, 1), got {self.betas}")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise CrossMAEError(f"--clip-grad must be positive, got {self.clip_grad}")
        if self.weight_decay < 0:
            raise CrossMAEError(f"--weight-decay must not be negative, got {self.weight_decay}")
        check_data_path(self.data)
        if self.knn_data is not None:
            check_data_path(self.knn_data, "--knn-data")
        if self.output_dir is not None:
            check_output_folder(self.output_dir)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def with_demo(*layers: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """The settings layers, with the demo's underneath when none of them names a model."""
    if any("model" in layer for layer in layers):
        return layers
    return (DEMO, *layers)
