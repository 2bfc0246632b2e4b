"""`crossmae export CHECKPOINT --format timm --output FILE.safetensors`: a pretraining
checkpoint's encoder, or a classifier (fine-tuned, or a linear probe's classifier.pth)
with its head, for timm."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint", help="a crossmae checkpoint or one of the authors' (MAE/CrossMAE)"
    )
    parser.add_argument(
        "--format", choices=["timm", "safetensors"], default="timm",
        help="timm: for timm's VisionTransformer (a pretraining checkpoint's encoder, or a "
        "classifier with its head); safetensors: the whole autoencoder "
        "(weights + config, loadable with crossmae.load_model, no pickle)",
    )  # fmt: skip
    parser.add_argument("--output", required=True, help="where to write FILE.safetensors")
    parser.add_argument(
        "--ema", action="store_true",
        help="the moving average a `crossmae finetune --ema` checkpoint kept (timm format)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from crossmae.errors import CrossMAEError
    from crossmae.export import export_timm, timm_create_call
    from crossmae.models.autoencoder import MaskedAutoencoder
    from crossmae.models.checkpoint import LoadedModel, read_model, save_safetensors
    from crossmae.models.classifier import ema_classifier

    if Path(args.output).expanduser().resolve() == Path(args.checkpoint).expanduser().resolve():
        raise CrossMAEError(f"--output {args.output} is the checkpoint being exported")
    if Path(args.output).suffix != ".safetensors":
        raise CrossMAEError(f"--output {args.output} must end in .safetensors (what it holds)")
    if args.ema and args.format != "timm":
        raise CrossMAEError("--ema exports a fine-tuned classifier, which needs --format timm")
    loaded = (
        LoadedModel(*ema_classifier(args.checkpoint)) if args.ema else read_model(args.checkpoint)
    )
    if args.format == "safetensors":
        if not isinstance(loaded.model, MaskedAutoencoder):
            raise CrossMAEError(
                f"{args.checkpoint} is not a pretraining checkpoint; a classifier or encoder "
                "exports with --format timm"
            )
        save_safetensors(args.output, loaded.model)
        print(f"wrote {args.output} (load it with crossmae.load_model)")
        return 0
    name, kwargs = export_timm(loaded.model, args.output, loaded.classes)
    print(f"wrote {args.output}")
    if loaded.classes is not None:
        shown = ", ".join(loaded.classes[:5]) + (", ..." if len(loaded.classes) > 5 else "")
        print(f"classes ({len(loaded.classes)}, in the metadata under 'classes'): {shown}")
    print(f"timm model: {name}")
    print("load it with:")
    print(f"  model = {timm_create_call(name, kwargs)}")
    print(f"  model.load_state_dict(safetensors.torch.load_file({str(args.output)!r}))")
    return 0
