"""`crossmae linprobe --checkpoint CKPT --data PATH [--cached]`: MAE's linear probe.

A BatchNorm (no affine) + linear head on the frozen encoder, trained with LARS; `--cached`
extracts the features once and trains the head on them (fast: small data sets, quick
comparisons). Results in --output-dir/results.json. Recipes:
`--config configs/linprobe_<recipe>.yaml`.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from crossmae.eval.settings import LinprobeSettings, add_settings_arguments

    add_settings_arguments(parser, LinprobeSettings, __doc__)


def run(args: argparse.Namespace) -> int:
    from crossmae.eval.settings import LinprobeSettings, settings_from_args

    settings = settings_from_args(LinprobeSettings, args)  # bad settings: said before torch loads
    from crossmae.eval.linprobe import linprobe

    linprobe(settings)
    return 0
