"""`torchrun --nproc_per_node=2` (gloo, CPU) follows the 1-process loss curve."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from crossmae.cli import main
from crossmae.train.checkpointing import load_training_state


def curve(run_dir) -> list[float]:
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


@pytest.mark.slow
@pytest.mark.parametrize("in_memory", ["true", "false"])
def test_two_processes_match_one_at_the_same_global_batch(
    tiny, image_folder, tmp_path, crossmae_env, in_memory
):
    # a large learning rate, so that the curve depends on every gradient being averaged right
    args = [*tiny, "--data", str(image_folder), "--epochs", "2", "--warmup-epochs", "0",
            "--lr", "3e-3", "--log-every", "1", "--in-memory", in_memory]  # fmt: skip
    assert (
        main(["pretrain", *args, "--batch-size", "8", "--output-dir", str(tmp_path / "one")]) == 0
    )
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node=2", "-m", "crossmae", "pretrain"]  # fmt: skip
    two = subprocess.run(
        [*torchrun, *args, "--batch-size", "4", "--output-dir", str(tmp_path / "two")],
        capture_output=True, text=True, timeout=300, env=crossmae_env,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("done in") == 1  # rank 0 alone reports
    assert "2 processes" in two.stdout and "DDP" in two.stdout

    one_curve, two_curve = curve(tmp_path / "one"), curve(tmp_path / "two")
    assert len(one_curve) == len(two_curve) == 16
    assert one_curve[-1] < one_curve[0] - 0.05  # it learned something
    assert two_curve == pytest.approx(one_curve, rel=1e-4)
    one = load_training_state(tmp_path / "one" / "checkpoint.pth")["model"]
    two = load_training_state(tmp_path / "two" / "checkpoint.pth")["model"]
    # Not tensor by tensor: attention key biases get a gradient that is exactly zero in
    # theory, so their Adam updates follow float rounding, which differs with the summation
    # order. The weights as a whole agree closely.
    gap = torch.cat([(two[n] - one[n]).flatten() for n in one]).norm()
    assert gap / torch.cat([t.flatten() for t in one.values()]).norm() < 1e-3


@pytest.mark.slow
def test_a_run_without_fsdp_resumes_under_fsdp_and_reports_every_ranks_bad_images(
    tiny, image_folder, tmp_path, crossmae_env
):
    for i in range(8):  # 72 files: each rank decodes half of them in the second epoch
        (image_folder / "train" / "a" / f"zz_bad{i}.png").write_bytes(b"not an image")
    out = tmp_path / "run"
    args = [*tiny, "--data", str(image_folder), "--epochs", "2", "--warmup-epochs", "0",
            "--in-memory", "false", "--batch-size", "4", "--output-dir", str(out)]  # fmt: skip
    assert main(["pretrain", *args, "--accum-iter", "2", "--max-steps", "3"]) == 0
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node=2", "-m", "crossmae", "pretrain"]  # fmt: skip
    resumed = subprocess.run(  # the same effective batch: 2 processes x 4 for 4 x 2
        [*torchrun, *args, "--accum-iter", "1", "--fsdp", "--resume", "auto"],
        capture_output=True, text=True, timeout=300, env=crossmae_env,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "skipped 8 of 72 files: 8 corrupt" in resumed.stdout  # both ranks' finds
    state = load_training_state(out / "checkpoint.pth")
    assert state["global_step"] == 2 * 72 // 8
    adam = state["optimizer"]["state"]["encoder.patch_embed.proj.weight"]
    assert int(adam["step"]) == 18  # 3 steps before the resume, carried over: not 15
