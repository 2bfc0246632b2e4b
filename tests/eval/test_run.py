"""RunContext: a resumed run's random streams, per rank; checkpoints written behind the run."""

import errno
import threading
import time

import numpy as np
import pytest
import torch

import crossmae.eval.run as run_module
from crossmae.errors import CrossMAEError
from crossmae.eval.run import RunContext
from crossmae.train.checkpointing import capture_rng, seed_everything
from crossmae.train.distributed import DistInfo


def _context(rank: int, tmp_path) -> RunContext:
    dist = DistInfo(rank, 2, rank, torch.device("cpu"), rank == 0)
    return RunContext(dist, "fp32", tmp_path, seed=5)


def test_rank_0_continues_its_saved_streams_and_other_ranks_draw_their_own(tmp_path):
    """Only rank 0's state is in the checkpoint; given it, every rank would draw the same
    mixup boxes and augmentations."""
    seed_everything(5)
    saved = capture_rng()
    expected = (torch.rand(3), np.random.rand(3))
    _context(0, tmp_path).resume_rng(saved, epoch=3)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    _context(1, tmp_path).resume_rng(saved, epoch=3)
    other = (torch.rand(3), np.random.rand(3))
    assert not torch.equal(other[0], expected[0])
    assert not np.array_equal(other[1], expected[1])
    _context(1, tmp_path).resume_rng(saved, epoch=3)  # seeded by (seed, rank, epoch)
    assert torch.equal(torch.rand(3), other[0])
    _context(1, tmp_path).resume_rng(saved, epoch=4)
    assert not torch.equal(torch.rand(3), other[0])


def _slow_writes(monkeypatch, seconds: float = 0.3) -> None:
    write = run_module.atomic_torch_save

    def slow(obj, path):
        time.sleep(seconds)
        write(obj, path)

    monkeypatch.setattr(run_module, "atomic_torch_save", slow)


def test_a_save_returns_before_its_files_are_written_and_writes_the_state_it_was_given(
    tmp_path, monkeypatch
):
    _slow_writes(monkeypatch)
    ctx = _context(0, tmp_path)
    weight, history = torch.randn(4, 3), [{"epoch": 1}]
    before = weight.clone()
    started = time.perf_counter()
    ctx.save({"best.pth": {"w": weight}, "last.pth": {"w": weight, "history": history}})
    assert time.perf_counter() - started < 0.2 and not (tmp_path / "best.pth").exists()
    weight.add_(1.0)  # the next epoch's steps
    history.append({"epoch": 2})
    ctx.finish("table", {"top1": 1.0}, "results.json")  # waits for the files first
    assert (tmp_path / "results.json").is_file()
    for name in ("best.pth", "last.pth"):
        assert torch.equal(torch.load(tmp_path / name)["w"], before)
    assert torch.load(tmp_path / "last.pth")["history"] == [{"epoch": 1}]
    ctx.close()


def test_only_rank_0_writes(tmp_path):
    ctx = _context(1, tmp_path)
    ctx.save({"last.pth": {"w": torch.randn(2)}})
    ctx.close()
    assert not (tmp_path / "last.pth").exists()


@pytest.mark.parametrize("then", ["save", "finish"])
def test_a_failed_write_fails_the_next_save_or_the_finish(tmp_path, monkeypatch, then):
    def full(obj, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_module, "atomic_torch_save", full)
    ctx = _context(0, tmp_path)
    ctx.save({"last.pth": {"w": torch.randn(2)}})  # returns: the write fails behind it
    with pytest.raises(CrossMAEError, match=r"cannot write .*last\.pth: No space left"):
        if then == "save":
            ctx.save({"last.pth": {"w": torch.randn(2)}})
        else:
            ctx.finish("table", {}, "results.json")
    assert not (tmp_path / "results.json").exists()


def test_a_stop_waits_for_the_write_under_way_before_saying_where_the_epoch_is(
    tmp_path, monkeypatch, capsys
):
    _slow_writes(monkeypatch)
    ctx = _context(0, tmp_path)
    with pytest.raises(KeyboardInterrupt), ctx.resumable("last.pth"):
        ctx.save({"last.pth": {"w": torch.randn(2)}})
        raise KeyboardInterrupt
    assert (
        f"stopped; {tmp_path / 'last.pth'} holds the last finished epoch" in capsys.readouterr().out
    )


def test_a_save_copies_only_once_the_write_before_it_is_done(tmp_path, monkeypatch):
    """So host memory holds one copy at a time, not one per write in the queue."""
    _slow_writes(monkeypatch)
    ctx, writing = _context(0, tmp_path), []
    copy = run_module.host_copy

    def look_then_copy(*args):
        writing.append(any(t.name == "checkpoint-writer" for t in threading.enumerate()))
        return copy(*args)

    monkeypatch.setattr(run_module, "host_copy", look_then_copy)
    for _ in range(3):
        ctx.save({"last.pth": {"w": torch.randn(2)}})
    ctx.close()
    assert writing == [False, False, False]


def test_a_save_not_behind_the_run_is_on_disk_when_it_returns(tmp_path, monkeypatch):
    _slow_writes(monkeypatch)
    ctx = _context(0, tmp_path)
    ctx.save({"last.pth": {"w": torch.randn(2)}})
    ctx.save({"classifier.pth": {"w": torch.randn(2)}}, behind=False)
    assert (tmp_path / "last.pth").is_file() and (tmp_path / "classifier.pth").is_file()


def test_a_second_ctrl_c_during_the_stop_s_wait_stops_at_once(tmp_path, monkeypatch, ctrl_c_after):
    _slow_writes(monkeypatch, seconds=2.0)
    ctx = _context(0, tmp_path)
    began = time.monotonic()
    with ctrl_c_after(0.3), pytest.raises(KeyboardInterrupt), ctx.resumable("last.pth"):
        ctx.save({"last.pth": {"w": torch.randn(2)}})
        raise KeyboardInterrupt  # the first; the second comes during the wait for the write
    ctx.close()  # abandoned: nothing left to wait for
    assert time.monotonic() - began < 1.5
    for thread in threading.enumerate():  # the abandoned write, before the next test
        if thread.name == "checkpoint-writer":
            thread.join()
