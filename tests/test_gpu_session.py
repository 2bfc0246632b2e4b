"""The one-command GPU session, rehearsed on a CPU: every phase runs, results come back in
--out, a phase past its share of the deadline is stopped, and bad input is one sentence."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from test_benchmarks import BENCHMARKS, ONE_THREAD, import_benchmark

ROOT = BENCHMARKS.parent


def session(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(BENCHMARKS / "gpu_session.py"), *args]
    return subprocess.run(command, env=ONE_THREAD, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Path:
    """A CIFAR-shaped folder (2 classes, 32-px JPEGs, one batch of the smoke fine-tune and
    more) packed as a GPU session receives it."""
    root = tmp_path_factory.mktemp("pack")
    rng = np.random.default_rng(0)
    for split, count in (("train", 130), ("test", 30)):
        for label in ("cat", "dog"):
            folder = root / "images" / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
    packed = root / "cifar.npz"
    script = ROOT / "scripts" / "pack_jpeg_folder.py"
    subprocess.run([sys.executable, str(script), "pack", str(root / "images"), str(packed)],
                   check=True, capture_output=True)  # fmt: skip
    return packed


@pytest.mark.slow
def test_a_rehearsed_session_runs_every_phase_and_brings_the_results_back(pack, tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    done = session("--smoke", "--pack", str(pack), "--out", str(out), "--work", str(work),
                   "--methods", "mae")  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "session.json").read_text())
    phases = [(p["phase"], p["status"]) for p in summary["phases"]]
    names = ("check", "compile", "data", "speed", "representation")
    assert phases == [(name, "finished") for name in names]
    assert summary["compiled"] is True
    assert summary["environment"]["versions"]["torch"]
    speed = json.loads((out / "throughput.json").read_text())
    assert len(speed["models"]) == 3 and speed["data_pipeline"]["images"] == 50
    assert len(list((work / "cifar10" / "train").rglob("*.jpg"))) == 260
    # The device returns 8 files at most, two folders deep: the small representation files
    # come back in one archive, its checkpoints stay behind.
    returned = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert returned == ["check.log", "compile.log", "data.log", "representation.log",
                        "representation.tar.gz", "session.json", "speed.log",
                        "throughput.json"]  # fmt: skip
    with tarfile.open(out / "representation.tar.gz") as archive:
        packed = sorted(archive.getnames())
        report = json.load(archive.extractfile("representation/representation.json"))
    assert packed == sorted(summary["packed"]) == [
        "representation/mae-seed0/pretrain.json", "representation/mae-seed0/pretrain.yaml",
        "representation/mae-seed0/pretrain/log.jsonl", "representation/mae-seed0/probed.json",
        "representation/mae-seed0/result.json",
        "representation/representation.json", "representation/representation.md",
        "representation/representation.png",
    ]  # fmt: skip
    (result,) = report["results"]
    assert result["method"] == "MAE" and result["finetune_top1"] >= 0
    assert (work / "representation" / "mae-seed0" / "pretrain" / "checkpoint.pth").is_file()
    assert "representation: finished" in done.stdout


def test_a_phase_past_its_deadline_is_stopped_and_the_session_goes_on(pack, tmp_path):
    out = tmp_path / "out"
    work = tmp_path / "work"
    done = session("--smoke", "--pack", str(pack), "--out", str(out), "--work", str(work),
                   "--phases", "speed", "--speed-seconds", "0.5")  # fmt: skip
    assert done.returncode == 0, done.stderr
    phases = json.loads((out / "session.json").read_text())["phases"]
    # representation was not asked for
    assert [p["phase"] for p in phases] == ["check", "compile", "data", "speed"]
    speed = phases[-1]
    assert speed["status"] == "cut at its deadline" and 0.5 <= speed["seconds"] < 10
    assert (out / "speed.log").read_text().startswith("$ ")  # the command, then its output


@pytest.mark.parametrize("compiles", [True, False])
def test_the_phases_after_a_failed_compile_check_run_eager(pack, tmp_path, monkeypatch, compiles):
    """A broken compiler tool chain costs the compiled speed rows, not the representation
    phase: the later phases are told --no-compile."""
    gpu_session = import_benchmark("gpu_session")
    commands = {}

    def run_phase(name, command, seconds, out):
        commands[name] = command
        status = "failed (exit 1)" if name == "compile" and not compiles else "finished"
        return gpu_session.PhaseResult(name, status, 0.0, f"{name}.log")

    monkeypatch.setattr(gpu_session, "run_phase", run_phase)
    out = tmp_path / "out"
    assert gpu_session.main(["--smoke", "--pack", str(pack), "--out", str(out),
                             "--work", str(tmp_path / "work")]) == 0  # fmt: skip
    assert json.loads((out / "session.json").read_text())["compiled"] is compiles
    for name in ("check", "compile", "data"):
        assert "--no-compile" not in commands[name]
    for name in ("speed", "representation"):
        assert ("--no-compile" in commands[name]) is not compiles


def test_an_essential_phase_without_time_ends_the_session_with_one_sentence(pack, tmp_path):
    """A budget that is all copy margin: the GPU check cannot start, nor anything after it.
    (A budget leaving the check a second made it 'cut' or, on a loaded machine, 'not
    started': a test that depended on the clock.)"""
    out = tmp_path / "out"
    done = session("--smoke", "--pack", str(pack), "--out", str(out), "--budget", "15")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "gpu_session: the check phase had no time left to start; raise --budget"
    )
    phases = json.loads((out / "session.json").read_text())["phases"]
    assert [(p["phase"], p["status"]) for p in phases] == [("check", "not started")]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--pack", "missing.npz"], "the pack missing.npz does not exist"),
        (["--budget", "0"], "--budget and --speed-seconds must be positive"),
    ],
)
def test_bad_settings_are_refused_before_anything_runs(pack, tmp_path, argv, message):
    argv = ["--smoke", "--pack", str(pack), "--out", str(tmp_path / "out"), *argv]
    done = session(*argv)
    assert done.returncode == 2
    assert message in done.stderr.splitlines()[-1]
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here")
def test_without_a_gpu_the_real_session_says_to_rehearse(pack, tmp_path):
    done = session("--pack", str(pack), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].endswith(
        "no CUDA GPU is visible here; --smoke rehearses the session on a CPU"
    )
