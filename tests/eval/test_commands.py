"""The three commands end to end on tiny data, from our checkpoints and the authors'."""

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from crossmae.cli import main
from crossmae.eval import finetune, linprobe
from crossmae.eval.backbone import load_backbone
from crossmae.eval.run import RunContext

FAST = ["--num-workers", "0", "--batch-size", "20", "--log-every", "1"]
SUBSET = ["--train-images", "60", "--eval-images", "40"]


def _run(*args) -> int:
    return main([str(a) for a in args])


def _slow_clock(monkeypatch, module) -> None:
    """Each reading of `module`'s clock is 10 s after the last: epoch times become exact."""
    ticks = itertools.count(1000.0, 10.0)
    monkeypatch.setattr(module, "time", types.SimpleNamespace(time=lambda: next(ticks)))


def _strictly_increasing(values: list[float]) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))


@pytest.mark.parametrize("which", ["ours", "authors"])
def test_knn_separates_two_classes_and_writes_json_beside_the_checkpoint(
    which, request, two_class_tree
):
    checkpoint = request.getfixturevalue(which)
    assert _run("knn", "--checkpoint", checkpoint, "--data", two_class_tree, "--k", 5,
                "--num-workers", 0, "--batch-size", 16) == 0  # fmt: skip
    results = json.loads(checkpoint.with_name(f"{checkpoint.stem}.knn.json").read_text())
    assert results["train_images"] == 60 and results["eval_images"] == 20
    assert results["k"] == 5 and results["features"] == "avg"
    assert results["top1"] == 100.0


@pytest.mark.parametrize("command", ["knn", "finetune"])
def test_bad_evaluation_images_are_left_out_not_counted_twice(
    command, ours, two_class_tree, tmp_path, capsys
):
    data = tmp_path / "data"
    shutil.copytree(two_class_tree, data)
    (data / "val" / "dark" / "zz_junk.png").write_bytes(b"not an image")
    (data / "val" / "bright" / "zz_empty.png").write_bytes(b"")
    out = tmp_path / "out"
    extra = ["--k", 5] if command == "knn" else [*FAST[2:], "--epochs", 1, "--warmup-epochs", 0]
    assert _run(command, "--checkpoint", ours, "--data", data, "--output-dir", out,
                "--num-workers", 0, *extra) == 0  # fmt: skip
    results = json.loads((out / ("knn.json" if command == "knn" else "results.json")).read_text())
    assert results["eval_images"] == 20  # not 22: a bad image's stand-in was a duplicate
    assert "evaluation images: skipped 2 of 22 files: 1 corrupt, 1 empty" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["finetune", "linprobe"])
def test_results_count_the_training_images_that_decoded(command, ours, two_class_tree, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(two_class_tree, data)
    (data / "train" / "dark" / "zz_junk.png").write_bytes(b"not an image")
    (data / "train" / "bright" / "zz_truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    out = tmp_path / "out"
    assert _run(command, "--checkpoint", ours, "--data", data, "--output-dir", out, *FAST,
                "--batch-size", 62, "--epochs", 1, "--warmup-epochs", 0) == 0  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert results["train_images"] == 60  # of 62 files read: two were bad, and stood in for


def test_knn_on_the_builtin_demo_set_with_token_features(authors, tmp_path):
    out = tmp_path / "knn"
    assert _run("knn", "--checkpoint", authors, "--features", "token", "--output-dir", out,
                *SUBSET, "--num-workers", 0) == 0  # fmt: skip
    results = json.loads((out / "knn.json").read_text())
    assert results["classes"] == 10 and results["eval_images"] == 40
    assert 0 <= results["top1"] <= 100


@pytest.mark.parametrize("which", ["ours", "authors"])
def test_cached_linprobe_learns_and_resumes(which, request, two_class_tree, tmp_path, monkeypatch):
    _slow_clock(monkeypatch, linprobe)
    checkpoint = request.getfixturevalue(which)
    out = tmp_path / "probe"
    common = ["linprobe", "--checkpoint", checkpoint, "--data", two_class_tree, "--cached",
              "--output-dir", out, "--warmup-epochs", 1, "--lr", 5.0, "--resume", "auto",
              "--num-workers", 0, "--batch-size", 60]  # fmt: skip
    assert _run(*common, "--epochs", 12) == 0
    first = json.loads((out / "results.json").read_text())
    assert [h["epoch"] for h in first["history"]] == list(range(1, 13))
    assert _run(*common, "--epochs", 20) == 0  # picks up checkpoint-last.pth after epoch 12
    again = json.loads((out / "results.json").read_text())
    assert again["history"][:12] == first["history"]
    assert [h["epoch"] for h in again["history"]] == list(range(1, 21))
    assert again["history"][-1]["loss"] < again["history"][0]["loss"]
    assert again["top1"] == 100.0 and again["mode"] == "cached features"
    seconds = [h["seconds"] for h in again["history"]]  # counted across the resume
    assert _strictly_increasing(seconds) and again["train_seconds"] > seconds[-1]
    ckpt = torch.load(out / "checkpoint-last.pth", weights_only=True)
    assert ckpt["format"] == "crossmae-linprobe" and ckpt["classes"] == ["bright", "dark"]


def test_full_linprobe_with_fused_features_on_the_demo_set(authors, tmp_path):
    out = tmp_path / "probe"
    assert _run("linprobe", "--checkpoint", authors, "--features", "fused", "--epochs", 1,
                "--warmup-epochs", 0, "--output-dir", out, *SUBSET, *FAST) == 0  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "frozen encoder, augmented" and results["eval_images"] == 40
    assert len(results["history"]) == 1 and (out / "log.jsonl").is_file()


def test_finetune_from_our_checkpoint(ours, two_class_tree, tmp_path):
    out = tmp_path / "ft"
    assert _run("finetune", "--checkpoint", ours, "--data", two_class_tree, "--output-dir", out,
                "--epochs", 1, "--warmup-epochs", 0, *FAST) == 0  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert {"top1", "top5", "best_top1", "best_epoch"} <= set(results)
    best = load_backbone(out / "checkpoint-best.pth")
    assert best.classes == ["bright", "dark"] and (out / "checkpoint-last.pth").is_file()
    before, after = load_backbone(ours).state_dict, best.state_dict
    moved = {k: (after[k] - before[k]).abs().mean().item() for k in before}
    # layer decay 0.65: the embedding learns at 0.65^2 of the last block's rate
    assert 0 < moved["patch_embed.proj.weight"] < 0.6 * moved["blocks.1.mlp.fc1.weight"]


def test_finetune_with_gradient_checkpointing_trains_the_same(
    ours, two_class_tree, tmp_path, monkeypatch
):
    switched = []
    original = VisionTransformer.set_grad_checkpointing
    monkeypatch.setattr(
        VisionTransformer, "set_grad_checkpointing",
        lambda self, enable=True: switched.append(enable) or original(self, enable),
    )  # fmt: skip
    common = ("finetune", "--checkpoint", ours, "--data", two_class_tree, "--epochs", 1,
              "--warmup-epochs", 0, "--log-every", 1, *FAST)  # fmt: skip
    assert _run(*common, "--output-dir", tmp_path / "plain") == 0
    assert _run(*common, "--output-dir", tmp_path / "kept", "--grad-checkpointing") == 0
    plain, kept = (
        json.loads((tmp_path / d / "results.json").read_text()) for d in ("plain", "kept")
    )
    # drop path draws the same masks in the recomputation: the same steps, bit for bit
    assert kept["history"][0]["loss"] == plain["history"][0]["loss"]
    assert kept["top1"] == plain["top1"] and switched == [False, True]
    weights = [load_backbone(tmp_path / d / "checkpoint-last.pth").state_dict
               for d in ("plain", "kept")]  # fmt: skip
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_finetune_from_authors_checkpoint_resumes_with_ema(
    authors, two_class_tree, tmp_path, monkeypatch
):
    _slow_clock(monkeypatch, finetune)
    out = tmp_path / "ft"
    common = ["finetune", "--checkpoint", authors, "--data", two_class_tree,
              "--output-dir", out, "--warmup-epochs", 1, "--resume", "auto", "--ema",
              "--ema-decay", 0.9, *FAST]  # fmt: skip
    assert _run(*common, "--epochs", 1) == 0
    first = json.loads((out / "results.json").read_text())
    assert _run(*common, "--epochs", 2) == 0  # continues after epoch 1
    results = json.loads((out / "results.json").read_text())
    assert results["history"][0] == first["history"][0]
    assert [h["epoch"] for h in results["history"]] == [1, 2]
    assert {"ema_top1", "ema_top5"} <= set(results["history"][1])
    seconds = [h["seconds"] for h in results["history"]]  # counted across the resume
    assert _strictly_increasing(seconds) and results["train_seconds"] > seconds[-1]
    assert load_backbone(out / "checkpoint-best.pth").classes == ["bright", "dark"]


class _Killed(Exception):
    pass


FINETUNE = ["finetune", "--ema", "--ema-decay", 0.9, "--epochs", 3, *FAST]  # with mixup, cutmix
PROBE = ["linprobe", "--cached", "--lr", 5.0, "--epochs", 3, "--num-workers", 0, "--batch-size", 20]


@pytest.mark.parametrize("command", [FINETUNE, PROBE], ids=["finetune", "linprobe"])
def test_a_run_stopped_after_an_epoch_resumes_to_the_uninterrupted_run(
    command, authors, two_class_tree, tmp_path, monkeypatch
):
    """Weights, optimizer, EMA and every random stream (mixup, augmentation) continue: the
    resumed run's later epochs equal those of a run never stopped."""
    common = [*command, "--checkpoint", authors, "--data", two_class_tree, "--warmup-epochs", 1,
              "--resume", "auto"]  # fmt: skip
    assert _run(*common, "--output-dir", tmp_path / "whole") == 0
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())["history"]

    real_log_epoch = RunContext.log_epoch
    ended = itertools.count(1)

    def killed_after_the_first_epoch(self, *args):  # its checkpoint is written by then
        real_log_epoch(self, *args)
        if next(ended) == 1:
            raise _Killed

    with monkeypatch.context() as patched:
        patched.setattr(RunContext, "log_epoch", killed_after_the_first_epoch)
        with pytest.raises(_Killed):
            _run(*common, "--output-dir", tmp_path / "cut")
    assert _run(*common, "--output-dir", tmp_path / "cut") == 0
    resumed = json.loads((tmp_path / "cut" / "results.json").read_text())["history"]

    def scores(history):
        return [{k: v for k, v in h.items() if k != "seconds"} for h in history]

    assert len(resumed) == 3 and scores(resumed) == scores(whole)


@pytest.mark.parametrize("command", ["finetune", "linprobe"])
def test_an_fp16_run_resumes_with_its_loss_scale(command, authors, two_class_tree, tmp_path):
    """The GradScaler's scale is training state: a resumed fp16 run goes on from the saved
    one instead of starting again at 2**16 (and overflowing its first steps)."""
    out = tmp_path / "fp16"
    common = [command, "--checkpoint", authors, "--data", two_class_tree, "--precision", "fp16",
              "--warmup-epochs", 0, "--output-dir", out, "--resume", "auto", *FAST]  # fmt: skip
    assert _run(*common, "--epochs", 1) == 0
    last = out / "checkpoint-last.pth"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["scaler"]["scale"] == 2.0**16  # 3 steps: no overflow, no growth yet
    ckpt["scaler"]["scale"] = 256.0
    torch.save(ckpt, last)
    assert _run(*common, "--epochs", 2) == 0
    assert torch.load(last, weights_only=True)["scaler"]["scale"] == 256.0


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
@pytest.mark.parametrize("command", [FINETUNE, PROBE], ids=["finetune", "linprobe"])
def test_a_stop_says_where_the_last_epoch_is_and_how_to_go_on(
    how, command, authors, two_class_tree, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "run"
    args = [*command, "--checkpoint", authors, "--data", two_class_tree, "--warmup-epochs", 1,
            "--output-dir", out]  # fmt: skip
    real_log_epoch = RunContext.log_epoch

    def unhandled(signum, frame):  # what the run should have put in front of this
        raise AssertionError("SIGTERM reached the handler outside the run")

    handler = signal.signal(signal.SIGTERM, unhandled)  # never the default: it ends pytest

    def stopped_after_the_first_epoch(self, *a):
        real_log_epoch(self, *a)
        if how == "sigterm":  # what a scheduler sends: delivered to this process for real
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(RunContext, "log_epoch", stopped_after_the_first_epoch)
        assert _run(*args) == (143 if how == "sigterm" else 130)
    said = capsys.readouterr()
    assert f"stopped; {out / 'checkpoint-last.pth'} holds the last finished epoch" in said.out
    assert "--resume auto" in said.out
    assert said.err.endswith("stopped by SIGTERM\n" if how == "sigterm" else "interrupted\n")
    assert signal.signal(signal.SIGTERM, handler) is unhandled  # put back
    assert _run(*args, "--resume", "auto") == 0
    if command is FINETUNE:  # the weights come from the checkpoint: none are fresh
        assert "initialised fresh" in said.out
        assert "initialised fresh" not in capsys.readouterr().out
    assert len(json.loads((out / "results.json").read_text())["history"]) == 3


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_a_stop_of_the_whole_job_with_workers_is_one_message(sig, authors, two_class_tree,
                                                             tmp_path):  # fmt: skip
    """A scheduler signals every process of the job, DataLoader workers too: the run still
    ends with its own message and exit code, not torch's "worker killed" traceback."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "crossmae", "finetune", "--checkpoint", authors,
               "--data", two_class_tree, "--epochs", 500, "--warmup-epochs", 0,
               "--batch-size", 10, "--num-workers", 2, "--output-dir", out]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def as_in_a_terminal() -> None:  # a job started in the background ignores SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    job = subprocess.Popen([str(a) for a in command], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
                           preexec_fn=as_in_a_terminal)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint-last.pth").exists():
            assert job.poll() is None and time.monotonic() < deadline, job.communicate()[0]
            time.sleep(0.05)
        time.sleep(0.5)  # into the next epoch, workers busy
        os.killpg(job.pid, sig)
        said = job.communicate(timeout=60)[0]
    finally:
        job.kill()
    assert job.returncode == (143 if sig == signal.SIGTERM else 130), said
    assert "Traceback" not in said and "holds the last finished epoch" in said, said


def test_finetune_at_a_new_resolution_with_token_pooling(authors, tmp_path):
    out = tmp_path / "ft48"
    assert _run("finetune", "--checkpoint", authors, "--img-size", 48, "--global-pool", "token",
                "--epochs", 1, "--warmup-epochs", 0, "--mixup", 0, "--cutmix", 0,
                "--output-dir", out, *SUBSET, *FAST) == 0  # fmt: skip
    best = load_backbone(out / "checkpoint-best.pth")
    assert best.arch.img_size == (48, 48) and best.state_dict["pos_embed"].shape == (1, 145, 64)
    assert json.loads((out / "results.json").read_text())["image_size"] == "48x48"


@pytest.mark.slow
def test_cached_probe_under_torchrun_counts_each_test_image_once(authors, two_class_tree, tmp_path):
    """Every process holds all cached features; summing their counts doubled the images."""
    out = tmp_path / "probe"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node=2", "-m", "crossmae"]  # fmt: skip
    args = ["linprobe", "--checkpoint", authors, "--data", two_class_tree, "--cached",
            "--epochs", 2, "--warmup-epochs", 0, "--lr", 5.0, "--num-workers", 0,
            "--batch-size", 20, "--output-dir", out]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*torchrun, *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["eval_images"] == 20 and results["history"][-1]["images"] == 20


def test_knn_reports_the_k_that_voted(ours, two_class_tree, tmp_path):
    out = tmp_path / "knn"
    assert _run("knn", "--checkpoint", ours, "--data", two_class_tree, "--k", 1000,
                "--output-dir", out, "--num-workers", 0) == 0  # fmt: skip
    assert json.loads((out / "knn.json").read_text())["k"] == 60  # every training image


def test_the_cached_probe_refuses_a_batch_larger_than_its_training_set(
    ours, two_class_tree, tmp_path, capsys
):
    out = tmp_path / "p"
    code = _run("linprobe", "--checkpoint", ours, "--data", two_class_tree, "--cached",
                "--batch-size", 512, "--num-workers", 0, "--output-dir", out)  # fmt: skip
    assert code == 2
    assert "an epoch has fewer images (60) than one batch of 512" in capsys.readouterr().err


def test_a_run_resumes_only_on_the_checkpoint_it_started_from(
    ours, authors, two_class_tree, tmp_path, capsys
):
    common = ["linprobe", "--data", two_class_tree, "--cached", "--epochs", 1,
              "--warmup-epochs", 0, "--resume", "auto",
              "--output-dir", tmp_path / "p", "--num-workers", 0, "--batch-size", 20]  # fmt: skip
    assert _run(*common, "--checkpoint", ours) == 0
    capsys.readouterr()
    assert _run(*common, "--checkpoint", authors, "--epochs", 2) == 2
    assert f"continues a run on {ours}, not on {authors}" in capsys.readouterr().err


def test_default_folders_of_two_pretraining_runs_differ():
    from crossmae.eval.settings import FinetuneSettings

    folders = {FinetuneSettings(checkpoint=f"runs/{run}/checkpoint.pth").run_dir("finetune")
               for run in ("a", "b")}  # fmt: skip
    assert {str(f) for f in folders} == {"runs/finetune/a-checkpoint", "runs/finetune/b-checkpoint"}
    named = FinetuneSettings(checkpoint="/w/mae_pretrain_vit_base.pth").run_dir("finetune")
    assert str(named) == "runs/finetune/mae_pretrain_vit_base"


def test_ema_switched_on_at_a_resume_averages_the_resumed_weights(ours, two_class_tree, tmp_path):
    common = ["finetune", "--checkpoint", ours, "--data", two_class_tree, "--output-dir",
              tmp_path / "ft", "--warmup-epochs", 0, "--resume", "auto", *FAST]  # fmt: skip
    assert _run(*common, "--epochs", 1) == 0
    resumed = torch.load(tmp_path / "ft" / "checkpoint-last.pth", weights_only=True)["model"]
    assert _run(*common, "--epochs", 2, "--ema", "--ema-decay", 0.9999) == 0
    ema = torch.load(tmp_path / "ft" / "checkpoint-last.pth", weights_only=True)["ema"]
    head = resumed["head.weight"]
    assert (ema["head.weight"] - head).norm() < 0.01 * head.norm()  # not the fresh head's 2e-5


def test_a_second_run_into_a_finished_runs_folder_is_refused(
    ours, two_class_tree, tmp_path, capsys
):
    run = ["finetune", "--checkpoint", ours, "--data", two_class_tree, "--output-dir",
           tmp_path / "ft", "--epochs", 1, "--warmup-epochs", 0, *FAST]  # fmt: skip
    assert _run(*run) == 0
    before = (tmp_path / "ft" / "checkpoint-last.pth").read_bytes()
    capsys.readouterr()
    assert _run(*run, "--blr", 1e-2) == 2
    assert "already holds a run; pass --resume auto to continue it" in capsys.readouterr().err
    assert (tmp_path / "ft" / "checkpoint-last.pth").read_bytes() == before


@pytest.mark.parametrize("command", ["finetune", "linprobe"])
def test_accumulated_batches_make_the_effective_batch(command, ours, two_class_tree, tmp_path):
    """60 images in batches of 10, 3 to a step: 2 optimizer steps, lr for a batch of 30."""
    out = tmp_path / command
    assert _run(command, "--checkpoint", ours, "--data", two_class_tree, "--output-dir", out,
                "--epochs", 1, "--warmup-epochs", 0, "--num-workers", 0, "--log-every", 1,
                "--batch-size", 10, "--accum-iter", 3, "--blr", 1e-3) == 0  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert results["effective_batch"] == 30 and results["lr"] == pytest.approx(1e-3 * 30 / 256)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train_loss" in r] == [1, 2]
