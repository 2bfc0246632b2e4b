"""`crossmae models`: the registered configs with their sizes."""

from __future__ import annotations

import argparse

from crossmae.models.registry import get_config, list_models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("filter", nargs="?", default="", help="show only names containing this")


def run(args: argparse.Namespace) -> int:
    header = f"{'name':34} {'img':>5} {'enc (patch/dim/depth)':>22} {'decoder':>14} {'γ':>5}"
    print(header)
    print("-" * len(header))
    for name in list_models(args.filter):
        c = get_config(name)
        img = c.img_size if isinstance(c.img_size, int) else "x".join(map(str, c.img_size))
        enc = f"{c.patch_size}/{c.embed_dim}/{c.depth}"
        dec = f"{c.decoder} {c.decoder_depth}x{c.decoder_dim}"
        gamma = f"{c.prediction_ratio:.2f}" if c.decoder == "cross" else "-"
        print(f"{name:34} {img!s:>5} {enc:>22} {dec:>14} {gamma:>5}")
    return 0
