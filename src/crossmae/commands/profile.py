"""`crossmae profile --model NAME [--compare] [--json]`: parameters, FLOPs, step speed, memory.

How users size a run before renting GPUs: `--device cuda --batch-size B` measures the real
step; `--steps 0` only counts (instant, any model size, no memory); `--activations` adds
the memory a step holds for backward, counted on the CPU, to compare models no GPU here fits.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from crossmae.errors import CrossMAEError

if TYPE_CHECKING:
    from crossmae.profiling import Profile


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a registered model (`crossmae models`)")
    parser.add_argument("--prediction-ratio", type=float, help="γ, fraction of patches decoded")
    parser.add_argument("--mask-ratio", type=float, help="fraction of patches masked")
    parser.add_argument("--img-size", type=int, help="image side in pixels")
    parser.add_argument("--batch-size", type=int, help="measured step batch (8 on CPU, 64 CUDA)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--steps",
        type=int,
        default=5,
        help="timed training steps after 2 warm-up steps; 0 only counts FLOPs",
    )
    parser.add_argument("--compile", action="store_true", help="time the torch.compile'd model")
    parser.add_argument(
        "--amp", action="store_true", help="bfloat16 autocast in the timed step and the count"
    )
    parser.add_argument(
        "--activations",
        action="store_true",
        help="count the memory held for backward (eager, on the CPU, any model size)",
    )
    parser.add_argument(
        "--grad-checkpointing",
        action="store_true",
        help="recompute each block in the backward (in the timed step and the count)",
    )
    parser.add_argument(
        "--compare", action="store_true", help="MAE vs CrossMAE at each --gammas, with ratios"
    )
    parser.add_argument(
        "--gammas",
        type=float,
        nargs="+",
        default=[0.25, 0.75],
        help="--compare: CrossMAE prediction ratios (default 0.25 0.75)",
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def run(args: argparse.Namespace) -> int:
    from crossmae.models.registry import get_config
    from crossmae.profiling import comparison_configs, profile

    overrides: dict[str, Any] = {}
    if args.img_size is not None:
        overrides["img_size"] = args.img_size
    if args.mask_ratio is not None:
        overrides["mask_ratio"] = args.mask_ratio
    if args.steps < 0:
        raise CrossMAEError(f"--steps must be 0 or more, got {args.steps}")
    if args.compare:
        if args.prediction_ratio is not None:
            raise CrossMAEError("--compare takes its prediction ratios from --gammas")
        rows = comparison_configs(args.model, args.gammas, **overrides)
    else:
        if args.prediction_ratio is not None:
            if get_config(args.model).decoder != "cross":
                raise CrossMAEError(
                    f"{args.model} decodes every masked patch; --prediction-ratio is CrossMAE's"
                )
            overrides["prediction_ratio"] = args.prediction_ratio
        rows = [(args.model, get_config(args.model, **overrides))]
    batch = args.batch_size if args.batch_size is not None else 64 if args.device == "cuda" else 8
    options = {
        "batch_size": batch,
        "device": args.device,
        "steps": args.steps,
        "compile": args.compile,
        "amp": args.amp,
        "activations": args.activations,
        "grad_checkpointing": args.grad_checkpointing,
    }
    profiles = [profile(name, config, **options) for name, config in rows]
    report = {"flops": FLOPS_NOTE, "profiles": [p.to_dict() for p in profiles]}
    if args.compare:
        report["versus_mae"] = [versus(profiles[0], p) for p in profiles[1:]]
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print_table(profiles, report.get("versus_mae", []))
    return 0


FLOPS_NOTE = (
    "forward FLOPs per image (multiply-add = 2), counted by torch FlopCounterMode on the meta "
    "device; 'linear' = linear layers, patch conv and fusion mix; 'attention' = q·kᵀ and "
    "attention·v. The paper's decoder numbers count linear layers only."
)


def versus(mae: Profile, cross: Profile) -> dict[str, Any]:
    """How many times cheaper (FLOPs, memory) or faster (step) `cross` is than `mae`."""
    out = {
        "name": cross.name,
        "prediction_ratio": cross.prediction_ratio,
        "decoder_flops_ratio": mae.decoder_flops.total / cross.decoder_flops.total,
        "decoder_linear_flops_ratio": mae.decoder_flops.linear / cross.decoder_flops.linear,
        "total_flops_ratio": total(mae) / total(cross),
    }
    if mae.step and cross.step:
        out["step_speedup"] = cross.step.images_per_s / mae.step.images_per_s
        if mae.step.peak_memory_mb and cross.step.peak_memory_mb:
            out["memory_ratio"] = mae.step.peak_memory_mb / cross.step.peak_memory_mb
    if mae.activations and cross.activations:
        out["activations_ratio"] = mae.activations.per_image_mib / cross.activations.per_image_mib
        out["held_ratio"] = mae.activations.held_mib / cross.activations.held_mib
    return out


def times(ratio: float, fewer: str, more: str) -> str:
    """MAE's cost over CrossMAE's in words: "2.60x fewer", or for a ratio below one "1.02x
    more" (never "0.98x fewer")."""
    return f"{ratio:.2f}x {fewer}" if ratio >= 1 else f"{1 / ratio:.2f}x {more}"


def total(p: Profile) -> float:
    return p.encoder_flops.total + p.decoder_flops.total


def print_table(profiles: list[Profile], comparisons: list[dict[str, Any]]) -> None:
    print(
        f"{'model':36} {'decoder':>10} {'p':>5} {'γ':>5} {'params M enc/dec':>17} "
        f"{'GFLOPs/img enc':>15} {'dec (lin+attn)':>19} {'img/s':>8} {'peak MB':>8}"
    )
    for p in profiles:
        dec = f"{p.decoder} {p.decoder_depth}"
        params = f"{p.params['encoder'] / 1e6:.1f} / {p.params['decoder'] / 1e6:.1f}"
        d = p.decoder_flops
        dec_flops = f"{d.total / 1e9:.2f} ({d.linear / 1e9:.2f}+{d.attention / 1e9:.2f})"
        speed = f"{p.step.images_per_s:8.1f}" if p.step else f"{'-':>8}"
        mem = p.step.peak_memory_mb if p.step else None
        memory = f"{mem:8.0f}" if mem is not None else f"{'n/a':>8}"
        print(
            f"{p.name:36} {dec:>10} {p.mask_ratio:5.2f} {p.prediction_ratio:5.2f} "
            f"{params:>17} {p.encoder_flops.total / 1e9:15.2f} {dec_flops:>19} "
            f"{speed} {memory}"
        )
    if profiles and profiles[0].step:
        s = profiles[0].step
        print(
            f"step: batch {s.batch_size} on {s.device}, mean of {s.steps} steps; memory: {s.memory}"
        )
    for p in profiles:
        if a := p.activations:
            print(
                f"{p.name} γ={p.prediction_ratio:g} holds for backward ({a.dtype}, eager): "
                f"{a.per_image_mib:.1f} MiB/img (encoder {a.encoder_per_image_mib:.1f}) "
                f"+ {a.per_step_mib:.0f} MiB/step of weight "
                f"copies + {a.state_mib:.0f} MiB weights and AdamW state = "
                f"{a.held_mib / 1024:.2f} GiB at batch {a.batch_size}"
            )
    for c in comparisons:
        line = (
            f"{c['name']} γ={c['prediction_ratio']:g}: decoder FLOPs "
            f"{times(c['decoder_flops_ratio'], 'fewer', 'more')} than MAE's (linear layers "
            f"alone {times(c['decoder_linear_flops_ratio'], 'fewer', 'more')}), encoder+decoder "
            f"{times(c['total_flops_ratio'], 'fewer', 'more')}"
        )
        if "step_speedup" in c:
            line += f"; step {times(c['step_speedup'], 'faster', 'slower')}"
        if "memory_ratio" in c:
            line += f", {times(c['memory_ratio'], 'less', 'more')} memory"
        if "activations_ratio" in c:
            line += (
                f"; activations {times(c['activations_ratio'], 'smaller', 'larger')}, "
                f"{times(c['held_ratio'], 'less', 'more')} held at the batch"
            )
        print(line)
    print(f"FLOPs: {FLOPS_NOTE}")
