"""Evaluation as in the paper: fine-tuning, linear probing and kNN from any checkpoint.

Building blocks: `load_backbone` (ours or the authors' checkpoints as a timm ViT),
`feature_extractor` (avg / token / fused features), `knn_accuracy`, `LARS`,
`LinearProbe`, `layer_decay_scales`, `resample_pos_embed`; the protocols are
`crossmae finetune | linprobe | knn` (`finetune`, `linprobe`, `knn_eval` here).
Import the submodules (`crossmae.eval.knn`, ...): this file stays light for the CLI.
"""
