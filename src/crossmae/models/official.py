"""The authors' checkpoints (facebookresearch/mae, TonyLianLong/CrossMAE) in this package.

Their files are `{'model': state_dict, 'args': argparse.Namespace, ...}`; `args` names the
architecture (`args.model`, or an `args.arch` dict) and the CrossMAE switches.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crossmae.errors import CrossMAEError
from crossmae.models.autoencoder import MaskedAutoencoder
from crossmae.models.classifier import ViTArch, build_vit, fold_probe_head
from crossmae.models.config import AutoencoderConfig
from crossmae.models.registry import VIT_SIZES
from crossmae.serialization import check_tensor_dict, load_state_dict_strict, safe_torch_load

# Authors' name prefix -> ours; the encoder keeps timm's names under `encoder.`.
_RENAMES = (
    ("decoder_blocks.", "decoder.blocks."),
    ("decoder_pos_embed", "decoder.pos_embed"),
    ("decoder_embed.", "decoder.embed."),
    ("decoder_norm.", "decoder.norm."),
    ("decoder_pred.", "decoder.pred."),
    ("mask_token", "decoder.mask_token"),
    ("wfm.linear.weight", "decoder.fusion.weight"),
    ("dec_norms.", "decoder.fusion.norms."),
)
_ENCODER_PREFIXES = ("cls_token", "pos_embed", "patch_embed.", "blocks.", "norm.")


def _rename(key: str) -> str:
    for old, new in _RENAMES:
        if key.startswith(old):
            return new + key[len(old) :]
    if key.startswith(_ENCODER_PREFIXES):
        return "encoder." + key
    return key


def convert_official_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Authors' parameter names -> this package's (works on gradients and any keyed dict too).

    The authors' CrossMAE encoder adds no position embedding to [CLS] (its row is zero in
    their init, but not in an arbitrary checkpoint); ours always adds it, so for CrossMAE
    checkpoints that row is set to zero and both compute the same function.
    """
    out = {_rename(k.removeprefix("module.")): v for k, v in state_dict.items()}
    is_cross = any(".cross_attn." in k for k in out)
    pos = out.get("encoder.pos_embed")
    if is_cross and isinstance(pos, torch.Tensor):
        pos = pos.clone()
        pos[:, :1] = 0
        out["encoder.pos_embed"] = pos
    return out


def _args_dict(args: Any) -> dict[str, Any]:
    if args is None:
        return {}
    if isinstance(args, argparse.Namespace):
        return vars(args)
    if isinstance(args, dict):
        return args
    raise CrossMAEError(f"checkpoint 'args' is a {type(args).__name__}, not an argparse.Namespace")


def _size_from_name(model_name: str) -> str:
    for size in VIT_SIZES:
        if f"vit_{size}_" in model_name:
            return size
    raise CrossMAEError(
        f"unknown architecture {model_name!r} in the checkpoint's args.model; expected one of "
        "mae_vit_{small,base,large,huge}_patch* (or an args.arch dict)"
    )


def _decoder_depth_of(state_dict: dict[str, torch.Tensor]) -> int | None:
    """How many decoder blocks the weights hold (None: none, e.g. an encoder-only file)."""
    prefix = "decoder_blocks."
    ids = {k.removeprefix("module.")[len(prefix) :].split(".")[0] for k in state_dict
           if k.removeprefix("module.").startswith(prefix)}  # fmt: skip
    return len(ids) or None


def config_from_official_args(args: Any, state_dict: dict[str, torch.Tensor]) -> AutoencoderConfig:
    """Rebuild the architecture and objective from the authors' `args`."""
    try:
        return _config_from_args(_args_dict(args), state_dict)
    except (KeyError, TypeError, ValueError) as err:
        what = f"no {err}" if isinstance(err, KeyError) else str(err)
        raise CrossMAEError(f"the checkpoint's args do not describe a model ({what})") from None


def _config_from_args(a: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> AutoencoderConfig:
    cross = bool(a.get("cross_mae", False))
    arch = a.get("arch")
    if isinstance(arch, dict):
        fields: dict[str, Any] = {
            "img_size": arch["img"], "patch_size": arch["patch"], "embed_dim": arch["dim"],
            "depth": arch["depth"], "num_heads": arch["heads"], "decoder_dim": arch["ddim"],
            "decoder_depth": arch["ddepth"], "decoder_heads": arch["dheads"],
            "mlp_ratio": float(arch.get("mlp", 4.0)),
        }  # fmt: skip
    else:
        size = _size_from_name(str(a.get("model", "")))
        patch, dim, depth, heads = VIT_SIZES[size]
        dec_dim, dec_heads = (256, 8) if size == "small" and cross else (512, 16)
        fields = {
            "patch_size": patch, "embed_dim": dim, "depth": depth, "num_heads": heads,
            "decoder_dim": dec_dim, "decoder_heads": dec_heads,
            "decoder_depth": _decoder_depth_of(state_dict) or 8,
        }  # fmt: skip
    # The authors' CrossMAE main_pretrain.py passes args.decoder_depth to MAE models too.
    fields["decoder_depth"] = int(a.get("decoder_depth", fields["decoder_depth"]))
    if "input_size" in a:
        fields["img_size"] = int(a["input_size"])
    weight = state_dict.get("patch_embed.proj.weight")
    if weight is not None:
        fields["in_chans"] = int(weight.shape[1])
    mask_ratio = float(a.get("mask_ratio", 0.75))
    fields |= {"mask_ratio": mask_ratio, "norm_pix_loss": bool(a.get("norm_pix_loss", False))}
    if cross:
        fields |= {
            "decoder": "cross",
            "prediction_ratio": float(a.get("kept_mask_ratio", mask_ratio)),
            "fusion": bool(a.get("weight_fm", False)),
            "fusion_layers": list(a.get("use_fm", [-1])),
            "fusion_input": bool(a.get("use_input", False)),
            "decoder_self_attn": bool(a.get("self_attn", False)),
        }
    else:
        fields |= {"decoder": "mae", "prediction_ratio": mask_ratio}
    return AutoencoderConfig(**fields).validate()


# The authors' Hugging Face releases (their util/hf_hub.py) are a model.safetensors with
# their parameter names beside a config.json of their MaskedAutoencoderViT's keyword
# arguments; an argument left out takes that class's default.
_HUB_DEFAULTS: dict[str, Any] = {
    "img_size": 224, "patch_size": 16, "embed_dim": 1024, "depth": 24, "num_heads": 16,
    "decoder_embed_dim": 512, "decoder_depth": 8, "decoder_num_heads": 16, "mlp_ratio": 4.0,
    "norm_pix_loss": False, "weight_fm": False, "use_fm": [-1], "use_input": False,
    "self_attn": False,
}  # fmt: skip


def args_from_hub_config(config: Any) -> dict[str, Any]:
    """The authors' hub config.json -> the `args` of their training checkpoints.

    The hub config records no masking: it loads with p = 0.75 and γ = p (every masked patch
    decoded), which `dataclasses.replace` on `model.config` can change.
    """
    if not isinstance(config, dict):
        raise CrossMAEError(f"the hub config is a {type(config).__name__}, not a JSON object")
    c = _HUB_DEFAULTS | config
    arch = {
        "img": c["img_size"], "patch": c["patch_size"], "dim": c["embed_dim"],
        "depth": c["depth"], "heads": c["num_heads"], "ddim": c["decoder_embed_dim"],
        "ddepth": c["decoder_depth"], "dheads": c["decoder_num_heads"], "mlp": c["mlp_ratio"],
    }  # fmt: skip
    switches = ("norm_pix_loss", "weight_fm", "use_fm", "use_input", "self_attn")
    return {"cross_mae": True, "arch": arch, **{k: c[k] for k in switches}}


def load_hub_checkpoint(state_dict: dict[str, Any], config: Any, what: str) -> MaskedAutoencoder:
    """A CrossMAE from the authors' Hugging Face release: weights (safetensors: names to
    tensors) and their config.json."""
    model = MaskedAutoencoder(config_from_official_args(args_from_hub_config(config), state_dict))
    load_state_dict_strict(model, convert_official_state_dict(state_dict), what)
    return model


def _encoder_only_model(args: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """A fine-tuned (or encoder-only) checkpoint -> the timm ViT classifier it came from."""
    size = _size_from_name(str(args.get("model", ""))) if "model" in args else None
    if "patch_embed.proj.weight" not in state_dict or "pos_embed" not in state_dict:
        raise CrossMAEError("the checkpoint holds neither an autoencoder nor a ViT encoder")
    weight = state_dict["patch_embed.proj.weight"]
    if weight.ndim != 4:
        raise CrossMAEError(
            f"the checkpoint's patch embedding has shape {tuple(weight.shape)}, not the "
            "(width, channels, patch, patch) of a ViT's convolution"
        )
    dim, in_chans, patch = int(weight.shape[0]), int(weight.shape[1]), int(weight.shape[2])
    depth = len({k.split(".")[1] for k in state_dict if k.startswith("blocks.")})
    # Without args.model the width names the size (ViT-H: 1280 wide, 16 heads, not 20); the
    # weights' shapes do not depend on the head count, so a wrong guess would load silently.
    heads_by_width = {width: heads for _, width, _, heads in VIT_SIZES.values()}
    heads = VIT_SIZES[size][3] if size else heads_by_width.get(dim, max(1, dim // 64))
    if dim % heads:
        raise CrossMAEError(
            f"the encoder is {dim} wide, which {heads} heads (args.model "
            f"{args.get('model')!r}) do not divide: the checkpoint's args do not fit its weights"
        )
    num_tokens = int(state_dict["pos_embed"].shape[1]) - 1
    img_size = int(args.get("input_size", round(num_tokens**0.5) * patch))
    state_dict = fold_probe_head(state_dict)
    head = state_dict.get("head.weight")
    try:
        arch = ViTArch((img_size, img_size), patch, in_chans, dim, depth, heads)
    except ValueError as err:
        raise CrossMAEError(
            f"the encoder checkpoint's args do not fit its weights ({err})"
        ) from None
    pool = "avg" if "fc_norm.weight" in state_dict else "token"
    model = build_vit(arch, int(head.shape[0]) if head is not None else 0, pool)
    load_state_dict_strict(model, state_dict, "the encoder checkpoint")
    return model


def load_official_checkpoint(path: str | Path) -> nn.Module:
    """A ready model from a checkpoint written by the authors' MAE or CrossMAE code.

    Pretraining checkpoints give a `MaskedAutoencoder` (weights loaded strictly, masking and
    loss settings from `args`); encoder-only (fine-tuned) ones give a timm ViT. Unpickling
    allows only tensors, containers and argparse.Namespace.
    """
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict):
        raise CrossMAEError(f"{path} is not a checkpoint dict (found a {type(ckpt).__name__})")
    if str(ckpt.get("format", "")).startswith("crossmae"):
        raise CrossMAEError(f"{path} is a crossmae checkpoint; load it with crossmae.load_model")
    state_dict = ckpt.get("model", ckpt)
    if not isinstance(state_dict, dict):
        raise CrossMAEError(f"{path} has no state dict under 'model'")
    check_tensor_dict(state_dict, str(path))
    args = _args_dict(ckpt.get("args"))
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    if "decoder_pred.weight" not in state_dict:
        return _encoder_only_model(args, state_dict)
    model = MaskedAutoencoder(config_from_official_args(args, state_dict))
    load_state_dict_strict(model, convert_official_state_dict(state_dict), f"checkpoint {path}")
    return model
