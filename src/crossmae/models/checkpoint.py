"""This package's checkpoint format, and one loader for ours and the authors'."""

from __future__ import annotations

import json
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from crossmae.errors import CrossMAEError
from crossmae.models.autoencoder import MaskedAutoencoder
from crossmae.models.classifier import (
    CLASSIFIER_FORMAT,
    classifier_from_checkpoint,
    vit_from_timm_export,
)
from crossmae.models.config import AutoencoderConfig
from crossmae.models.official import load_hub_checkpoint, load_official_checkpoint
from crossmae.serialization import (
    atomic_save_safetensors,
    atomic_torch_save,
    load_state_dict_strict,
    safe_torch_load,
    unwritten,
)

FORMAT = "crossmae"


def model_checkpoint(model: MaskedAutoencoder, **extra: Any) -> dict[str, Any]:
    """The dict we save: format tag, model config, weights, and any training state in `extra`."""
    return {
        "format": FORMAT,
        "model_config": model.config.to_dict(),
        "model": model.state_dict(),
        **extra,
    }


def save_model(path: str | Path, model: MaskedAutoencoder, **extra: Any) -> None:
    """Our .pth checkpoint; a path ending in .safetensors gets `save_safetensors` instead."""
    if Path(path).suffix == ".safetensors":
        if extra:
            raise CrossMAEError(f"{path}: safetensors hold the model only; save {', '.join(extra)} "
                                "in a .pth")  # fmt: skip
        save_safetensors(path, model)
        return
    try:
        atomic_torch_save(model_checkpoint(model, **extra), path)
    except OSError as err:
        raise unwritten(path, err) from None


def model_from_checkpoint(ckpt: dict[str, Any], what: str) -> MaskedAutoencoder:
    """Rebuild and strictly load a model from a dict made by `model_checkpoint`."""
    try:
        config = AutoencoderConfig.from_dict(ckpt["model_config"]).validate()
    except CrossMAEError as err:
        raise CrossMAEError(f"{what} holds an unusable model config: {err}") from None
    model = MaskedAutoencoder(config)
    load_state_dict_strict(model, ckpt["model"], what)
    return model


def save_safetensors(path: str | Path, model: MaskedAutoencoder) -> None:
    """Model weights as safetensors (no pickle at all), the config as JSON metadata."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": FORMAT, "model_config": json.dumps(model.config.to_dict())}
    atomic_save_safetensors(state, path, metadata)


def _read_safetensors(path: Path) -> LoadedModel:
    """Ours (the config in the metadata), a timm export of ours, or the authors' hub release
    (config.json beside)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise CrossMAEError(f"{path} is not a readable safetensors file: {err}") from None
    what = f"checkpoint {path}"
    if metadata.get("format") == FORMAT and "model_config" in metadata:
        ckpt = {"model_config": _json(metadata["model_config"], path), "model": state}
        return LoadedModel(model_from_checkpoint(ckpt, what), origin="safetensors")
    if "timm_model" in metadata:
        return LoadedModel(*vit_from_timm_export(state, metadata, what), origin="timm export")
    hub_config = path.with_name("config.json")
    if "decoder_pred.weight" in state and hub_config.is_file():
        config = _json(hub_config.read_text(errors="replace"), hub_config)
        return LoadedModel(load_hub_checkpoint(state, config, what), origin="safetensors")
    raise CrossMAEError(
        f"{path} holds no crossmae model config, and no config.json beside it describes the "
        "authors' model (written by another tool?)"
    )


def _json(text: str, source: Path) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise CrossMAEError(f"{source} has a damaged model config (not JSON)") from None


@dataclass
class LoadedModel:
    """A checkpoint file's model, where it came from, and a classifier's class names."""

    model: nn.Module  # MaskedAutoencoder (pretraining) or timm VisionTransformer (the rest)
    classes: list[str] | None = None  # a classifier's outputs, where the file names them
    _: KW_ONLY
    origin: str = "crossmae format"  # or "authors' format", "safetensors", "timm export"


def read_model(path: str | Path) -> LoadedModel:
    """Any checkpoint: ours (pretraining -> MaskedAutoencoder, fine-tuned or exported to
    timm -> VisionTransformer) or the authors' (their .pth files, pretraining or fine-tuned,
    or a folder or model.safetensors of their Hugging Face release)."""
    path = Path(path)
    if path.is_dir():
        if not (path / "model.safetensors").is_file():
            raise CrossMAEError(f"{path} is a folder without a model.safetensors, not a checkpoint")
        path = path / "model.safetensors"
    if path.suffix == ".safetensors" and path.is_file():
        return _read_safetensors(path)
    ckpt = safe_torch_load(path)
    fmt = ckpt.get("format") if isinstance(ckpt, dict) else None
    if fmt == FORMAT:
        if "model_config" not in ckpt or "model" not in ckpt:
            raise CrossMAEError(f"{path} is a crossmae checkpoint without a model")
        return LoadedModel(model_from_checkpoint(ckpt, f"checkpoint {path}"))
    if fmt == CLASSIFIER_FORMAT:
        return LoadedModel(*classifier_from_checkpoint(ckpt, f"checkpoint {path}"))
    if fmt == f"{FORMAT}-linprobe":  # the head and optimiser, to resume the probe
        written = path.with_name("classifier.pth")
        where = f"its classifier is {written}" if written.is_file() else (
            "a finished probe writes its classifier as classifier.pth beside it (not for "
            "'fused' features)")  # fmt: skip
        raise CrossMAEError(
            f"{path} is a linear probe's training state, not a model to load or evaluate; " + where
        )
    if isinstance(fmt, str) and fmt.startswith(FORMAT):
        raise CrossMAEError(f"{path} is a {fmt!r} checkpoint, not a model to load or evaluate")
    return LoadedModel(load_official_checkpoint(path), origin="authors' format")


def load_model(path: str | Path) -> nn.Module:
    """The model in any checkpoint `read_model` reads."""
    return read_model(path).model
