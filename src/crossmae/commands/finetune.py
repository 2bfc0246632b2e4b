"""`crossmae finetune --checkpoint CKPT --data PATH`: MAE's end-to-end fine-tuning.

The encoder of any checkpoint (ours or the authors', MAE or CrossMAE) becomes a timm ViT
classifier trained with layer decay, RandAugment, mixup/cutmix and AdamW; top-1/top-5 on
the evaluation split every epoch, checkpoint-best.pth / checkpoint-last.pth and
results.json in --output-dir. Recipes: `--config configs/finetune_<recipe>.yaml`.
Several processes: `torchrun --nproc_per_node=N -m crossmae finetune ...`.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from crossmae.eval.settings import FinetuneSettings, add_settings_arguments

    add_settings_arguments(parser, FinetuneSettings, __doc__)


def run(args: argparse.Namespace) -> int:
    from crossmae.eval.settings import FinetuneSettings, settings_from_args

    settings = settings_from_args(FinetuneSettings, args)  # bad settings: said before torch loads
    from crossmae.eval.finetune import finetune

    finetune(settings)
    return 0
