"""Mixed precision: bf16 autocast on GPUs by default, fp16 with a loss scaler as an option."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Literal

import torch

Precision = Literal["bf16", "fp16", "fp32"]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """'auto' is bf16 on CUDA (fp16 on GPUs without bf16) and fp32 on CPU."""
    if precision != "auto":
        return precision  # type: ignore[return-value]
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def autocast_context(device: torch.device | str, precision: Precision) -> AbstractContextManager:
    """Autocast for the forward pass; a no-op in fp32."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=DTYPES[precision])


def grad_scaler(device: torch.device | str, precision: Precision) -> torch.amp.GradScaler | None:
    """fp16 gradients underflow without loss scaling; bf16 and fp32 need no scaler."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(torch.device(device).type)
