"""Killed runs continue exactly: SIGKILL mid-epoch, and SIGTERM (save, exit 143)."""

from __future__ import annotations

import itertools
import re
import signal
import time
import types
from pathlib import Path

import pytest
import torch

import crossmae.train.pretrain as pretrain_module
from crossmae.cli import main
from crossmae.errors import CrossMAEError
from crossmae.train.checkpointing import load_training_state
from crossmae.train.logging import read_log
from crossmae.train.run_folder import check_resumable
from crossmae.train.schedule import lr_at

# 64 images in batches of 4: 16 steps per epoch, 2 epochs. Decoded by a worker process with
# per-image seeded augmentation (the DataLoader path), so the resume covers the sampler.
RUN = ["--epochs", "2", "--batch-size", "4", "--warmup-epochs", "0.5", "--in-memory", "false",
       "--log-every", "4"]  # fmt: skip


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_training_state(run_dir / "checkpoint.pth")["model"]


@pytest.fixture
def uninterrupted(tiny, image_folder, tmp_path):
    args = [*tiny, *RUN, "--data", str(image_folder), "--num-workers", "1"]
    assert main(["pretrain", *args, "--output-dir", str(tmp_path / "whole")]) == 0
    return args, weights(tmp_path / "whole")


def wait_for(path: Path, process, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)


@pytest.mark.slow
def test_resume_after_sigkill_mid_epoch_matches_uninterrupted_run(
    uninterrupted, start_crossmae, tmp_path
):
    args, expected = uninterrupted
    run_dir = tmp_path / "killed"
    process = start_crossmae("pretrain", *args, "--output-dir", str(run_dir),
                             "--save-every-steps", "5")  # fmt: skip
    wait_for(run_dir / "checkpoint.pth", process)
    process.send_signal(signal.SIGSTOP)  # freeze it while we look, then kill -9
    state = load_training_state(run_dir / "checkpoint.pth")
    process.kill()
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert state["epoch"] == 0 and 0 < state["step_in_epoch"] < 16  # killed mid-epoch

    assert main(["pretrain", *args, "--output-dir", str(run_dir), "--resume", "auto"]) == 0
    assert_same_weights(weights(run_dir), expected)


@pytest.mark.slow
def test_sigterm_saves_and_exits_then_resume_matches(uninterrupted, start_crossmae, tmp_path):
    args, expected = uninterrupted
    run_dir = tmp_path / "stopped"
    process = start_crossmae("pretrain", *args, "--output-dir", str(run_dir),
                             "--save-every-steps", "3")  # fmt: skip
    wait_for(run_dir / "checkpoint.pth", process)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert "stopped by SIGTERM" in out and "--resume auto" in out
    assert "Traceback" not in err
    stopped_at = load_training_state(run_dir / "checkpoint.pth")["global_step"]
    assert 3 <= stopped_at < 32
    # the loss curve is drawn up to the stop, after the last save
    drawn, saved = ((run_dir / n).stat().st_mtime_ns for n in ("loss.png", "checkpoint.pth"))
    assert drawn >= saved

    # the resumed run takes its settings from the checkpoint: --output-dir is enough
    assert main(["pretrain", "--output-dir", str(run_dir), "--resume", "auto"]) == 0
    assert_same_weights(weights(run_dir), expected)


def test_tar_shards_resume_mid_epoch_exactly(tiny, tar_shards, tmp_path):
    """Shards stream; a resumed run replays the epoch's first batches to reach its place."""
    args = [*tiny, "--data", tar_shards, "--samples-per-epoch", "72", "--epochs", "2",
            "--batch-size", "8", "--warmup-epochs", "0", "--lr", "3e-3",
            "--num-workers", "2"]  # fmt: skip
    assert main(["pretrain", *args, "--output-dir", str(tmp_path / "whole")]) == 0
    cut = tmp_path / "cut"
    assert main(["pretrain", *args, "--output-dir", str(cut), "--max-steps", "13"]) == 0
    state = load_training_state(cut / "checkpoint.pth")
    assert (state["epoch"], state["step_in_epoch"]) == (1, 4)  # 9 steps per epoch
    assert main(["pretrain", "--output-dir", str(cut), "--resume", "auto"]) == 0
    assert_same_weights(weights(cut), weights(tmp_path / "whole"))


def test_run_time_counts_the_processes_before_a_resume(
    tiny, image_folder, tmp_path, capsys, monkeypatch
):
    """The checkpoint carries the run's wall time; the summary adds the resumed part to it."""
    ticks = itertools.count(0.0, 60.0)  # each reading of the clock is a minute after the last
    monkeypatch.setattr(
        pretrain_module, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks))
    )
    run_dir = tmp_path / "run"
    args = [*tiny, "--data", str(image_folder), "--batch-size", "8", "--warmup-epochs", "0",
            "--log-every", "4", "--output-dir", str(run_dir)]  # fmt: skip
    assert main(["pretrain", *args, "--epochs", "1"]) == 0
    first = load_training_state(run_dir / "checkpoint.pth")["train_seconds"]
    capsys.readouterr()
    assert main(["pretrain", *args, "--epochs", "2", "--resume", "auto"]) == 0
    total = load_training_state(run_dir / "checkpoint.pth")["train_seconds"]
    done = re.search(r"done in (\d+)m00s \((\d+)m00s since the resume\)", capsys.readouterr().out)
    assert done, "no 'done in' line with the time since the resume"
    whole, resumed = (60 * int(minutes) for minutes in done.groups())
    assert first >= 60 and total > first + 60  # the second epoch read the clock again
    assert whole > total > resumed  # the summary comes after the last save
    assert whole - resumed == first  # what ran before the resume, counted once


def test_a_run_killed_between_its_two_epoch_end_saves_keeps_every_copy(
    tiny, image_folder, tmp_path
):
    """Epoch ends write the kept copy, then the latest; without the latest (a kill between
    the two), `--resume auto` takes the kept copy, and no kept epoch goes missing."""
    run_dir = tmp_path / "run"
    args = [*tiny, "--data", str(image_folder), "--batch-size", "8", "--warmup-epochs", "0",
            "--keep-every-epochs", "1", "--output-dir", str(run_dir)]  # fmt: skip
    assert main(["pretrain", *args, "--epochs", "2"]) == 0
    whole = weights(run_dir)
    kept = [run_dir / "checkpoint-epoch0001.pth", run_dir / "checkpoint-epoch0002.pth"]
    assert kept[1].stat().st_mtime_ns <= (run_dir / "checkpoint.pth").stat().st_mtime_ns
    assert (run_dir / "checkpoint.pth").stat().st_ino == kept[1].stat().st_ino  # not re-saved

    (run_dir / "checkpoint.pth").unlink()  # as if killed after epoch 2's kept copy
    kept[1].unlink()  # ... or after epoch 1's: the newest file left is its kept copy
    assert main(["pretrain", *args, "--epochs", "2", "--resume", "auto"]) == 0
    assert all(path.is_file() for path in kept)
    assert load_training_state(kept[1])["epoch"] == 2
    assert_same_weights(weights(run_dir), whole)


def test_resumed_with_twice_the_batch_the_run_stays_on_its_schedule(tiny, image_folder, tmp_path):
    """Cut at an epoch boundary, resumed with twice the batch (half the steps per epoch):
    the cosine goes on from the epochs done. Counted in steps it ran past its end, at lr 0."""
    out = tmp_path / "run"
    run = [*tiny, "--data", str(image_folder), "--epochs", "4", "--warmup-epochs", "1",
           "--lr", "1e-3", "--log-every", "1", "--output-dir", str(out)]  # fmt: skip
    assert main(["pretrain", *run, "--batch-size", "4", "--max-steps", "32"]) == 0  # 2 epochs
    assert main(["pretrain", *run, "--batch-size", "8", "--resume", "auto"]) == 0
    records = [r for r in read_log(out / "log.jsonl") if "lr" in r]
    resumed = [r for r in records if r["epoch"] > 2]
    assert len(resumed) == 16 and resumed[-1]["epoch"] == 4  # 8 steps an epoch
    for r in resumed:  # a record's lr was set before its step, 1/8 epoch earlier
        expected = lr_at(r["epoch"] - 1 / 8, base_lr=1e-3, warmup_steps=1, total_steps=4)
        assert r["lr"] == pytest.approx(expected, rel=1e-9)
    assert resumed[0]["lr"] > 4e-4  # half way down the cosine, not at its end
    assert load_training_state(out / "checkpoint.pth")["global_step"] == 32 + 16


def test_a_mid_epoch_resume_on_fewer_images_is_refused_not_looped(
    tiny, image_folder, tmp_path, capsys
):
    """Step 12 of an epoch that now has 4: the loop never ran and the run went round
    forever, saving and drawing, deaf to SIGTERM."""
    run = [*tiny, "--data", str(image_folder), "--epochs", "2", "--warmup-epochs", "0",
           "--batch-size", "4", "--output-dir", str(tmp_path / "run")]  # fmt: skip
    assert main(["pretrain", *run, "--max-steps", "12"]) == 0  # 16 steps an epoch
    code = main(["pretrain", *run, "--resume", "auto", "--train-images", "16"])
    assert code == 2
    assert "stopped at step 12 of an epoch, but an epoch of" in capsys.readouterr().err


def _short_run(tiny, image_folder, out, *flags):
    """Steps 1-4 of a 3-epoch run (8 steps an epoch), saved mid-epoch."""
    run = [*tiny, "--data", str(image_folder), "--epochs", "3", "--warmup-epochs", "0",
           "--batch-size", "8", "--output-dir", str(out), *flags]  # fmt: skip
    assert main(["pretrain", *run, "--max-steps", "4"]) == 0
    return run


def test_a_resume_does_not_inherit_the_last_invocations_max_steps(tiny, image_folder, tmp_path):
    """--max-steps 4 cut the first invocation short; continuing without it runs to the end."""
    run = _short_run(tiny, image_folder, tmp_path / "run", "--epochs", "1")
    assert main(["pretrain", *run, "--resume", "auto"]) == 0
    state = load_training_state(tmp_path / "run" / "checkpoint.pth")
    assert state["global_step"] == 8 and state["config"]["max_steps"] is None


def test_a_resume_trains_with_the_weight_decay_and_betas_given_now(tiny, image_folder, tmp_path):
    run = _short_run(tiny, image_folder, tmp_path / "run")
    assert main(["pretrain", *run, "--resume", "auto", "--max-steps", "6",
                 "--weight-decay", "0.01", "--betas", "0.8,0.99"]) == 0  # fmt: skip
    groups = load_training_state(tmp_path / "run" / "checkpoint.pth")["optimizer"]["param_groups"]
    assert sorted(g["weight_decay"] for g in groups) == [0.0, 0.01]  # norms and biases: none
    assert all(tuple(g["betas"]) == (0.8, 0.99) for g in groups)


def test_a_resume_is_checked_and_placed_with_the_runs_own_settings(
    tiny, image_folder, tmp_path, monkeypatch
):
    """No --model now: the demo's 3 epochs must not judge a --warmup-epochs meant for the
    run's, nor its 'auto' device replace the run's."""
    out = tmp_path / "run"
    _short_run(tiny, image_folder, out, "--epochs", "10")
    devices = []
    join = pretrain_module.init_distributed
    monkeypatch.setattr(pretrain_module, "init_distributed",
                        lambda device: devices.append(device) or join(device))  # fmt: skip
    code = main(["pretrain", "--resume", "auto", "--output-dir", str(out),
                 "--warmup-epochs", "5", "--max-steps", "5"])  # fmt: skip
    assert code == 0 and devices == ["cpu"]
    assert load_training_state(out / "checkpoint.pth")["config"]["warmup_epochs"] == 5


def test_branching_off_an_older_kept_copy_never_writes_over_the_run(
    tiny, image_folder, tmp_path, capsys
):
    out = tmp_path / "run"
    run = [*tiny, "--data", str(image_folder), "--epochs", "2", "--warmup-epochs", "0",
           "--batch-size", "8", "--keep-every-epochs", "1", "--output-dir", str(out)]  # fmt: skip
    assert main(["pretrain", *run]) == 0
    older = out / "checkpoint-epoch0001.pth"
    assert main(["pretrain", *run, "--resume", str(older), "--blr", "3e-2"]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'checkpoint.pth'} is further along (step 16) than {older} (step 8)" in err
    assert load_training_state(out / "checkpoint.pth")["global_step"] == 16
    branch = [*run[:-1], str(tmp_path / "branch")]  # the same flags, a new --output-dir
    assert main(["pretrain", *branch, "--resume", str(older), "--blr", "3e-2"]) == 0
    assert load_training_state(tmp_path / "branch" / "checkpoint.pth")["global_step"] == 16


def test_a_resume_already_past_its_epochs_is_refused(tiny, image_folder, tmp_path, capsys):
    run = _short_run(tiny, image_folder, tmp_path / "run")
    assert main(["pretrain", *run, "--resume", "auto", "--max-steps", "12"]) == 0
    assert main(["pretrain", *run, "--resume", "auto", "--epochs", "1"]) == 2
    assert "is 1.5 epochs in (step 12), already past --epochs 1" in capsys.readouterr().err


@pytest.mark.slow
def test_sigterm_to_the_whole_job_saves_even_with_loader_workers(
    tiny, image_folder, crossmae_env, tmp_path
):
    """SLURM, Kubernetes and `docker stop` signal every process of the job, the DataLoader
    workers too: a worker killed by it crashed the main process's save."""
    import os
    import subprocess
    import sys

    run_dir = tmp_path / "job"
    args = [*tiny, *RUN, "--data", str(image_folder), "--num-workers", "2", "--epochs", "50",
            "--save-every-steps", "3", "--output-dir", str(run_dir)]  # fmt: skip
    process = subprocess.Popen([sys.executable, "-m", "crossmae", "pretrain", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=crossmae_env, start_new_session=True)  # fmt: skip
    wait_for(run_dir / "checkpoint.pth", process)
    os.killpg(process.pid, signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert "stopped by SIGTERM" in out and "Traceback" not in err
    assert load_training_state(run_dir / "checkpoint.pth")["global_step"] >= 3


def test_a_mid_epoch_shard_resume_with_other_readers_is_refused(tiny, tar_shards, tmp_path, capsys):
    """Shards are dealt to processes x workers; dealt otherwise, the rest of the epoch would
    repeat some images and skip others."""
    args = [*tiny, "--data", tar_shards, "--samples-per-epoch", "72",
            "--epochs", "2", "--batch-size", "8", "--warmup-epochs", "0",
            "--output-dir", str(tmp_path / "cut")]  # fmt: skip
    assert main(["pretrain", *args, "--num-workers", "2", "--max-steps", "4"]) == 0
    assert main(["pretrain", *args, "--num-workers", "1", "--resume", "auto"]) == 2
    assert "dealt to 2 readers (processes x loader workers)" in capsys.readouterr().err


RESUMABLE = {"model_config": {"depth": 2}, "epoch": 1, "step_in_epoch": 3, "global_step": 13,
             "effective_batch": 64, "data_readers": 2}  # fmt: skip
HERE = {"model_config": {"depth": 2}, "effective_batch": 64, "readers": 2,
        "steps_per_epoch": 10, "data": "10 images", "epochs": 2}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_config": {"depth": 3}}, "a different model (depth is 2 there and 3 here)"),
        ({"effective_batch": 128}, "stopped mid-epoch with an effective batch of 64"),
        ({"readers": 4}, "tar shards dealt to 2 readers"),
        ({"steps_per_epoch": 2}, "stopped at step 3 of an epoch, but an epoch of 10 images"),
        ({"epochs": 1}, "is 1.3 epochs in (step 13), already past --epochs 1"),
    ],
)
def test_a_checkpoint_this_run_cannot_continue_is_refused_up_front(change, message):
    with pytest.raises(CrossMAEError, match=re.escape(message)):
        check_resumable(RESUMABLE, Path("ckpt.pth"), **(HERE | change))


def test_at_an_epochs_end_a_new_batch_or_worker_count_is_fine():
    at_end = RESUMABLE | {"step_in_epoch": 0, "epoch": 2}
    check_resumable(at_end, Path("ckpt.pth"), **(HERE | {"effective_batch": 128, "readers": 4}))
    check_resumable(RESUMABLE | {"data_readers": None}, Path("ckpt.pth"), **(HERE | {"readers": 4}))
