"""`crossmae evaluate`: a classifier's top-1 / top-5 with its own head (fine-tuned, or a
linear probe's classifier.pth), without training (MAE's `main_finetune.py --eval`): to
check a released or an exported model."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from timm.models.vision_transformer import VisionTransformer
from torch.utils.data import Dataset

from crossmae.data import eval_transform, open_image_dataset
from crossmae.data.subset import random_subset
from crossmae.errors import CrossMAEError
from crossmae.eval.backbone import load_backbone
from crossmae.eval.data import CheckedLabels, make_loader
from crossmae.eval.loop import evaluate
from crossmae.eval.pos_embed import resample_pos_embed
from crossmae.eval.results import result_table, results_beside
from crossmae.eval.run import RunContext
from crossmae.eval.settings import ClassifierEvalSettings
from crossmae.models.classifier import ViTArch, build_vit, ema_classifier


def evaluate_classifier(s: ClassifierEvalSettings) -> dict[str, Any]:
    """Classify the evaluation images and write top-1 / top-5 beside the checkpoint as
    <name>.eval.json (<name>.eval-ema.json for the EMA weights), or into --output-dir."""
    path = results_beside(s.checkpoint, s.output_dir, "eval-ema" if s.ema else "eval")
    with RunContext.start(s, path.parent) as ctx:
        vit, classes, description = _classifier(s)
        arch = ViTArch.from_vit(vit)
        size = s.image_size() or arch.img_size
        if size != arch.img_size:
            vit = _at_size(vit, size)
        evals = open_image_dataset(
            s.eval_data if s.eval_data is not None else s.data, "val",
            eval_transform(size, arch.in_chans, uint8=True), arch.in_chans,
        )  # fmt: skip
        _check_classes(evals, classes, vit.num_classes, s.num_classes)
        names = classes or getattr(evals, "classes", None) or list(map(str, range(vit.num_classes)))
        evals = random_subset(evals, s.eval_images, s.seed, "evaluation", "--eval-images")
        loader = make_loader(evals, s.batch_size, ctx.dist, train=False, num_workers=s.num_workers)
        began = time.time()
        labels = CheckedLabels(loader, vit.num_classes, "as many as the classifier's outputs")
        metrics = evaluate(vit.to(ctx.device), labels, ctx.device, ctx.autocast, classes=names)
        report = getattr(evals, "report", None)
        skipped = report() if report is not None else None
        results = {
            "command": "evaluate",
            "checkpoint": str(s.checkpoint),
            "classifier": description,
            "weights": "ema" if s.ema else "model",
            "classes": vit.num_classes,
            "eval_images": metrics["images"],
            "image_size": f"{size[0]}x{size[1]}",
            "top1": metrics["top1"],
            "top5": metrics["top5"],
            "loss": metrics["loss"],
            "lowest_classes": _lowest(metrics["per_class"]),
            "seconds": round(time.time() - began, 1),
            **({"skipped": skipped} if skipped else {}),
            "per_class_top1": metrics["per_class"],
        }
        ctx.finish(result_table(f"evaluated {Path(s.checkpoint).name}", results), results,
                   path.name)  # fmt: skip
        return results


def _lowest(per_class: dict[str, float | None], count: int = 3) -> str:
    """'cat 41.0, dog 52.5, bird 60.1': the classes it gets wrong most often."""
    scored = sorted((top1, name) for name, top1 in per_class.items() if top1 is not None)
    return ", ".join(f"{name} {top1:.1f}" for top1, name in scored[:count])


def _classifier(s: ClassifierEvalSettings) -> tuple[VisionTransformer, list[str] | None, str]:
    """The classifier, its class names if the file has them, and what it is."""
    if s.ema:
        vit, classes = ema_classifier(s.checkpoint)
        return vit, classes, "fine-tuned ViT classifier, EMA weights (crossmae format)"
    backbone = load_backbone(s.checkpoint)
    vit = backbone.model
    if not isinstance(vit, VisionTransformer) or not vit.num_classes:
        kind = "ViT encoder" if isinstance(vit, VisionTransformer) else "pretraining checkpoint"
        raise CrossMAEError(
            f"{s.checkpoint} is a {kind}, with no classifier head; fine-tune it "
            "(crossmae finetune) or measure its features (knn, linprobe)"
        )
    return vit, backbone.classes, backbone.description


def _at_size(vit: VisionTransformer, size: tuple[int, int]) -> VisionTransformer:
    """The same classifier for another input size: position embeddings resampled (bicubic)."""
    old = ViTArch.from_vit(vit)
    resized = build_vit(old, vit.num_classes, vit.global_pool, size)
    state = vit.state_dict()
    state["pos_embed"] = resample_pos_embed(
        state["pos_embed"], old.grid_size, tuple(resized.patch_embed.grid_size),
        vit.num_prefix_tokens,
    )  # fmt: skip
    resized.load_state_dict(state)
    return resized


def _check_classes(
    evals: Dataset, classes: list[str] | None, outputs: int, num_classes: int | None
) -> None:
    """The data's classes must be the head's: the same names in the same order where the
    checkpoint names them, otherwise as many (tar shards, with no names, are checked per
    label as they are read)."""
    named = getattr(evals, "classes", None)
    if num_classes is not None and num_classes != outputs:
        raise CrossMAEError(f"--num-classes is {num_classes} but the classifier has {outputs}")
    if named is None:
        return
    if classes is not None and list(named) != classes:
        shown = ", ".join(classes[:4]) + (", ..." if len(classes) > 4 else "")
        raise CrossMAEError(
            f"the evaluation images' class folders are not the ones the classifier was "
            f"trained on ({len(classes)}: {shown}); give it the same classes"
        )
    if len(named) != outputs:
        raise CrossMAEError(
            f"the evaluation images have {len(named)} classes but the classifier has {outputs} "
            "outputs"
        )
