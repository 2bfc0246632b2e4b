"""Training-step throughput, model TFLOP/s, MFU and peak memory: MAE vs CrossMAE.

GPU (the published table; bf16 autocast, synthetic images already on the device):

    python benchmarks/throughput.py --device cuda --sizes small base large --batch-size 256 \
        --data /path/to/jpeg/folder --json throughput.json

CPU smoke mode (what CI runs): ViT-Tiny at 32 px, a few steps, eager only.

    python benchmarks/throughput.py --smoke

MFU = counted forward FLOPs x 3 (forward + backward) x images/s / the accelerator's peak
bf16 FLOP/s (`--peak-tflops`, default 989 for an H100 SXM). FLOPs come from
`crossmae.profiling.count_flops` (linear layers, patch embedding and attention). The JSON
also says whether the device normalises the loaders' uint8 batches to the CPU's values,
bit for bit (`uint8_normalised_as_on_cpu`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset, default_collate

from crossmae.data import model_input, open_image_dataset, pretrain_transform
from crossmae.errors import CrossMAEError
from crossmae.eval.results import write_results
from crossmae.models.registry import get_config
from crossmae.profiling import count_flops, measure_step
from crossmae.train.batches import SeededItems

PATCH = {"small": 16, "base": 16, "large": 16, "huge": 14}


def method_configs(size: str, smoke: bool) -> list[tuple[str, Any]]:
    """MAE, CrossMAE γ = 0.25 and γ = 0.75 with the paper's decoders."""
    if smoke:
        tiny = {"depth": 4, "decoder_depth": 4}
        cross = "crossmae_vit_tiny_patch4_32"
        return [
            ("MAE", get_config("mae_vit_tiny_patch4_32", **tiny)),
            ("CrossMAE γ=0.25", get_config(cross, prediction_ratio=0.25, **tiny)),
            ("CrossMAE γ=0.75", get_config(cross, prediction_ratio=0.75, **tiny)),
        ]
    p = PATCH[size]
    return [
        ("MAE", get_config(f"mae_vit_{size}_patch{p}")),
        ("CrossMAE γ=0.25", get_config(f"crossmae_vit_{size}_patch{p}", prediction_ratio=0.25)),
        ("CrossMAE γ=0.75", get_config(f"crossmae_vit_{size}_patch{p}", prediction_ratio=0.75)),
    ]


def model_rows(args: argparse.Namespace, save: Callable[[list[dict]], None]) -> list[dict]:
    """One row per size, mode and method, handed to `save` as each is measured so that a run
    cut short keeps what it measured: every method eager (seconds each) before any is
    compiled (a minute or more each at ViT-B). A row that cannot run (out of memory, a
    compile failure) records its error and the sweep goes on."""
    rows: list[dict[str, Any]] = []
    sizes = ["tiny"] if args.smoke else args.sizes
    modes = [False, True] if args.compile and not args.smoke else [False]
    methods = {size: [(method, config, count_flops(config))
                      for method, config in method_configs(size, args.smoke)]
               for size in sizes}  # fmt: skip
    for compiled in modes:
        for size in sizes:
            for method, config, flops in methods[size]:
                fwd = flops["encoder"].total + flops["decoder"].total
                torch._dynamo.reset()
                row = {"size": size, "method": method, "compiled": compiled,
                       "fwd_gflops_per_image": fwd / 1e9,
                       "decoder_gflops_per_image": flops["decoder"].total / 1e9}  # fmt: skip
                try:
                    stats = measure_step(
                        config, args.batch_size, args.device, args.steps, args.warmup,
                        compile=compiled, amp=args.device == "cuda",
                    )  # fmt: skip
                except CrossMAEError as err:
                    row["error"] = str(err)
                else:
                    tflops = 3 * fwd * stats.images_per_s / 1e12
                    row |= {
                        "images_per_s": stats.images_per_s, "step_ms": stats.step_ms,
                        "tflops": tflops, "mfu": tflops / args.peak_tflops,
                        "peak_memory_gib": None if stats.peak_memory_mb is None
                                           else stats.peak_memory_mb / 1024,
                    }  # fmt: skip
                rows.append(row)
                print(json.dumps(row), flush=True)
                save(relative_to_mae(rows))
    return relative_to_mae(rows)


def relative_to_mae(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each measured row with its images/s and peak memory over MAE's at the same size and
    mode (the targets: CrossMAE γ = 0.25 at ≥ 1.4× MAE's images/s and ≤ 0.6× its memory)."""
    mae = {(r["size"], r["compiled"]): r for r in rows if r["method"] == "MAE" and "error" not in r}
    out = []
    for r in rows:
        base = mae.get((r["size"], r["compiled"]))
        if base is None or "error" in r:
            out.append(r)
            continue
        out.append({**r, "speed_vs_mae": r["images_per_s"] / base["images_per_s"],
                    "memory_vs_mae": r["peak_memory_gib"] / base["peak_memory_gib"]
                    if base["peak_memory_gib"] else None})  # fmt: skip
    return out


def data_pipeline_row(
    dataset: Dataset, folder: str, num_images: int, batch_size: int = 256
) -> dict[str, Any]:
    """What one pretraining loader worker does, on one core: JPEG decode, RandomResizedCrop
    + flip to uint8 crops, each image seeded by (seed, epoch, index), collated in batches.
    (The device normalises the batches.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    items = SeededItems(dataset, 0, pretrain_transform(224, uint8=True))
    n = min(num_images, len(dataset))
    start = time.perf_counter()
    for first in range(0, n, batch_size):
        default_collate([items[(0, i)] for i in range(first, min(first + batch_size, n))])
    seconds = time.perf_counter() - start
    torch.set_num_threads(threads)  # the model rows use every core
    return {"data": folder, "images": n, "images_per_s_per_core": n / seconds}


def uint8_normalised_as_on_cpu(device: torch.device) -> bool:
    """Whether `model_input` normalises every byte value on `device`, grey and RGB, to the
    CPU's values (those of the float transforms) bit for bit: the tests check the CPU only."""
    levels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    cpu = torch.device("cpu")
    return all(
        torch.equal(model_input(images, device).cpu(), model_input(images, cpu))
        for images in (levels, levels.repeat(1, 3, 1, 1))
    )


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ("| ViT | method | compiled | images/s | × MAE | step ms | GFLOPs/img (dec) | TFLOP/s "
            "| MFU | peak GiB | × MAE |")  # fmt: skip
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        start = f"| {r['size']} | {r['method']} | {'yes' if r['compiled'] else 'no'} | "
        gflops = f"{r['fwd_gflops_per_image']:.2f} ({r['decoder_gflops_per_image']:.2f})"
        if "error" in r:
            lines.append(f"{start}{r['error']} | | | {gflops} | | | | |")
            continue
        lines.append(
            f"{start}{r['images_per_s']:.0f} | {_ratio(r.get('speed_vs_mae'))} | "
            f"{r['step_ms']:.1f} | {gflops} | {r['tflops']:.1f} | {100 * r['mfu']:.1f}% | "
            f"{_gib(r['peak_memory_gib'])} | {_ratio(r.get('memory_vs_mae'))} |"
        )
    return "\n".join(lines)


def _gib(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU smoke mode: ViT-Tiny, 32 px")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--sizes", nargs="+", choices=list(PATCH), default=["small", "base", "large"]
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time each model torch.compile'd (not in --smoke)",
    )
    parser.add_argument("--data", help="a folder of real JPEGs for the data-pipeline row")
    parser.add_argument("--data-images", type=int, default=2000)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.device, args.batch_size, args.steps, args.warmup = "cpu", 8, 2, 1
    for name in ("batch_size", "steps", "warmup"):  # warmup: the compile happens in it
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda was asked for but no CUDA GPU is available")
    jpegs = None
    if args.data:  # a wrong path fails now, not after the sweep
        try:
            jpegs = open_image_dataset(args.data)
        except CrossMAEError as err:
            parser.error(str(err))
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name()
        if args.device == "cuda"
        else platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "batch_size": args.batch_size,
        "peak_tflops": args.peak_tflops,
        "uint8_normalised_as_on_cpu": uint8_normalised_as_on_cpu(torch.device(args.device)),
    }

    def save(rows: list[dict[str, Any]]) -> None:
        result["models"] = rows
        if args.json:
            write_results(args.json, result)

    if jpegs is not None:  # first: seconds, where the compiled rows may run out of time
        d = result["data_pipeline"] = data_pipeline_row(jpegs, args.data, args.data_images)
        print(f"data pipeline: {d['images_per_s_per_core']:.0f} images/s per core ({d['data']})")
        save([])
    rows = model_rows(args, save)
    print(markdown(rows))
    save(rows)
    return result


if __name__ == "__main__":
    main()
