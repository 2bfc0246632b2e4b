"""Checkpoints written behind training: in order, one at a time, from a snapshot."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch

import crossmae.train.pretrain as pretrain_module
from crossmae.cli import main
from crossmae.errors import CrossMAEError
from crossmae.train.checkpoint_writer import CheckpointWriter, host_copy
from crossmae.train.checkpointing import load_training_state


def test_host_copy_copies_every_tensor_and_rebuilds_the_containers():
    live = {"w": torch.randn(3, 4), "groups": [{"lr": 0.1, "betas": (0.9, torch.randn(2))}],
            "step": 7, "name": "adamw"}  # fmt: skip
    copy = host_copy(live)
    before = copy["w"].clone(), copy["groups"][0]["betas"][1].clone()
    live["w"].add_(1.0)
    live["groups"][0]["betas"][1].mul_(3.0)
    live["groups"][0]["lr"] = 0.5
    assert torch.equal(copy["w"], before[0])
    assert torch.equal(copy["groups"][0]["betas"][1], before[1])
    assert copy["groups"][0]["lr"] == 0.1 and copy["step"] == 7 and copy["name"] == "adamw"
    assert isinstance(copy["groups"][0]["betas"], tuple)


def test_host_copy_keeps_dtype_and_leaves_autograd_behind():
    weight = torch.randn(5, dtype=torch.float64, requires_grad=True)
    copy = host_copy({"w": weight * 2})["w"]
    assert copy.dtype == torch.float64 and not copy.requires_grad and copy.grad_fn is None
    assert copy.device.type == "cpu"


def test_a_write_runs_behind_the_caller():
    writer, release, done = CheckpointWriter(), threading.Event(), threading.Event()

    def write() -> None:
        assert release.wait(10)
        done.set()

    writer.submit(write)  # returns while the write is still blocked
    assert not done.is_set()
    release.set()
    writer.wait()
    assert done.is_set()
    writer.close()


def test_writes_run_one_at_a_time_in_the_order_given():
    writer, log, active, most = CheckpointWriter(), [], [0], [0]

    def write(i: int) -> Callable[[], None]:
        def run() -> None:
            active[0] += 1
            most[0] = max(most[0], active[0])
            time.sleep(0.02)
            log.append(i)
            active[0] -= 1

        return run

    for i in range(4):
        writer.submit(write(i))
    writer.wait()
    writer.close()
    assert log == [0, 1, 2, 3] and most[0] == 1


def test_a_failed_write_raises_at_the_next_save_once():
    writer = CheckpointWriter()

    def full_disk() -> None:
        raise CrossMAEError("could not write checkpoint c.pth: No space left on device")

    writer.submit(full_disk)
    with pytest.raises(CrossMAEError, match="No space left"):
        writer.submit(lambda: None)
    writer.submit(lambda: None)  # reported once: the run decides what to do with it
    writer.wait()
    writer.close()


def test_close_lets_the_write_in_flight_finish_and_keeps_its_error_to_itself():
    writer, done = CheckpointWriter(), []

    def slow_then_fail() -> None:
        time.sleep(0.05)
        done.append(True)
        raise CrossMAEError("could not write")

    writer.submit(slow_then_fail)
    writer.close()  # in a `finally` with another error on its way: that one is reported
    assert done == [True]


class LatestPossibleWriter(CheckpointWriter):
    """Runs each write as late as the real writer may: at the next save or at the end, so
    training has gone on with the live tensors before the state is serialized."""

    def __init__(self) -> None:
        self.queued: Callable[[], Any] | None = None

    def submit(self, write: Callable[[], Any]) -> None:
        self.wait()
        self.queued = write

    def wait(self) -> None:
        write, self.queued = self.queued, None
        if write is not None:
            write()

    def close(self) -> None:
        self.wait()


def test_a_checkpoint_written_after_training_went_on_holds_the_state_of_its_epoch(
    tiny, image_folder, tmp_path, monkeypatch
):
    args = [*tiny, "--data", str(image_folder), "--epochs", "2", "--batch-size", "8",
            "--warmup-epochs", "0", "--keep-every-epochs", "1"]  # fmt: skip
    assert main(["pretrain", *args, "--output-dir", str(tmp_path / "now")]) == 0
    monkeypatch.setattr(pretrain_module, "CheckpointWriter", LatestPossibleWriter)
    assert main(["pretrain", *args, "--output-dir", str(tmp_path / "late")]) == 0

    def state(run: str, name: str) -> dict[str, Any]:
        return load_training_state(tmp_path / run / name)

    first_now = state("now", "checkpoint-epoch0001.pth")
    first_late = state("late", "checkpoint-epoch0001.pth")
    assert first_late["global_step"] == first_now["global_step"] == 8
    for name, weight in first_now["model"].items():
        assert torch.equal(first_late["model"][name], weight), name
    for i, moments in first_now["optimizer"]["state"].items():
        assert torch.equal(first_late["optimizer"]["state"][i]["exp_avg"], moments["exp_avg"])
    # the second epoch changed the weights, so a checkpoint without a snapshot would differ
    last = state("late", "checkpoint.pth")["model"]
    assert any(not torch.equal(last[name], w) for name, w in first_now["model"].items())
    assert (tmp_path / "late" / "checkpoint.pth").samefile(
        tmp_path / "late" / "checkpoint-epoch0002.pth"
    )


def test_a_failed_last_write_fails_the_run(tiny, image_folder, tmp_path, monkeypatch, capsys):
    def full_disk(obj: Any, f: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    run_dir = tmp_path / "run"
    args = [*tiny, "--data", str(image_folder), "--epochs", "1", "--batch-size", "8",
            "--warmup-epochs", "0", "--output-dir", str(run_dir)]  # fmt: skip
    assert main(["pretrain", *args]) == 2  # the write behind training failed after its save
    assert capsys.readouterr().err == (
        f"crossmae pretrain: error: could not write checkpoint {run_dir / 'checkpoint.pth'}: "
        "No space left on device; no checkpoint was saved yet\n"
    )
