"""`torchrun --nproc_per_node=2` (gloo, CPU) follows the 1-process loss curve."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from crossmae.cli import main
from crossmae.train.checkpointing import load_training_state
from crossmae.train.distributed import StopVote


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
    shutil.copytree(out, tmp_path / "unchecked")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node=2", "-m", "crossmae", "pretrain"]  # fmt: skip

    def resume(*flags: str) -> subprocess.CompletedProcess:
        # the same effective batch: 2 processes x 4 for 4 x 2
        return subprocess.run(
            [*torchrun, *args, "--accum-iter", "1", "--fsdp", "--resume", "auto", *flags],
            capture_output=True, text=True, timeout=300, env=crossmae_env,
        )  # fmt: skip

    resumed = resume("--grad-checkpointing")  # sharded blocks, checkpointed
    assert resumed.returncode == 0, resumed.stderr
    assert "skipped 8 of 72 files: 8 corrupt" in resumed.stdout  # both ranks' finds
    assert "FSDP2, gradient checkpointing" in resumed.stdout
    unchecked = resume("--output-dir", str(tmp_path / "unchecked"))
    assert unchecked.returncode == 0, unchecked.stderr
    assert curve(out) == pytest.approx(curve(tmp_path / "unchecked"), rel=1e-6)
    state = load_training_state(out / "checkpoint.pth")
    assert state["global_step"] == 2 * 72 // 8
    adam = state["optimizer"]["state"]["encoder.patch_embed.proj.weight"]
    assert int(adam["step"]) == 18  # 3 steps before the resume, carried over: not 15


def _vote(rank: int, world_size: int, init: str, results) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank,
                                         world_size=world_size)  # fmt: skip
    vote = StopVote()
    seen = [vote(rank == 1 and step == 3) for step in range(6)]  # rank 1 is signalled at 3
    vote.close()
    torch.distributed.destroy_process_group()
    results[rank] = seen


def test_the_stop_vote_stops_every_rank_one_step_after_any_is_signalled(tmp_path):
    results = torch.multiprocessing.Manager().dict()
    init = f"file://{tmp_path / 'rendezvous'}"
    torch.multiprocessing.spawn(_vote, args=(2, init, results), nprocs=2)
    expected = [False, False, False, False, True, False]
    assert results[0] == expected and results[1] == expected


@pytest.mark.slow
def test_under_torchrun_sigterm_stops_between_log_steps(tiny, write_images, tmp_path, crossmae_env):
    """Ranks used to agree only at log steps (or epoch ends: step 200 here), which a
    scheduler's grace period may not reach."""
    write_images(tmp_path / "images" / "train", 400)
    out = tmp_path / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node=2", "-m", "crossmae", "pretrain"]  # fmt: skip
    process = subprocess.Popen(
        [*torchrun, *tiny, "--data", str(tmp_path / "images"), "--batch-size", "1",
         "--in-memory", "false", "--epochs", "5", "--warmup-epochs", "0",
         "--log-every", "1000", "--output-dir", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=crossmae_env,
    )  # fmt: skip
    for line in process.stdout:
        if "step 1/1000" in line:  # the first step's log line
            process.send_signal(signal.SIGTERM)
            break
    rest = process.stdout.read()
    process.wait(timeout=120)
    assert "stopped by SIGTERM at epoch 1" in rest, rest
    assert load_training_state(out / "checkpoint.pth")["global_step"] < 100
