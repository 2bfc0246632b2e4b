"""Training-step time (forward + backward) of CrossMAE ViT-S/16 on the CPU.

    python benchmarks/cpu_step.py [--model NAME] [--batch-size 16] [--steps 10]
        [--authors-repo PATH/TO/CrossMAE]

With `--authors-repo` (a checkout of TonyLianLong/CrossMAE plus MAE's util/pos_embed.py),
the authors' `models_cross.py` is timed on the same inputs, interleaved with ours.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from crossmae import create_model


def time_steps(step: Callable[[], None], steps: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def ours(model_name: str, gamma: float, imgs: torch.Tensor) -> Callable[[], None]:
    model = create_model(model_name, prediction_ratio=gamma)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(imgs).loss.backward()

    return step


def authors(repo: str, imgs: torch.Tensor, gamma: float) -> Callable[[], None]:
    sys.path.insert(0, repo)
    import models_cross  # type: ignore[import-not-found]

    model = models_cross.mae_vit_small_patch16(
        norm_pix_loss=True, weight_fm=True, use_input=True, decoder_depth=12
    )

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(imgs, mask_ratio=0.75, kept_mask_ratio=gamma).backward()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="crossmae_vit_small_patch16")
    parser.add_argument("--prediction-ratio", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--authors-repo", help="path to the authors' CrossMAE code to compare")
    args = parser.parse_args()
    if args.authors_repo:  # checked before any timing starts
        needed = [Path(args.authors_repo) / f for f in ("models_cross.py", "util/pos_embed.py")]
        if missing := [str(f) for f in needed if not f.is_file()]:
            parser.error(f"--authors-repo needs {', '.join(missing)} (their checkout plus MAE's)")
    torch.manual_seed(0)
    imgs = torch.randn(args.batch_size, 3, 224, 224)
    runs = {"crossmae (this package)": ours(args.model, args.prediction_ratio, imgs)}
    if args.authors_repo:
        runs["authors' models_cross.py"] = authors(args.authors_repo, imgs, args.prediction_ratio)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.steps):  # interleave so background load hits both alike
        for name, step in runs.items():
            times[name] += time_steps(step, 1, warmup=0 if times[name] else 2)
    print(f"{args.model}, γ={args.prediction_ratio}, batch {args.batch_size}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip
    for name, t in times.items():
        print(f"{name:28s} median {statistics.median(t):.3f} s/step  (min {min(t):.3f})")


if __name__ == "__main__":
    main()
