"""Faults: a killed torchrun worker is restarted and resumes; a full disk stops cleanly."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import crossmae
from crossmae.cli import main
from crossmae.train.checkpointing import load_training_state


def worker_pids(parent: int) -> list[int]:
    """The processes that `parent` (torchrun's agent) started, read from Linux's /proc."""
    found: list[int] = []
    for children in Path(f"/proc/{parent}/task").glob("*/children"):
        with contextlib.suppress(OSError):  # a thread that has just ended
            found += [int(pid) for pid in children.read_text().split()]
    return found


def wait_for_workers_and_checkpoint(agent: subprocess.Popen, path: Path) -> list[int]:
    deadline = time.monotonic() + 60
    while not (path.exists() and len(pids := worker_pids(agent.pid)) == 2):
        assert agent.poll() is None, agent.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    return pids


@pytest.mark.slow
def test_killed_worker_is_restarted_by_torchrun_and_resumes(
    tiny, image_folder, tmp_path, crossmae_env
):
    # 64 images, 2 processes x 4: 8 steps per epoch, 80 in all; a checkpoint every 2 steps
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", "--max-restarts=1", "-m", "crossmae", "pretrain",
               *tiny, "--data", str(image_folder), "--epochs", "10", "--batch-size", "4",
               "--warmup-epochs", "0", "--log-every", "8", "--output-dir", str(run_dir),
               "--resume", "auto", "--save-every-steps", "2"]  # fmt: skip
    agent = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=crossmae_env)  # fmt: skip
    try:
        pids = wait_for_workers_and_checkpoint(agent, run_dir / "checkpoint.pth")
        os.kill(pids[0], signal.SIGKILL)
        out, err = agent.communicate(timeout=120)
    finally:
        agent.kill()
    assert agent.returncode == 0, err
    assert "resumed" in out  # the restarted group continued from the checkpoint
    assert load_training_state(run_dir / "checkpoint.pth")["global_step"] == 80


def test_disk_full_while_saving_keeps_the_previous_checkpoint(
    tiny, image_folder, tmp_path, monkeypatch, capsys
):
    real_save, saves = torch.save, []

    def save_until_the_disk_fills(obj, f) -> None:
        saves.append(obj)
        if len(saves) == 2:  # the second checkpoint: part of it is written, then ENOSPC
            f.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(obj, f)

    monkeypatch.setattr(torch, "save", save_until_the_disk_fills)
    run_dir = tmp_path / "run"
    args = [*tiny, "--data", str(image_folder), "--epochs", "1", "--warmup-epochs", "0",
            "--batch-size", "4", "--output-dir", str(run_dir),
            "--save-every-steps", "2"]  # fmt: skip
    assert main(["pretrain", *args]) == 2

    err = capsys.readouterr().err
    path = run_dir / "checkpoint.pth"
    assert err == (
        f"crossmae pretrain: error: could not write checkpoint {path}: No space left on "
        f"device; the previous checkpoint {path} is intact; the run stopped at step 6\n"
    )
    assert load_training_state(path)["global_step"] == 2
    assert isinstance(crossmae.load_model(path), torch.nn.Module)
    assert [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")] == []


def test_a_file_system_error_no_sentence_of_ours_covers_is_still_one_line(
    tiny, image_folder, tmp_path, capsys
):
    run_dir = tmp_path / "run"
    (run_dir / "log.jsonl").mkdir(parents=True)  # the log cannot be opened for appending
    args = [*tiny, "--data", str(image_folder), "--epochs", "1", "--warmup-epochs", "0",
            "--batch-size", "4", "--output-dir", str(run_dir)]  # fmt: skip
    assert main(["pretrain", *args]) == 2
    assert capsys.readouterr().err == (
        f"crossmae pretrain: error: {run_dir / 'log.jsonl'}: Is a directory\n"
    )
