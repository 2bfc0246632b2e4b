"""Representation quality per pretraining budget on CIFAR-10: MAE vs CrossMAE γ = 0.25 / 0.75.

Each method pretrains the same ViT-Tiny (patch 4, 32 px) for the same epochs with its
recipe in configs/ (`cifar10_*.yaml`), then its final checkpoint is evaluated with kNN, a
linear probe on cached features and a short fine-tune (configs/linprobe_cifar10.yaml,
configs/finetune_cifar10.yaml) on the test split, final epoch only. Checkpoints kept along
the way give the curve of kNN / probe accuracy against pretraining wall time. Every method
pretrains first, then every method is probed, then fine-tuned, so that a run cut short
compares the methods as far as it went. "after step 1 min" is the pretraining time less
its set-up and first step (where torch.compile compiles).

GPU (bf16, compiled, images held on the GPU); one method per call fits a 10-minute slot,
and the table is rebuilt from every result already in --output-dir. The same command
picks up a call cut short: during pretraining it resumes from the last checkpoint (the
pretraining time is the run's own, summed over the calls), after it it evaluates that
pretraining:

    python benchmarks/representation.py --data /path/to/cifar-10 --device cuda \
        --methods mae --epochs 100 --output-dir runs/representation

CPU smoke mode (what CI runs): a few hundred images, a shallow model, 1 epoch.

    python benchmarks/representation.py --smoke --output-dir /tmp/representation
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from matplotlib.figure import Figure

from crossmae.data import open_image_dataset
from crossmae.errors import CrossMAEError
from crossmae.eval.finetune import finetune
from crossmae.eval.knn_eval import knn_eval
from crossmae.eval.linprobe import linprobe
from crossmae.eval.results import write_results
from crossmae.eval.settings import FinetuneSettings, KnnSettings, LinprobeSettings
from crossmae.models.autoencoder import MaskedAutoencoder
from crossmae.models.checkpoint import save_model
from crossmae.profiling import count_flops
from crossmae.serialization import atomic_write_text
from crossmae.train.checkpointing import LATEST, epoch_checkpoint_name, load_training_state
from crossmae.train.config import PretrainConfig
from crossmae.train.logging import read_log
from crossmae.train.options import build_dataclass, read_yaml
from crossmae.viz.curves import CURVE_SIZE
from crossmae.viz.figure import new_figure, pixel_axes, save_png

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RESULT = "result.json"
FIGURE = "representation.png"
PRETRAINED = "pretrain.json"  # pretraining's wall time, speed, memory, kept epochs
PROBED = "probed.json"  # that, and kNN / probe accuracy along the curve: all but the fine-tune


@dataclass(frozen=True)
class Method:
    key: str
    label: str
    recipe: str  # pretraining recipe in configs/
    pretrains: bool = True  # False: the recipe's encoder at random init, the baseline
    scale_lr_by_ratio: bool = True  # False: MAE's learning rate, not the paper's γ/p times it
    blr_factor: float = 1.0  # times the recipe's blr: the learning-rate sweep's points


METHODS = {
    m.key: m
    for m in (
        Method("mae", "MAE", "cifar10_mae_vit_tiny.yaml"),
        Method("crossmae-0.25", "CrossMAE γ=0.25", "cifar10_crossmae_vit_tiny_gamma025.yaml"),
        Method("crossmae-0.75", "CrossMAE γ=0.75", "cifar10_crossmae_vit_tiny_gamma075.yaml"),
        Method(
            "crossmae-0.25-mae-lr",
            "CrossMAE γ=0.25, MAE's lr",
            "cifar10_crossmae_vit_tiny_gamma025.yaml",
            scale_lr_by_ratio=False,
        ),
        Method(
            "crossmae-0.25-2x-mae-lr",
            "CrossMAE γ=0.25, 2× MAE's lr",
            "cifar10_crossmae_vit_tiny_gamma025.yaml",
            scale_lr_by_ratio=False,
            blr_factor=2.0,
        ),
        Method(
            "crossmae-0.25-4x-mae-lr",
            "CrossMAE γ=0.25, 4× MAE's lr",
            "cifar10_crossmae_vit_tiny_gamma025.yaml",
            scale_lr_by_ratio=False,
            blr_factor=4.0,
        ),
        Method("mae-2x-lr", "MAE, 2× lr", "cifar10_mae_vit_tiny.yaml", blr_factor=2.0),
        Method("random-init", "random init", "cifar10_mae_vit_tiny.yaml", pretrains=False),
    )
}
DEFAULT_METHODS = ["mae", "crossmae-0.25", "crossmae-0.75"]
SEED_STYLES = ["-", "--", ":", "-."]
# The smoke mode's shallow model: it checks the plumbing, not the numbers.
SMOKE_MODEL = {"embed_dim": 64, "num_heads": 2, "depth": 2, "decoder_depth": 2}


def data_settings(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """What every evaluation shares: data, subset, device, seed, workers."""
    return {
        "data": args.data, "train_images": args.train_images, "eval_images": args.eval_images,
        "device": args.device, "seed": seed, "num_workers": args.num_workers,
    }  # fmt: skip


def pretrain_method(method: Method, args: argparse.Namespace, seed: int, out: Path) -> dict:
    """`crossmae pretrain --resume auto` with the method's recipe in a child process, as a
    user runs it: the run's wall time from setup to its final checkpoint (summed over
    resumes; the interpreter's start-up is not in it), the part of it after the first step
    (set-up and compilation done), images/s (median of the log's), peak memory and the kept
    epochs."""
    recipe = read_yaml(CONFIGS / method.recipe)
    keep = max(1, args.epochs // args.curve_points)
    settings = {
        **recipe, "data": args.data, "train_images": args.train_images, "epochs": args.epochs,
        "warmup_epochs": min(recipe["warmup_epochs"], args.epochs / 10),
        "keep_every_epochs": keep, "recon_every_epochs": 0, "knn_every_epochs": 0,
        "tensorboard": False, "log_every": args.log_every, "device": args.device,
        "compile": args.compile, "seed": seed, "num_workers": args.num_workers,
        "output_dir": str(out / "pretrain"), "resume": "auto",
        "scale_lr_by_ratio": method.scale_lr_by_ratio,
        "blr": recipe["blr"] * method.blr_factor,
    }  # fmt: skip
    if args.batch_size:
        settings["batch_size"] = args.batch_size
    if args.smoke:
        settings["model_overrides"] = SMOKE_MODEL
    config = build_dataclass(PretrainConfig, settings).validate().model_config()
    out.mkdir(parents=True, exist_ok=True)
    if not method.pretrains:
        torch.manual_seed(seed)
        (out / "pretrain").mkdir()
        save_model(out / "pretrain" / LATEST, MaskedAutoencoder(config))
        return {"pretrain_seconds": 0.0, "kept_epochs": [{"epoch": 0, "seconds": 0.0}]}
    if (out / "pretrain").exists():
        print(f"{method.label}, seed {seed}: resuming the pretraining in {out}", flush=True)
    atomic_write_text(yaml.safe_dump(settings, sort_keys=False), out / "pretrain.yaml")
    command = [sys.executable, "-m", "crossmae", "pretrain", "--config", str(out / "pretrain.yaml")]
    if subprocess.run(command).returncode != 0:
        raise CrossMAEError(f"pretraining {method.label} failed: {' '.join(command)}")
    seconds = load_training_state(out / "pretrain" / LATEST)["train_seconds"]
    records = read_log(out / "pretrain" / "log.jsonl")
    speeds = [r["images_per_s"] for r in records if "images_per_s" in r]
    gpu = [r["gpu_mem_gib"] for r in records if "gpu_mem_gib" in r]
    host = [r["host_mem_gib"] for r in records if "host_mem_gib" in r]
    flops = count_flops(config)
    steps = [r["seconds"] for r in records if "loss" in r]
    return {
        "pretrain_seconds": round(seconds, 1),
        "after_first_step_seconds": round(steps[-1] - steps[0], 1),
        "images_per_s": statistics.median(speeds),
        "decoder_gflops_per_image": flops["decoder"].total / 1e9,
        "encoder_gflops_per_image": flops["encoder"].total / 1e9,
        "peak_memory_gib": max(gpu or host) if gpu or host else None,
        "memory": "CUDA peak allocated" if gpu else "peak resident memory of the process",
        "kept_epochs": _kept_epochs(records, keep, args.epochs),
    }


def _kept_epochs(records: list[dict], keep: int, epochs: int) -> list[dict]:
    """(epoch, the run's wall seconds) for each kept checkpoint and the last epoch; a
    resumed run logs again what it redoes, and its later record counts."""
    ends = {round(r["epoch"]): r["seconds"] for r in records
            if "loss" in r and float(r["epoch"]).is_integer()}  # fmt: skip
    kept = list(range(keep, epochs + 1, keep))
    if epochs not in kept:
        kept.append(epochs)
    return [{"epoch": e, "seconds": round(ends[e], 1)} for e in kept]


def probe_scores(checkpoint: Path, args: argparse.Namespace, seed: int, out: Path) -> dict:
    """kNN and cached linear probe top-1 (final epoch) of one checkpoint."""
    common = {"checkpoint": str(checkpoint), **data_settings(args, seed)}
    knn = knn_eval(build_dataclass(KnnSettings, common, {
        "batch_size": 512, "output_dir": str(out / "knn")}).validate())  # fmt: skip
    probe_recipe = read_yaml(CONFIGS / "linprobe_cifar10.yaml")
    probe = linprobe(build_dataclass(LinprobeSettings, probe_recipe, common, {
        "epochs": args.probe_epochs, "warmup_epochs": args.probe_epochs / 9,
        "tensorboard": False, "resume": "auto",  # a probe cut short goes on from there
        "output_dir": str(out / "linprobe")}).validate())  # fmt: skip
    return {"knn_top1": knn["top1"], "linprobe_top1": probe["top1"]}


def finetune_scores(checkpoint: Path, args: argparse.Namespace, seed: int, out: Path) -> dict:
    """The short fine-tune's top-1 (final epoch) and time."""
    recipe = read_yaml(CONFIGS / "finetune_cifar10.yaml")
    if args.finetune_batch_size:
        recipe["batch_size"] = args.finetune_batch_size
    tuned = finetune(build_dataclass(FinetuneSettings, recipe, data_settings(args, seed), {
        "checkpoint": str(checkpoint), "epochs": args.finetune_epochs,
        "warmup_epochs": args.finetune_epochs / 20, "tensorboard": False,
        "log_every": args.log_every, "resume": "auto",  # cut short: it goes on from there
        "output_dir": str(out / "finetune")}).validate())  # fmt: skip
    return {"finetune_top1": tuned["top1"], "finetune_seconds": tuned["train_seconds"]}


def method_folder(args: argparse.Namespace, key: str, seed: int) -> Path:
    return Path(args.output_dir) / f"{key}-seed{seed}"


def ensure_pretrained(method: Method, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """The method's pretraining numbers, pretraining it first unless that was done."""
    out = method_folder(args, method.key, seed)
    if (out / PRETRAINED).exists():  # done before (an evaluation cut short, or a later pass)
        return json.loads((out / PRETRAINED).read_text())
    pretrained = pretrain_method(method, args, seed, out)
    write_results(out / PRETRAINED, pretrained)
    return pretrained


def probe_method(method: Method, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Pretrain (unless done), then kNN and the probe at every kept checkpoint (unless done);
    the last checkpoint's scores are the method's."""
    out = method_folder(args, method.key, seed)
    for done in (RESULT, PROBED):
        if (out / done).exists():
            return json.loads((out / done).read_text())
    result: dict[str, Any] = {"method": method.label, "key": method.key, "seed": seed}
    result |= ensure_pretrained(method, args, seed)
    print(f"{method.label}, seed {seed}: pretrained in {out}, probing", flush=True)
    curve = []
    kept = result.pop("kept_epochs")
    for point in kept:
        name = LATEST if point is kept[-1] else epoch_checkpoint_name(point["epoch"])
        scores = probe_scores(out / "pretrain" / name, args, seed, out / f"epoch{point['epoch']}")
        curve.append({**point, **scores})
    result |= scores | {"curve": curve}  # the last checkpoint's scores
    write_results(out / PROBED, result)
    return result


def run_method(method: Method, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """The method's whole result: `probe_method`'s, then the fine-tune of its last
    checkpoint (unless done)."""
    out = method_folder(args, method.key, seed)
    if (out / RESULT).exists():
        print(f"{method.label}, seed {seed}: already in {out / RESULT}, kept", flush=True)
        return json.loads((out / RESULT).read_text())
    result = probe_method(method, args, seed)
    last = result["curve"][-1]["epoch"]
    print(f"{method.label}, seed {seed}: fine-tuning", flush=True)
    result |= finetune_scores(out / "pretrain" / LATEST, args, seed, out / f"epoch{last}")
    write_results(out / RESULT, result)
    return result


def markdown(results: list[dict[str, Any]]) -> str:
    columns = {  # heading: (key, format)
        "method": ("method", "{}"), "seed": ("seed", "{}"), "kNN": ("knn_top1", "{:.2f}"),
        "linear probe": ("linprobe_top1", "{:.2f}"), "fine-tune": ("finetune_top1", "{:.2f}"),
        "pretrain min": ("pretrain_minutes", "{:.1f}"),
        "after step 1 min": ("after_first_step_minutes", "{:.1f}"),
        "images/s": ("images_per_s", "{:.0f}"),
        "decoder GFLOPs/img": ("decoder_gflops_per_image", "{:.4f}"),
        "peak memory GiB": ("peak_memory_gib", "{:.2f}"),
    }  # fmt: skip
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in results:
        r = {**r, "pretrain_minutes": r["pretrain_seconds"] / 60}
        if "after_first_step_seconds" in r:  # results from before it was recorded lack it
            r["after_first_step_minutes"] = r["after_first_step_seconds"] / 60
        cells = [fmt.format(r[key]) if r.get(key) is not None else "—"
                 for key, fmt in columns.values()]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def curve_markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| method | seed | epoch | pretrain min | kNN | linear probe |", "|" + "---|" * 6]
    for r in results:
        for p in r["curve"]:
            lines.append(f"| {r['method']} | {r['seed']} | {p['epoch']} | "
                         f"{p['seconds'] / 60:.1f} | {p['knn_top1']:.2f} | "
                         f"{p['linprobe_top1']:.2f} |")  # fmt: skip
    return "\n".join(lines)


def curve_figure(results: list[dict[str, Any]], title: str) -> Figure:
    """kNN and linear-probe top-1 against pretraining minutes, a colour per method and a
    line style per seed: what each method buys per minute of pretraining, not per epoch."""
    width, height = CURVE_SIZE
    fig = new_figure(width, height, title)
    panel_height = (height - 40 - 30 - 50) / 2
    panels = [("knn_top1", "kNN top-1 (%)"), ("linprobe_top1", "linear probe top-1 (%)")]
    for i, (key, label) in enumerate(panels):
        ax = pixel_axes(fig, 80, 40 + i * (panel_height + 30), width - 110, panel_height)
        for r in results:
            ax.plot([p["seconds"] / 60 for p in r["curve"]], [p[key] for p in r["curve"]],
                    marker="o", markersize=4, color=f"C{list(METHODS).index(r['key'])}",
                    linestyle=SEED_STYLES[r["seed"] % len(SEED_STYLES)],
                    label=f"{r['method']}, seed {r['seed']}")  # fmt: skip
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    ax.set_xlabel("pretraining wall time (min)", fontsize=8)
    fig.axes[0].legend(fontsize=7)
    return fig


def seed_mean_markdown(results: list[dict[str, Any]]) -> str:
    """Mean ± sample standard deviation per method over its seeds ("" with one seed each):
    a seed draws the initialisation, the data order and the image subsets."""
    by_method: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        if "finetune_top1" in r:  # evaluated
            by_method.setdefault(r["method"], []).append(r)
    if all(len(runs) < 2 for runs in by_method.values()):
        return ""
    keys = ("knn_top1", "linprobe_top1", "finetune_top1", "pretrain_seconds")
    lines = ["| method | seeds | kNN | linear probe | fine-tune | pretrain min |", "|" + "---|" * 6]
    for method, runs in by_method.items():
        cells = []
        for key in keys:
            values = [r[key] / (60 if key == "pretrain_seconds" else 1) for r in runs]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.1f} ± {spread:.1f}")
        lines.append(f"| {method} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def collect(output_dir: Path) -> list[dict[str, Any]]:
    """Every method's result in the folder, in METHODS order, then by seed; one pretrained
    but not yet evaluated brings its pretraining numbers alone (accuracies left out)."""
    results = []
    for folder in output_dir.glob("*-seed*"):
        key, seed = folder.name.rsplit("-seed", 1)
        evaluated = next((folder / f for f in (RESULT, PROBED) if (folder / f).exists()), None)
        if evaluated is not None:
            results.append(json.loads(evaluated.read_text()))
        elif (folder / PRETRAINED).exists() and key in METHODS:
            pretrained = json.loads((folder / PRETRAINED).read_text())
            pretrained.pop("kept_epochs", None)
            results.append({"method": METHODS[key].label, "key": key, "seed": int(seed),
                            **pretrained, "curve": []})  # fmt: skip
    order = list(METHODS)
    return sorted(results, key=lambda r: (order.index(r["key"]), r["seed"]))


def environment(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    cuda = torch.device(args.device).type == "cuda"
    return {
        "date": time.strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "command": " ".join(["python", "benchmarks/representation.py", *argv]),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="CIFAR-10 folder with train/ and test/ (none: built-in)")
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=list(METHODS),
        default=DEFAULT_METHODS,
        help="random-init: the same encoder untrained, for reference",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, help="pretraining epochs (default 100; smoke: 1)")
    parser.add_argument("--batch-size", type=int, help="pretraining batch (default: recipe's)")
    parser.add_argument("--curve-points", type=int, help="checkpoints evaluated (4; smoke: 1)")
    parser.add_argument("--probe-epochs", type=int, default=90)
    parser.add_argument("--finetune-epochs", type=int, default=15)
    parser.add_argument("--finetune-batch-size", type=int,
                        help="fine-tune batch (default: the recipe's 256, 20 steps an epoch "
                        "on 5,000 images)")  # fmt: skip
    parser.add_argument("--train-images", type=int, help="a fixed random subset (CPU runs)")
    parser.add_argument("--eval-images", type=int, help="a fixed random subset of test/")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile pretraining (default: on GPU)")  # fmt: skip
    parser.add_argument("--num-workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--output-dir", default="runs/representation")
    parser.add_argument("--smoke", action="store_true", help="CPU smoke mode (CI)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.device, args.batch_size = "cpu", 32
        args.probe_epochs, args.finetune_epochs, args.num_workers = 2, 1, 0
        args.train_images = args.train_images or 256
        args.eval_images = args.eval_images or 128
    if args.epochs is None:
        args.epochs = 1 if args.smoke else 100
    if args.curve_points is None:
        args.curve_points = 1 if args.smoke else 4
    if args.compile is None:
        args.compile = torch.device(args.device).type == "cuda"
    for name in ("epochs", "curve_points", "probe_epochs", "finetune_epochs",
                 "finetune_batch_size", "log_every"):  # fmt: skip
        if (value := getattr(args, name)) is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.data:  # a wrong path fails now, not after a method's pretraining
        try:
            for split in ("train", "test"):
                open_image_dataset(args.data, split)
        except CrossMAEError as err:
            parser.error(str(err))
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    runs = [(METHODS[key], seed) for seed in args.seeds for key in args.methods]
    try:
        # Every pretraining first, then every kNN and probe, then the fine-tunes: a run cut
        # short still compares the methods as far as it went, the report rewritten each step.
        for stage in (ensure_pretrained, probe_method, run_method):
            for method, seed in runs:
                stage(method, args, seed)
                write_report(args, argv)
    except CrossMAEError as err:
        print(f"representation benchmark: error: {err}", file=sys.stderr)
        return 2
    print(write_report(args, argv))
    return 0


def write_report(args: argparse.Namespace, argv: list[str]) -> str:
    """representation.json / .md / .png from every result in --output-dir so far."""
    output_dir = Path(args.output_dir)
    results = collect(output_dir)
    report = {**environment(args, argv), "epochs": args.epochs, "results": results}
    write_results(output_dir / "representation.json", report)
    curve = curve_markdown(results)
    table = f"{markdown(results)}\n\nAccuracy against pretraining time:\n\n{curve}"
    if means := seed_mean_markdown(results):
        table += f"\n\nMean ± standard deviation over seeds:\n\n{means}"
    atomic_write_text(table + "\n", output_dir / "representation.md")
    title = f"CIFAR-10, {args.epochs} pretraining epochs: accuracy against pretraining time"
    save_png(curve_figure(results, title), output_dir / FIGURE)
    return table


if __name__ == "__main__":
    sys.exit(main())
