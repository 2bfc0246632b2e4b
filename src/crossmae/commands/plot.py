"""`crossmae plot RUN_DIR [--output FILE.png]`: loss and learning-rate curves of a run."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run", help="a pretraining, fine-tuning or probe output directory (or its log.jsonl)"
    )
    parser.add_argument("--output", help="where to write the PNG (default RUN_DIR/loss.png)")


def run(args: argparse.Namespace) -> int:
    from crossmae.viz.curves import plot_training_log

    print(f"wrote {plot_training_log(args.run, args.output)}")
    return 0
