"""`crossmae evaluate --checkpoint CKPT --data PATH`: a classifier's top-1 / top-5.

A classifier (a `crossmae finetune` checkpoint, a `crossmae linprobe` run's
classifier.pth, their timm exports, or the authors' fine-tuned or linear-probe
checkpoints) classifies DATA's val/ or test/ split with its own head, without training:
MAE's `main_finetune.py --eval`. The classes must be the ones it was trained on. The
result is written beside the checkpoint as <name>.eval.json (<name>.eval-ema.json with
--ema), or into --output-dir.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from crossmae.eval.settings import ClassifierEvalSettings, add_settings_arguments

    add_settings_arguments(parser, ClassifierEvalSettings, __doc__)


def run(args: argparse.Namespace) -> int:
    from crossmae.eval.settings import ClassifierEvalSettings, settings_from_args

    settings = settings_from_args(ClassifierEvalSettings, args)  # said before torch loads
    from crossmae.eval.classifier_eval import evaluate_classifier

    evaluate_classifier(settings)
    return 0
