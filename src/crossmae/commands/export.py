"""`crossmae export CHECKPOINT --format timm --output FILE.safetensors`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint", help="a crossmae checkpoint or one of the authors' (MAE/CrossMAE)"
    )
    parser.add_argument(
        "--format", choices=["timm", "safetensors"], default="timm",
        help="timm: the encoder for timm's VisionTransformer; safetensors: the whole model "
        "(weights + config, loadable with crossmae.load_model, no pickle)",
    )  # fmt: skip
    parser.add_argument("--output", required=True, help="where to write FILE.safetensors")


def run(args: argparse.Namespace) -> int:
    from crossmae.errors import CrossMAEError
    from crossmae.export import export_timm, timm_create_call
    from crossmae.models.autoencoder import MaskedAutoencoder
    from crossmae.models.checkpoint import load_model, save_safetensors

    if Path(args.output).expanduser().resolve() == Path(args.checkpoint).expanduser().resolve():
        raise CrossMAEError(f"--output {args.output} is the checkpoint being exported")
    if Path(args.output).suffix != ".safetensors":
        raise CrossMAEError(f"--output {args.output} must end in .safetensors (what it holds)")
    model = load_model(args.checkpoint)
    if args.format == "safetensors":
        if not isinstance(model, MaskedAutoencoder):
            raise CrossMAEError("safetensors export needs a pretraining checkpoint")
        save_safetensors(args.output, model)
        print(f"wrote {args.output} (load it with crossmae.load_model)")
        return 0
    name, kwargs = export_timm(model, args.output)
    print(f"wrote {args.output}")
    print(f"timm model: {name}")
    print("load it with:")
    print(f"  model = {timm_create_call(name, kwargs)}")
    print(f"  model.load_state_dict(safetensors.torch.load_file({str(args.output)!r}))")
    return 0
