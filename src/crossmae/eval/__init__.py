"""Evaluation as in the paper: fine-tuning, linear probing and kNN from any checkpoint.

The path of a checkpoint: `backbone.load_backbone` reads it (`models.checkpoint.read_model`:
ours or the authors', an autoencoder or a timm ViT) and keeps the encoder's weights under
timm's names; `models.classifier.build_vit` makes a timm ViT of that shape and
`backbone.load_encoder` fills it; `features.feature_extractor` turns it into avg / token /
fused features for kNN and the probe, `finetune` trains it whole.

Building blocks: `knn_accuracy`, `LARS`, `probe_head.LinearProbe`, `layer_decay_scales`,
`resample_pos_embed`; the protocols are `crossmae finetune | linprobe | knn | evaluate`
(`finetune`, `linprobe`, `knn_eval`, `classifier_eval` here). Import the submodules
(`crossmae.eval.knn`, ...): this file stays light for the CLI.
"""
