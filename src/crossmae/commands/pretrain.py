"""`crossmae pretrain`: train MAE / CrossMAE, from the built-in demo to multi-node runs.

With no flags it trains a small CrossMAE on CIFAR-10 images shipped in the package (CPU, a
few minutes). Recipes: `--config configs/<recipe>.yaml`; any setting can be given as a
flag too (flags win over the file). Several processes: `torchrun --nproc_per_node=N -m
crossmae pretrain ...`.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from crossmae.train.config import PretrainConfig
    from crossmae.train.options import DashesFormatter, add_dataclass_arguments

    parser.formatter_class = DashesFormatter
    parser.description = __doc__
    parser.add_argument(
        "--config", metavar="FILE.yaml", help="YAML file of settings (a recipe from configs/)"
    )
    add_dataclass_arguments(parser, PretrainConfig)


def run(args: argparse.Namespace) -> int:
    from crossmae.train.config import PretrainConfig, with_demo
    from crossmae.train.options import build_dataclass, read_yaml

    names = PretrainConfig.__dataclass_fields__
    flags = {k: v for k, v in vars(args).items() if k in names}
    recipe = read_yaml(args.config) if args.config else {}
    source = args.config or ""
    fresh = build_dataclass(PretrainConfig, *with_demo(recipe, flags), source=source)
    if fresh.resume is None:  # a new run's bad settings, said before torch loads (a resumed
        fresh.validate()  # run's are checked over its checkpoint's own)
    from crossmae.train.pretrain import pretrain

    return pretrain(recipe, flags, source=source)
