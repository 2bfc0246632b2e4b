"""`crossmae knn --checkpoint CKPT --data PATH [--k 20] [--temperature 0.07]`: weighted kNN.

Each evaluation image is classified by the k training images whose frozen features are
most cosine-similar, each voting exp(similarity / temperature) (DINO's protocol). The
result is written beside the checkpoint as <name>.knn.json (or into --output-dir).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from crossmae.eval.settings import KnnSettings, add_settings_arguments

    add_settings_arguments(parser, KnnSettings, __doc__)


def run(args: argparse.Namespace) -> int:
    from crossmae.eval.settings import KnnSettings, settings_from_args

    settings = settings_from_args(KnnSettings, args)  # bad settings: said before torch loads
    from crossmae.eval.knn_eval import knn_eval

    knn_eval(settings)
    return 0
