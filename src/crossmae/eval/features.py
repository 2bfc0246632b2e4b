"""Frozen image features for the probes: which vector stands for an image, and extracting it.

`avg` (the default) is what MAE's fine-tuning head sees: the mean of the last block's patch
tokens followed by `fc_norm`, the encoder's final norm (if it has one) dropped. A
checkpoint's fc_norm is used when it has one (a fine-tuned classifier); otherwise it is
fresh, i.e. a LayerNorm without affine effect. This treats MAE encoders (which have a
final norm) and fusion-trained CrossMAE encoders (which have none) the same way.
`token` is the [CLS] token after the final norm (a fresh, parameter-free one for fusion
encoders). `fused` is CrossMAE's own view: the patch mean of the last decoder block's
fused, normalised mixture of encoder layers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from crossmae.data.transforms import model_input, size_pair
from crossmae.errors import CrossMAEError
from crossmae.eval.backbone import Backbone, LoadReport, load_encoder
from crossmae.models.autoencoder import MaskedAutoencoder
from crossmae.models.classifier import build_vit

FEATURES = ("avg", "token", "fused")


class FusedFeatures(nn.Module):
    """Patch mean of `LN_last(sum_j W[last, j] F_j)`, the last CrossMAE decoder block's input."""

    def __init__(self, model: MaskedAutoencoder) -> None:
        super().__init__()
        if not model.config.uses_fusion or model.decoder.fusion is None:
            raise CrossMAEError(
                "'fused' features need a CrossMAE checkpoint trained with feature fusion"
            )
        self.encoder = model.encoder
        self.fusion = model.decoder.fusion
        self.blocks = model.config.fusion_blocks
        self.use_input = model.config.fusion_input
        self.num_features = model.config.embed_dim

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        out = self.encoder(imgs, return_blocks=self.blocks, return_input=self.use_input)
        return self.fusion(out.intermediates)[-1][:, 1:].mean(dim=1)


def feature_extractor(
    backbone: Backbone, kind: str = "avg", img_size: int | tuple[int, int] | None = None
) -> tuple[nn.Module, LoadReport | None]:
    """A frozen module mapping images (B, C, H, W) to features (B, D), in eval mode.

    It has `num_features`. The load report says which weights were fresh (None for `fused`).
    """
    if kind not in FEATURES:
        raise CrossMAEError(f"features must be one of {', '.join(FEATURES)}, got {kind!r}")
    report = None
    if kind == "fused":
        if backbone.autoencoder is None:
            raise CrossMAEError(
                "'fused' features need a pretraining checkpoint (its decoder's fusion weights), "
                "not a ViT"
            )
        if img_size is not None and size_pair(img_size) != backbone.arch.img_size:
            raise CrossMAEError("'fused' features work only at the pretraining image size")
        module: nn.Module = FusedFeatures(backbone.autoencoder)
    else:
        module = build_vit(backbone.arch, num_classes=0, global_pool=kind, img_size=img_size)
        report = load_encoder(module, backbone)
    module.eval().requires_grad_(False)
    return module, report


@torch.no_grad()
def extract_features(
    model: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `model` over (images, labels) batches -> (N, D) float32 features, (N,) labels, on CPU.

    Each batch's features are copied out without waiting (into pinned memory, on a GPU), so
    the next batch is queued while this one runs; one synchronisation at the end.
    """
    features, labels = [], []
    for imgs, targets in batches:
        with autocast():
            out = model(model_input(imgs, device))
        features.append(out.float().to("cpu", non_blocking=True))
        labels.append(torch.as_tensor(targets).cpu())
    if not features:
        raise CrossMAEError("the data set has no images to extract features from")
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the copies above are queued, not yet done
    return torch.cat(features), torch.cat(labels).long()
