"""`crossmae export CHECKPOINT --format timm --output FILE.safetensors`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint", help="a crossmae checkpoint or one of the authors' (MAE/CrossMAE)"
    )
    parser.add_argument(
        "--format", choices=["timm"], default="timm",
        help="timm: the encoder as a safetensors file for timm's VisionTransformer",
    )  # fmt: skip
    parser.add_argument("--output", required=True, help="where to write FILE.safetensors")


def run(args: argparse.Namespace) -> int:
    from crossmae.export import export_timm, timm_create_call
    from crossmae.models.checkpoint import load_model

    name, kwargs = export_timm(load_model(args.checkpoint), args.output)
    print(f"wrote {args.output}")
    print(f"timm model: {name}")
    print("load it with:")
    print(f"  model = {timm_create_call(name, kwargs)}")
    print(f"  model.load_state_dict(safetensors.torch.load_file({str(args.output)!r}))")
    return 0
