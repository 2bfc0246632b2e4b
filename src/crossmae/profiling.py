"""What a model costs: parameters, forward FLOPs per image, and a measured training step.

FLOPs are counted with `torch.utils.flop_counter.FlopCounterMode` on the meta device (no
memory, no compute). On CPU tensors the counter has no formula for the CPU flash-attention
kernel and counts attention as 0; on meta tensors `scaled_dot_product_attention` runs as
its math decomposition, whose two batched matmuls are counted, so attention is included.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from crossmae.data.transforms import size_pair
from crossmae.errors import CrossMAEError
from crossmae.models.autoencoder import MaskedAutoencoder
from crossmae.models.config import AutoencoderConfig
from crossmae.train.checkpoint_writer import storages
from crossmae.train.optim import build_adamw, param_groups, set_lr
from crossmae.train.step import OptimizerStep

# Ops that compute attention (q kᵀ and probabilities · v); everything else counted is a
# linear layer, the patch-embedding convolution, or the fusion's weighted sum.
ATTENTION_OPS = ("aten.bmm", "aten.baddbmm", "aten._scaled_dot_product")


@dataclass
class Flops:
    """Forward FLOPs of one image (a multiply-add counts 2)."""

    linear: float
    attention: float

    @property
    def total(self) -> float:
        return self.linear + self.attention


@dataclass
class StepStats:
    """A measured training step: forward + backward + AdamW update."""

    device: str
    batch_size: int
    steps: int
    step_ms: float
    images_per_s: float
    peak_memory_mb: float | None
    memory: str  # what `peak_memory_mb` measures


@dataclass
class SavedActivations:
    """Memory a training step holds when its forward ends (eager mode, one micro-batch).

    Counted from the tensors autograd saves for backward, one forward at batch 1 and one at
    batch 2 on the CPU: no GPU needed, any model size. A lower bound on a GPU's peak, which
    adds the gradients (4 bytes a parameter, filled in as the backward frees activations),
    backward's temporaries and the allocator's slack; `torch.compile` saves less, as it
    recomputes cheap ops in the backward instead of keeping their inputs.
    """

    dtype: str  # "bfloat16 autocast" or "float32"
    per_image_mib: float  # the activations, which grow with the batch
    encoder_per_image_mib: float  # the encoder's share, about the same in MAE and CrossMAE
    per_step_mib: float  # autocast's bfloat16 copies of the weights, whatever the batch
    state_mib: float  # float32 weights and AdamW's two moments: 12 bytes a parameter
    batch_size: int
    held_mib: float  # all of the above at the end of the forward of `batch_size` images


@dataclass
class Profile:
    name: str
    decoder: str
    img_size: int | tuple[int, int]
    mask_ratio: float
    prediction_ratio: float  # fraction of all patches decoded (= mask ratio for MAE)
    decoder_depth: int
    params: dict[str, int]  # encoder, decoder, total
    encoder_flops: Flops
    decoder_flops: Flops
    step: StepStats | None = None
    activations: SavedActivations | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def count_flops(config: AutoencoderConfig) -> dict[str, Flops]:
    """Forward FLOPs per image of the encoder and the decoder at the config's ratios."""
    with torch.device("meta"):
        model = MaskedAutoencoder(config)
        imgs = torch.empty(1, config.in_chans, *size_pair(config.img_size))
    with FlopCounterMode(display=False) as counter:
        model(imgs)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    out = {}
    for part in ("encoder", "decoder"):
        ops = counts.get(f"{root}.{part}", {})
        attention = sum(n for op, n in ops.items() if str(op).startswith(ATTENTION_OPS))
        out[part] = Flops(sum(ops.values()) - attention, attention)
    return out


def count_params(config: AutoencoderConfig) -> dict[str, int]:
    with torch.device("meta"):
        model = MaskedAutoencoder(config)
    encoder = sum(p.numel() for p in model.encoder.parameters())
    decoder = sum(p.numel() for p in model.decoder.parameters())
    return {"encoder": encoder, "decoder": decoder, "total": encoder + decoder}


def count_saved_activations(
    config: AutoencoderConfig, batch_size: int, amp: bool = False, grad_checkpointing: bool = False
) -> SavedActivations:
    """What the training forward keeps for backward, per image and per step (see the class),
    and the total at `batch_size`."""
    model = MaskedAutoencoder(config).train()
    model.set_grad_checkpointing(grad_checkpointing)

    def held_bytes(images: int, encoder_only: bool) -> int:
        imgs = torch.randn(images, config.in_chans, *size_pair(config.img_size))
        masking = model.mask(images, imgs.device)

        def forward() -> object:
            return model.encode(imgs, masking) if encoder_only else model(imgs).loss

        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            return saved_tensor_bytes(forward, weights_of=model)

    def per_image_and_step(encoder_only: bool = False) -> tuple[float, float]:
        one, two = held_bytes(1, encoder_only), held_bytes(2, encoder_only)
        return (two - one) / 2**20, (2 * one - two) / 2**20

    per_image, per_step = per_image_and_step()
    if grad_checkpointing and amp:
        # autocast caches every weight copy until the forward ends; inside checkpointed
        # blocks they are saved out of this hook's sight, so count them unchecked
        model.set_grad_checkpointing(False)
        per_step = per_image_and_step()[1]
        model.set_grad_checkpointing(True)
    state = 12 * sum(p.numel() for p in model.parameters()) / 2**20
    return SavedActivations(
        dtype="bfloat16 autocast" if amp else "float32",
        per_image_mib=per_image,
        encoder_per_image_mib=per_image_and_step(encoder_only=True)[0],
        per_step_mib=per_step,
        state_mib=state,
        batch_size=batch_size,
        held_mib=state + per_step + batch_size * per_image,
    )


def saved_tensor_bytes(forward: Callable[[], Any], weights_of: nn.Module | None = None) -> int:
    """Bytes of the storages autograd saves for backward while `forward()` runs, each storage
    once however many views of it are saved; the parameters of `weights_of` (held anyway)
    are left out."""
    exclude = storages(weights_of.parameters()) if weights_of is not None else set()
    saved: dict[int, int] = {}
    # Alive as autograd would keep them (no address is freed and reused while counting),
    # then let go: the graph holds these hooks, so a tensor kept past the count (by them or
    # as its own packed value) would hold its grad_fn in a cycle no collector frees.
    alive: list[torch.Tensor] = []

    def keep(tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in exclude:
            saved[storage.data_ptr()] = storage.nbytes()
        alive.append(tensor)

    def unpack(_: None) -> torch.Tensor:
        raise RuntimeError("a forward run to count saved tensors cannot be backpropagated")

    try:
        with torch.autograd.graph.saved_tensors_hooks(keep, unpack):
            forward()
    finally:
        alive.clear()
    return sum(saved.values())


def comparison_configs(
    name: str, gammas: list[float], **overrides: Any
) -> list[tuple[str, AutoencoderConfig]]:
    """The registered MAE of `name`'s encoder, then its CrossMAE at each prediction ratio γ."""
    from crossmae.models.registry import get_config, list_models

    if name.startswith("mae_"):
        mae, cross = name, f"cross{name}"
    elif name.startswith("crossmae_"):
        mae, cross = name.removeprefix("cross").replace("_dec8", ""), name
    else:
        raise CrossMAEError(f"unknown model {name!r}; `crossmae models` lists the known ones")
    missing = [n for n in (mae, cross) if n not in list_models()]
    if missing:
        raise CrossMAEError(f"--compare needs a registered MAE/CrossMAE pair; {missing[0]} is not")
    rows = [(mae, get_config(mae, **overrides))]
    rows += [(cross, get_config(cross, **overrides, prediction_ratio=g)) for g in gammas]
    return rows


def profile(
    name: str,
    config: AutoencoderConfig,
    batch_size: int = 8,
    device: str = "cpu",
    steps: int = 5,
    warmup: int = 2,
    compile: bool = False,
    amp: bool = False,
    activations: bool = False,
    grad_checkpointing: bool = False,
) -> Profile:
    """Count parameters and FLOPs (and, with `activations`, the memory held for backward),
    then time `steps` training steps (none when 0)."""
    flops = count_flops(config)
    gamma = config.prediction_ratio if config.decoder == "cross" else config.mask_ratio
    step = None
    if steps > 0:
        step = measure_step(
            config, batch_size, device, steps, warmup, compile, amp, grad_checkpointing
        )
    return Profile(
        name=name,
        decoder=config.decoder,
        img_size=config.img_size,
        mask_ratio=config.mask_ratio,
        prediction_ratio=gamma,
        decoder_depth=config.decoder_depth,
        params=count_params(config),
        encoder_flops=flops["encoder"],
        decoder_flops=flops["decoder"],
        step=step,
        activations=(
            count_saved_activations(config, batch_size, amp, grad_checkpointing)
            if activations
            else None
        ),
    )


def measure_step(
    config: AutoencoderConfig,
    batch_size: int,
    device: str,
    steps: int,
    warmup: int = 2,
    compile: bool = False,
    amp: bool = False,
    grad_checkpointing: bool = False,
) -> StepStats:
    """Time forward + backward + AdamW on random images; peak memory from the CUDA
    allocator (on the CPU, where freed memory is reused unseen, `count_saved_activations`
    tells what a step holds)."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CrossMAEError("--device cuda was asked for but no CUDA GPU is available")
    if batch_size < 1:
        raise CrossMAEError(f"the batch size must be at least 1, got {batch_size}")
    model = MaskedAutoencoder(config).to(dev).train()
    model.set_grad_checkpointing(grad_checkpointing)
    opt = build_adamw(param_groups(model, 0.05), 1e-4, (0.9, 0.95), dev)  # as pretraining
    forward = torch.compile(model) if compile else model
    imgs = torch.randn(batch_size, config.in_chans, *size_pair(config.img_size), device=dev)
    # pretraining's own update: gradient norm, non-finite check, skip-on-device, no sync
    update = OptimizerStep(forward, opt, device=dev, precision="bf16" if amp else "fp32")

    def step() -> None:
        set_lr(opt, 1e-4)  # as pretraining does before every step
        update([imgs], lambda batch: forward(batch).loss)

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    with _out_of_memory_as_error(batch_size):
        try:
            for _ in range(warmup):
                step()
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as err:  # compilation errors surface at the first call
            if not compile:
                raise
            raise CrossMAEError(
                f"torch.compile failed here ({type(err).__name__}); profile without --compile"
            ) from err
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        seconds = time.perf_counter() - start
    peak, memory = None, "not measured on the CPU; --activations counts what a step holds"
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) / 2**20
        memory = "CUDA peak allocated: weights, grads, AdamW state, activations"
    return StepStats(
        device=str(dev),
        batch_size=batch_size,
        steps=steps,
        step_ms=1e3 * seconds / steps,
        images_per_s=batch_size * steps / seconds,
        peak_memory_mb=peak,
        memory=memory,
    )


@contextmanager
def _out_of_memory_as_error(batch_size: int) -> Iterator[None]:
    """A step that does not fit the GPU is a sentence the caller can act on (or record)."""
    try:
        yield
    except torch.cuda.OutOfMemoryError:
        raise CrossMAEError(
            f"out of GPU memory at batch {batch_size}; try a smaller batch size"
        ) from None
