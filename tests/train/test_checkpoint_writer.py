"""Checkpoints written behind training: in order, one at a time, from a snapshot."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import pytest
import torch

import crossmae.train.pretrain as pretrain_module
from crossmae.cli import main
from crossmae.errors import CrossMAEError
from crossmae.train import checkpointing as ckpt
from crossmae.train.batches import StreamSource
from crossmae.train.checkpoint_writer import (
    CheckpointWriter,
    host_copy,
    live_storages,
    storages,
)
from crossmae.train.checkpointing import load_training_state


def test_host_copy_copies_the_live_tensors_and_rebuilds_the_containers():
    weight, moment = torch.randn(3, 4), torch.randn(2)
    state = OrderedDict(w=weight)
    state._metadata = {"": {"version": 1}}  # type: ignore[attr-defined]
    live = {"model": state, "groups": [{"lr": 0.1, "betas": (0.9, moment)}], "step": 7}
    copy = host_copy(live, storages([weight, moment]))
    before = weight.clone(), moment.clone()
    weight.add_(1.0)
    moment.mul_(3.0)
    live["groups"][0]["lr"] = 0.5
    assert torch.equal(copy["model"]["w"], before[0])
    assert torch.equal(copy["groups"][0]["betas"][1], before[1])
    assert copy["groups"][0]["lr"] == 0.1 and copy["step"] == 7
    assert isinstance(copy["groups"][0]["betas"], tuple)
    assert type(copy["model"]) is OrderedDict and copy["model"]._metadata == state._metadata


def test_host_copy_copies_views_of_live_tensors_but_keeps_fresh_ones():
    weight = torch.randn(4, 4)
    fresh = torch.randn(8)  # an RNG state, a tensor gathered from shards
    copy = host_copy({"row": weight[1], "fresh": fresh}, storages([weight]))
    assert copy["fresh"] is fresh
    weight.zero_()
    assert copy["row"].abs().sum() > 0


def test_host_copy_keeps_dtype_and_leaves_autograd_behind():
    weight = torch.randn(5, dtype=torch.float64, requires_grad=True)
    copy = host_copy({"w": weight}, storages([weight]))["w"]
    assert copy.dtype == torch.float64 and not copy.requires_grad and copy.grad_fn is None
    assert copy.device.type == "cpu" and copy.untyped_storage().data_ptr() != weight.data_ptr()


def test_host_copy_of_everything_copies_every_tensor_and_the_same_data_once():
    """None: a caller that cannot tell which tensors training changes (fine-tuning's two
    files, each with its own state dict of the same model)."""
    model = torch.nn.Linear(3, 2)
    rng = torch.get_rng_state()
    copy = host_copy({"best": model.state_dict(), "last": model.state_dict(), "rng": rng}, None)
    before = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    assert torch.equal(copy["best"]["weight"], before) and copy["rng"] is not rng
    best, last = copy["best"]["weight"], copy["last"]["weight"]
    assert best.untyped_storage().data_ptr() == last.untyped_storage().data_ptr()
    assert copy["best"]["bias"].untyped_storage().data_ptr() != best.untyped_storage().data_ptr()


def test_live_storages_are_the_weights_buffers_and_optimizer_state():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    found = live_storages(model, optimizer)
    moments = [v for s in optimizer.state.values() for v in s.values()]
    for tensor in [*model.parameters(), *model.buffers(), *moments]:
        assert tensor.untyped_storage().data_ptr() in found
    assert len(found) == len([*model.parameters(), *model.buffers(), *moments])


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


def test_close_lets_the_write_in_flight_finish_and_keeps_its_error_to_itself():
    writer, done = CheckpointWriter(), []

    def slow_then_fail() -> None:
        time.sleep(0.2)
        done.append(True)
        raise CrossMAEError("could not write")

    writer.submit(slow_then_fail)
    writer.close()  # in a `finally` with another error on its way: that one is reported
    assert done == [True]


def test_an_abandoned_write_does_not_hold_up_the_caller():
    writer, release = CheckpointWriter(), threading.Event()
    writer.submit(lambda: release.wait(10))
    began = time.monotonic()
    writer.abandon()  # a second Ctrl-C: the process stops now
    writer.close()
    writer.wait()
    assert time.monotonic() - began < 5
    release.set()


def test_a_wait_cut_short_by_ctrl_c_still_waits_when_asked_again(ctrl_c_after):
    """Python 3.11 counts a thread whose join was interrupted as ended: a second join
    returned at once while the write went on, and the process could exit mid-write."""
    writer, release, done = CheckpointWriter(), threading.Event(), threading.Event()

    def write() -> None:
        assert release.wait(10)
        done.set()

    writer.submit(write)
    with pytest.raises(KeyboardInterrupt), ctrl_c_after(0.1):
        writer.wait()
    threading.Timer(0.3, release.set).start()
    writer.wait()
    assert done.is_set()


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


def slow_writes(monkeypatch) -> None:
    """Each write takes long enough for training to go on while it runs."""
    write = ckpt.write_training_state

    def slowly(*args: Any, **kwargs: Any) -> None:
        time.sleep(0.3)
        write(*args, **kwargs)

    monkeypatch.setattr(ckpt, "write_training_state", slowly)


@pytest.mark.parametrize("late", ["at the next save", "on a slow thread"])
def test_a_checkpoint_written_after_training_went_on_holds_the_state_of_its_epoch(
    late, tiny, image_folder, tmp_path, monkeypatch
):
    args = [*tiny, "--data", str(image_folder), "--epochs", "2", "--batch-size", "8",
            "--warmup-epochs", "0", "--keep-every-epochs", "1"]  # fmt: skip
    assert main(["pretrain", *args, "--output-dir", str(tmp_path / "now")]) == 0
    if late == "at the next save":
        monkeypatch.setattr(pretrain_module, "CheckpointWriter", LatestPossibleWriter)
    else:
        slow_writes(monkeypatch)
    assert main(["pretrain", *args, "--output-dir", str(tmp_path / "late")]) == 0

    def state(run: str, name: str) -> dict[str, Any]:
        return load_training_state(tmp_path / run / name)

    first_now = state("now", "checkpoint-epoch0001.pth")
    first_late = state("late", "checkpoint-epoch0001.pth")
    assert first_late["global_step"] == first_now["global_step"] == 8
    for name, weight in first_now["model"].items():
        assert torch.equal(first_late["model"][name], weight), name
    for i, moments in first_now["optimizer"]["state"].items():
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(first_late["optimizer"]["state"][i][key], moments[key]), key
    for key in ("torch", "generators"):
        assert str(first_late["rng"][key]) == str(first_now["rng"][key])
    # the second epoch changed the weights, so a checkpoint without a snapshot would differ
    last = state("late", "checkpoint.pth")["model"]
    assert any(not torch.equal(last[name], w) for name, w in first_now["model"].items())
    assert (tmp_path / "late" / "checkpoint.pth").samefile(
        tmp_path / "late" / "checkpoint-epoch0002.pth"
    )


def test_no_write_runs_while_an_epoch_forks_its_workers(tiny, tar_shards, tmp_path, monkeypatch):
    seen: list[bool] = []
    epoch = StreamSource.epoch

    def look_then_start(self: StreamSource, *args: Any) -> Any:
        seen.append(any(t.name == "checkpoint-writer" for t in threading.enumerate()))
        return epoch(self, *args)

    slow_writes(monkeypatch)
    monkeypatch.setattr(StreamSource, "epoch", look_then_start)
    args = [*tiny, "--data", tar_shards, "--samples-per-epoch", "72",
            "--epochs", "3", "--batch-size", "12", "--warmup-epochs", "0", "--num-workers", "1",
            "--output-dir", str(tmp_path / "run")]  # fmt: skip
    assert main(["pretrain", *args]) == 0
    assert seen == [False, False, False]


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
        "No space left on device; no checkpoint was saved yet; the run stopped at step 8\n"
    )


def test_a_save_copies_the_state_only_once_the_write_before_it_is_done(
    tiny, image_folder, tmp_path, monkeypatch
):
    """So host memory holds one copy of the state, not one per write in the queue."""
    writing: list[bool] = []
    copy = pretrain_module.host_copy

    def look_then_copy(*args: Any) -> Any:
        writing.append(any(t.name == "checkpoint-writer" for t in threading.enumerate()))
        return copy(*args)

    slow_writes(monkeypatch)
    monkeypatch.setattr(pretrain_module, "host_copy", look_then_copy)
    args = [*tiny, "--data", str(image_folder), "--epochs", "1", "--batch-size", "16",
            "--warmup-epochs", "0", "--save-every-steps", "1",
            "--output-dir", str(tmp_path / "run")]  # fmt: skip
    assert main(["pretrain", *args]) == 0
    assert writing == [False] * 5  # steps 1-4, then the epoch's end
