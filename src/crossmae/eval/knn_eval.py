"""`crossmae knn`: weighted kNN top-1 of a checkpoint's frozen features."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from crossmae.eval.backbone import load_backbone
from crossmae.eval.cache import cache_features
from crossmae.eval.knn import knn_accuracy
from crossmae.eval.results import result_table, results_beside
from crossmae.eval.run import RunContext
from crossmae.eval.settings import KnnSettings


def knn_eval(s: KnnSettings) -> dict[str, Any]:
    """Extract features of both splits, classify the evaluation split by its k nearest
    training images, and write the result table as JSON."""
    path = results_beside(s.checkpoint, s.output_dir, "knn")
    with RunContext.start(s, path.parent) as ctx:
        backbone = load_backbone(s.checkpoint)
        began = time.time()
        cached = cache_features(s, backbone, s.features, ctx)
        (train_x, train_y), (test_x, test_y) = cached.train, cached.eval
        top1 = knn_accuracy(
            train_x.to(ctx.device), train_y, test_x.to(ctx.device), test_y,
            cached.num_classes, s.k, s.temperature,
        )  # fmt: skip
        results = {
            "command": "knn",
            "checkpoint": str(s.checkpoint),
            "encoder": backbone.description,
            "features": s.features,
            "feature_dim": cached.num_features,
            "classes": cached.num_classes,
            "train_images": len(train_y),
            "eval_images": len(test_y),
            "k": min(s.k, len(train_y)),  # what voted: at most every training image
            "temperature": s.temperature,
            "top1": top1,
            "seconds": round(time.time() - began, 1),
        }
        ctx.finish(result_table(f"kNN {Path(s.checkpoint).name}", results), results, path.name)
        return results
