"""Every GPU benchmark the project owes, as one device command that ends before its deadline.

A session lent a GPU has 15 minutes of device time, the machine's start-up included, and
at most 10 minutes a command, so the GPU work is one prepared command rather than a
sequence of hand-typed calls. Here, first (CIFAR-10 packs to 18 MB, inside the 64 MiB that
travels with the working tree):

    python scripts/pack_jpeg_folder.py pack ../shared/data/cifar-10-images-jpeg local/cifar10.npz

then on the device, carrying `local/cifar10.npz` (the pack alone: whatever else sits in
local/ would count against the 64 MiB too), with a device timeout a little above --budget:

    python benchmarks/gpu_session.py --pack local/cifar10.npz --out $OUT

It runs from the working tree without an install (src/ goes on the children's PYTHONPATH),
and runs its phases one after another, each a child process with its own log in --out:

- check: one tiny bf16 training step on the device (`crossmae profile --amp`), so a missing
  package or a broken GPU costs seconds, not the session;
- compile: torch.compile of a small function on the device, forward and backward; if the
  compiler tool chain is broken, the later phases run eager (`--no-compile`) rather than
  fail after minutes of compiling;
- data: unpack the CIFAR-10 pack;
- speed: benchmarks/throughput.py (ViT-B/16 by default, batch 256, bf16, MAE and CrossMAE
  γ = 0.25 / 0.75, eager and compiled; the JPEG pipeline per core) -> throughput.json;
- representation: benchmarks/representation.py on all of CIFAR-10 (compiled, images held
  on the GPU), every method's pretraining first, then their evaluations ->
  representation.tar.gz (tables, figure, each method's result, pretraining log and recipe;
  not the checkpoints).

What comes back from the device is at most 8 files, none deeper than two folders, so --out
holds 8: session.json, throughput.json, the five phase logs and representation.tar.gz.

A phase still running at its deadline is stopped (SIGTERM, then SIGKILL); both benchmarks
write as they go, so what it measured comes back, and the pretraining logs say how long an
epoch took, for sizing the next session's --epochs. session.json, rewritten after every
phase, says how each phase ended and how long it took. --smoke rehearses the whole session
on a CPU with the benchmarks' smoke modes (what the test runs).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
sys.path.insert(0, str(SRC))  # the working tree, installed or not

from crossmae.eval.results import write_results  # noqa: E402

# What comes back from the representation phase, packed in one archive (the device returns
# 8 files at most): small files only (a ViT-Tiny training checkpoint is about 100 MB).
REPRESENTATION_ARCHIVE = "representation.tar.gz"
REPRESENTATION_FILES = (
    "representation.json", "representation.md", "representation.png", "*/result.json",
    "*/probed.json", "*/pretrain.json", "*/pretrain.yaml", "*/pretrain/log.jsonl",
)  # fmt: skip
STOP_GRACE_S = 15  # after SIGTERM: a pretraining finishes its step and saves
COPY_MARGIN_S = 15  # kept after the last phase for copying results and the summary
ESSENTIAL = ("check", "data")  # without these the later phases cannot run
COMPILED = ("speed", "representation")  # the phases that run eager if "compile" failed
# The compile phase: Triton (GPU) or a C++ compiler (CPU) behind torch.compile, and the
# one package that building the CLI does not import (the benchmarks draw with it).
COMPILE_CHECK = """
import sys, matplotlib, torch
f = torch.compile(lambda x: (x.sin() * x).sum())
x = torch.randn(256, device=sys.argv[1], requires_grad=True)
f(x).backward()
assert torch.allclose(x.grad, x.detach().cos() * x.detach() + x.detach().sin(), atol=1e-5)
print("torch.compile works on", sys.argv[1])
"""


@dataclass
class PhaseResult:
    phase: str
    status: str  # "finished", "failed (exit N)", "cut at its deadline", "not started"
    seconds: float
    log: str


def child_env() -> dict[str, str]:
    """The children import crossmae from this working tree, installed or not."""
    path = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def run_phase(name: str, command: list[str], seconds: float, out: Path) -> PhaseResult:
    """Run one phase as a child process group, its output in OUT/<name>.log, stopped when
    it reaches `seconds`."""
    log = out / f"{name}.log"
    start = time.monotonic()
    with log.open("w") as sink:
        sink.write("$ " + " ".join(command) + "\n")
        sink.flush()
        child = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT,
                                 env=child_env(), start_new_session=True)  # fmt: skip
        try:
            code = child.wait(timeout=max(seconds, 0.0))
            status = "finished" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            _stop(child)
            status = "cut at its deadline"
    return PhaseResult(name, status, round(time.monotonic() - start, 1), log.name)


def _stop(child: subprocess.Popen) -> None:
    """SIGTERM to the whole group (a pretraining saves and exits), SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError):  # it may have ended in between
        os.killpg(child.pid, signal.SIGTERM)
    try:
        child.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def plan(args: argparse.Namespace, data: Path) -> list[tuple[str, list[str], float]]:
    """(phase, command, its own cap in seconds; inf: what the budget leaves), in order."""
    python = sys.executable
    device = "cpu" if args.smoke else "cuda"
    check = [python, "-m", "crossmae", "profile", "--model", "crossmae_vit_tiny_patch4_32",
             "--device", device, "--steps", "2", "--batch-size", "8", "--amp"]  # fmt: skip
    compile_check = [python, "-c", COMPILE_CHECK, device]
    unpack = [python, str(ROOT / "scripts" / "pack_jpeg_folder.py"), "unpack", str(args.pack),
              str(data)]  # fmt: skip
    speed = [python, str(ROOT / "benchmarks" / "throughput.py"), "--data", str(data / "train"),
             "--json", str(args.out / "throughput.json")]  # fmt: skip
    if args.smoke:
        speed += ["--smoke", "--data-images", "50"]
    else:
        speed += ["--device", "cuda", "--sizes", *args.sizes,
                  "--peak-tflops", str(args.peak_tflops)]  # fmt: skip
    representation = [python, str(ROOT / "benchmarks" / "representation.py"), "--data",
                      str(data), "--output-dir", str(args.work / "representation"),
                      "--methods", *args.methods]  # fmt: skip
    if args.smoke:
        representation += ["--smoke"]
    else:
        representation += ["--device", "cuda", "--epochs", str(args.epochs),
                           "--curve-points", str(args.curve_points),
                           "--probe-epochs", str(args.probe_epochs),
                           "--finetune-epochs", str(args.finetune_epochs)]  # fmt: skip
    return [("check", check, 120.0), ("compile", compile_check, 120.0), ("data", unpack, 120.0),
            ("speed", speed, args.speed_seconds),
            ("representation", representation, float("inf"))]  # fmt: skip


def pack_representation(work: Path, out: Path) -> list[str]:
    """The representation phase's small files, as OUT/representation.tar.gz (their paths
    under representation/ kept); returns those paths."""
    source = work / "representation"
    packed = sorted({p for pattern in REPRESENTATION_FILES for p in source.glob(pattern)})
    names = [str(Path("representation") / p.relative_to(source)) for p in packed]
    with tarfile.open(out / REPRESENTATION_ARCHIVE, "w:gz") as archive:
        for path, name in zip(packed, names, strict=True):
            archive.add(path, arcname=name)
    return names


def environment(smoke: bool) -> dict[str, Any]:
    """What the numbers were measured on: GPU, driver, torch, timm, triton."""
    import importlib.metadata

    import torch

    versions = {}
    for package in ("torch", "timm", "triton", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    info: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                            "cpu_cores": os.cpu_count(), "versions": versions}  # fmt: skip
    if not smoke:
        info["gpu"] = torch.cuda.get_device_name()
        query = "name,memory.total,driver_version,clocks.max.sm,power.limit"
        smi = shutil.which("nvidia-smi")
        if smi:
            try:
                done = subprocess.run([smi, f"--query-gpu={query}", "--format=csv"],
                                      capture_output=True, text=True, timeout=20)  # fmt: skip
                info["nvidia_smi"] = done.stdout.strip()
            except subprocess.TimeoutExpired:
                info["nvidia_smi"] = "no answer in 20 s"
    return info


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack", type=Path, required=True,
                        help="CIFAR-10 packed by scripts/pack_jpeg_folder.py")  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="results land here ($OUT)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu_session"),
                        help="unpacked data and checkpoints (not copied back)")  # fmt: skip
    parser.add_argument("--budget", type=float, default=560.0,
                        help="seconds for all phases (a device command: 600 at most, so give "
                        "the device call a timeout of 600)")  # fmt: skip
    parser.add_argument("--speed-seconds", type=float, default=210.0,
                        help="cap of the speed phase; representation gets the rest")  # fmt: skip
    parser.add_argument("--sizes", nargs="+", default=["base"], help="throughput.py --sizes")
    parser.add_argument("--peak-tflops", type=float, default=989.0,
                        help="dense bf16 peak (989 for H100 SXM and H200)")  # fmt: skip
    parser.add_argument("--methods", nargs="+", default=["mae", "crossmae-0.25"],
                        help="representation.py --methods, pretrained in this order")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=20, help="representation pretraining epochs")
    parser.add_argument("--curve-points", type=int, default=1)
    parser.add_argument("--probe-epochs", type=int, default=90,
                        help="the cached linear probe's epochs (MAE's protocol: 90)")  # fmt: skip
    parser.add_argument("--finetune-epochs", type=int, default=5,
                        help="the short fine-tune's epochs (augmented on CPUs: slow)")  # fmt: skip
    parser.add_argument("--phases", nargs="+", choices=["speed", "representation"],
                        default=["speed", "representation"])  # fmt: skip
    parser.add_argument("--smoke", action="store_true", help="rehearse on a CPU (the test)")
    args = parser.parse_args(argv)
    if not args.pack.is_file():
        parser.error(f"the pack {args.pack} does not exist; make it with "
                     "scripts/pack_jpeg_folder.py pack and carry its folder")  # fmt: skip
    args.pack, args.out, args.work = (p.resolve() for p in (args.pack, args.out, args.work))
    if args.budget <= 0 or args.speed_seconds <= 0:
        parser.error("--budget and --speed-seconds must be positive")
    if not args.smoke:
        import torch

        if not torch.cuda.is_available():
            parser.error("no CUDA GPU is visible here; --smoke rehearses the session on a CPU")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    deadline = time.monotonic() + args.budget
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.work / "cifar10"
    if data.exists():  # a rerun on a warm machine unpacks afresh
        shutil.rmtree(data)
    session: dict[str, Any] = {"environment": environment(args.smoke), "phases": []}
    summary = args.out / "session.json"
    write_results(summary, session)
    for name, command, cap in plan(args, data):
        if name not in ESSENTIAL and name not in (*args.phases, "compile"):
            continue
        if name in COMPILED and not session.get("compiled", True):
            command = [*command, "--no-compile"]
        left = deadline - time.monotonic() - COPY_MARGIN_S
        if left <= 0:
            result = PhaseResult(name, "not started", 0.0, "")
        else:
            result = run_phase(name, command, min(cap, left), args.out)
        session["phases"].append(asdict(result))
        if name == "compile":
            session["compiled"] = result.status == "finished"
        if name == "representation":
            session["packed"] = pack_representation(args.work, args.out)
        write_results(summary, session)
        print(f"{name}: {result.status} in {result.seconds:.0f} s", flush=True)
        if name in ESSENTIAL and result.status != "finished":
            why = (f"did not finish; its log is {args.out / result.log}" if result.log
                   else "had no time left to start; raise --budget")  # fmt: skip
            print(f"gpu_session: the {name} phase {why}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
