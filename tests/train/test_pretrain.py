"""`crossmae pretrain` end to end (in this process): the demo, bad settings, bad losses."""

from __future__ import annotations

import json
import math
import re
import sys

import pytest
import torch
import yaml
from PIL import Image

import crossmae
from crossmae.cli import main
from crossmae.train.checkpointing import load_training_state


def pretrain(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["pretrain", *args])
    out, err = capsys.readouterr()
    return code, out, err


def losses(run_dir) -> list[float]:
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines if '"loss"' in line]


@pytest.mark.slow
def test_demo_run_writes_checkpoint_curve_and_reconstructions(tmp_path, capsys):
    """The README's main command, cut to a few steps: no --model, no --data."""
    out_dir = tmp_path / "demo"
    code, out, err = pretrain(capsys, "--max-steps", "8", "--batch-size", "32", "--warmup-epochs",
                              "0", "--log-every", "2", "--device", "cpu", "--num-workers", "0",
                              "--output-dir", str(out_dir))  # fmt: skip
    assert code == 0, err
    assert "built-in CIFAR-10 demo" in out and "kept in memory" in out
    for name in ("checkpoint.pth", "log.jsonl", "loss.png", "reconstruction.png", "config.yaml"):
        assert (out_dir / name).is_file(), name
        assert str(out_dir / name) in out  # the summary says where each file is
    assert list(out_dir.glob("events.out.tfevents.*"))
    curve = losses(out_dir)
    assert len(curve) == 5 and all(math.isfinite(x) for x in curve)  # steps 1, 2, 4, 6, 8
    assert curve[-1] < curve[0]  # learning
    width, height = Image.open(out_dir / "reconstruction.png").size
    assert height > 2 * width  # one row per image, 8 of them
    model = crossmae.load_model(out_dir / "checkpoint.pth")
    assert model.config.depth == 4 and model.config.embed_dim == 128
    used = yaml.safe_load((out_dir / "config.yaml").read_text())  # what the demo left unset
    assert (used["img_size"], used["mask_ratio"], used["prediction_ratio"]) == (32, 0.75, 0.25)
    assert used["norm_pix_loss"] is True and used["in_memory"] is True
    state = load_training_state(out_dir / "checkpoint.pth")
    assert state["global_step"] == 8 and state["config"]["model"] == "crossmae_vit_tiny_patch4_32"


@pytest.fixture
def tiny_run(tiny, image_folder, tmp_path, capsys):
    """A finished 1-epoch tiny run (8 steps) and the flags that made it."""
    args = [*tiny, "--data", str(image_folder), "--epochs", "1", "--batch-size", "8",
            "--warmup-epochs", "0", "--log-every", "1",
            "--output-dir", str(tmp_path / "run")]  # fmt: skip
    code, _, err = pretrain(capsys, *args)
    assert code == 0, err
    return tmp_path / "run", args


def test_tiny_run_logs_every_step_and_keeps_fixed_files(tiny_run):
    run_dir, _ = tiny_run
    records = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 9))
    for key in ("loss", "lr", "grad_norm", "images_per_s", "nonfinite_steps", "epoch"):
        assert key in records[0]
    assert records[-1]["epoch"] == 1.0 and records[-1]["nonfinite_steps"] == 0
    if sys.platform.startswith("linux"):  # the CPU run's own peak memory, read from /proc
        assert 0.05 < records[-1]["host_mem_gib"] < 16


def test_gradient_checkpointing_trains_to_the_same_losses(tiny_run, tmp_path, capsys, monkeypatch):
    from crossmae.models import layers

    checkpointed, original = [], layers.checkpoint

    def checkpoint(block, *args, **kwargs):
        checkpointed.append(type(block).__name__)
        return original(block, *args, **kwargs)

    monkeypatch.setattr(layers, "checkpoint", checkpoint)
    run_dir, args = tiny_run
    out = tmp_path / "checkpointed"
    code, text, err = pretrain(capsys, *args, "--grad-checkpointing", "--output-dir", str(out))
    assert code == 0, err
    assert "gradient checkpointing" in text
    assert checkpointed == ["Block", "Block", "CrossBlock", "CrossBlock"] * 8  # 8 steps
    assert losses(out) == pytest.approx(losses(run_dir), rel=1e-5)


@pytest.mark.parametrize(("seconds", "drawn"), [(0.0, [1, 2, 3]), (math.inf, [1, 3])])
def test_the_loss_curve_is_drawn_after_epoch_1_then_at_most_so_often_and_at_the_end(
    tiny, image_folder, tmp_path, capsys, monkeypatch, seconds, drawn
):
    from crossmae.train import pretrain as training

    epochs, original = [], training.save_loss_curve

    def save_loss_curve(records, *rest):
        epochs.append(round(records[-1]["epoch"]))
        return original(records, *rest)

    monkeypatch.setattr(training, "LOSS_CURVE_SECONDS", seconds)
    monkeypatch.setattr(training, "save_loss_curve", save_loss_curve)
    code, _, err = pretrain(capsys, *tiny, "--data", str(image_folder), "--epochs", "3",
                            "--batch-size", "16", "--warmup-epochs", "0",
                            "--output-dir", str(tmp_path / "run"))  # fmt: skip
    assert code == 0, err
    assert epochs == drawn and (tmp_path / "run" / "loss.png").is_file()


def test_existing_run_is_not_overwritten_without_resume(tiny_run, capsys):
    _, args = tiny_run
    code, _, err = pretrain(capsys, *args)
    assert code == 2 and "already holds a run; pass --resume auto" in err


def _error(capsys, *args) -> str:
    code, _, err = pretrain(capsys, *args)
    assert code == 2, err
    assert err.startswith("crossmae pretrain: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--mask-ratio", "1.5"], "mask ratio must be between 0 and 1, got 1.5"),
        (["--mask-ratio", "0"], "mask ratio must be between 0 and 1, got 0.0"),
        (["--prediction-ratio", "0.8"], r"prediction ratio must be in \(0, mask ratio 0.75\]"),
        (["--prediction-ratio", "-0.1"], r"prediction ratio must be in \(0, mask ratio 0.75\]"),
        (["--img-size", "30"], "image size 30x30 is not divisible by the patch size 4"),
        (["--data", "/no/such/folder"], "data path /no/such/folder does not exist"),
        (["--model", "vit_giant"], "unknown model 'vit_giant'"),
        (["--epochs", "many"], "--epochs is not a valid N, got 'many'"),
        (["--resume", "auto"], "--resume auto needs the --output-dir"),
        (["--resume", "/no/such.pth"], "checkpoint /no/such.pth does not exist"),
        (["--blr", "nan"], "--blr must be a finite number, got 'nan'"),
        (["--lr", "inf"], "--lr must be a finite number, got 'inf'"),
        (["--clip-grad", "nan"], "--clip-grad must be a finite number"),
        (["--weight-decay", "-1"], "--weight-decay must not be negative, got -1.0"),
        (["--lr", "1e-3", "--min-lr", "0.1"], "--min-lr 0.1 is above the learning rate 0.001"),
        (["--device", "xla"], "device 'xla' is not supported; use cpu, cuda or auto"),
    ],
)
def test_invalid_settings_fail_at_start_with_one_sentence(quiet, capsys, flags, message):
    assert re.search(message, _error(capsys, *quiet, *flags))


def test_folder_without_images_fails_at_start(quiet, tmp_path, capsys):
    (tmp_path / "train" / "cats").mkdir(parents=True)
    (tmp_path / "train" / "cats" / "notes.txt").write_text("no images here")
    err = _error(capsys, *quiet, "--data", str(tmp_path))
    assert "found no images in" in err


def test_unknown_key_in_config_file(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("epochs: 2\nmask_ration: 0.5\n")
    assert "unknown setting 'mask_ration'" in _error(capsys, "--config", str(recipe))


def test_checkpoint_of_another_architecture_is_refused(tiny_run, tmp_path, capsys):
    run_dir, args = tiny_run
    other = [*args, "--resume", str(run_dir / "checkpoint.pth"), "--output-dir",
             str(tmp_path / "other"), "--model-overrides", "img_size=16", "embed_dim=32",
             "num_heads=2", "depth=3", "decoder_dim=32", "decoder_depth=2",
             "decoder_heads=2"]  # fmt: skip
    err = _error(capsys, *other)
    assert "is a different model (depth is 2 there and 3 here)" in err


def test_diverging_run_stops_with_a_clear_message(tiny, image_folder, tmp_path, capsys):
    run_dir = tmp_path / "nan"
    err = _error(capsys, *tiny, "--data", str(image_folder), "--epochs", "3",
                 "--batch-size", "8", "--warmup-epochs", "0", "--lr", "1e30", "--log-every", "1",
                 "--max-nonfinite", "2", "--save-every-steps", "1",
                 "--output-dir", str(run_dir))  # fmt: skip
    assert "not finite for 2 steps in a row" in err
    assert f"the last good checkpoint is {run_dir / 'checkpoint.pth'}" in err
    assert err.endswith("lower --blr or --lr, or set --clip-grad\n")  # fp32: no precision advice
    records = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    assert records[0]["nonfinite_steps"] == 0 and records[-1]["nonfinite_steps"] >= 2
    model = crossmae.load_model(run_dir / "checkpoint.pth")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_online_knn_is_logged_every_epoch(tiny, image_folder, write_images, tmp_path, capsys):
    write_images(image_folder / "val", 16, seed=3)
    run_dir = tmp_path / "knn"
    code, out, err = pretrain(capsys, *tiny, "--data", str(image_folder), "--epochs", "2",
                              "--warmup-epochs", "0", "--batch-size", "8", "--knn-every-epochs",
                              "1", "--knn-max-images", "32",
                              "--output-dir", str(run_dir))  # fmt: skip
    assert code == 0, err
    records = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    knn = [r for r in records if "knn_top1" in r]
    assert [r["epoch"] for r in knn] == [1, 2]
    assert all(0 <= r["knn_top1"] <= 100 for r in knn)
    assert "epoch 2: kNN top-1" in out


def test_knn_needs_labels(quiet, tmp_path, write_images, capsys):
    write_images(tmp_path / "flat", 8)  # two class folders...
    flat = tmp_path / "unlabeled"
    flat.mkdir()
    for path in (tmp_path / "flat").rglob("*.png"):  # ...flattened: no labels
        path.rename(flat / path.name)
    err = _error(capsys, *quiet, "--data", str(flat), "--knn-every-epochs", "1")
    assert "kNN monitoring needs labeled data" in err


def test_train_images_trains_on_a_fixed_subset(tiny, image_folder, tmp_path, capsys):
    args = [*tiny, "--data", str(image_folder), "--epochs", "1", "--batch-size", "8",
            "--warmup-epochs", "0", "--log-every", "1", "--train-images", "24"]  # fmt: skip
    code, out, err = pretrain(capsys, *args, "--output-dir", str(tmp_path / "a"))
    assert code == 0, err
    assert "(a random 24 of its images)" in out
    assert load_training_state(tmp_path / "a" / "checkpoint.pth")["global_step"] == 3  # 24 / 8
    code, _, err = pretrain(capsys, *args, "--output-dir", str(tmp_path / "b"))
    assert code == 0, err
    assert losses(tmp_path / "a") == losses(tmp_path / "b")  # the same images again


def test_train_images_must_be_positive(quiet, capsys):
    assert "--train-images must be at least 1" in _error(capsys, *quiet, "--train-images", "0")


def test_crossmae_learning_rate_is_scaled_by_gamma_over_p_unless_switched_off(
    tiny, image_folder, tmp_path, capsys
):
    args = [*tiny, "--data", str(image_folder), "--epochs", "1", "--warmup-epochs", "0",
            "--batch-size", "8", "--blr", "1e-3", "--log-every", "1",
            "--mask-ratio", "0.75", "--prediction-ratio", "0.25"]  # fmt: skip
    first_lr = {}
    for name, flags in (("scaled", []), ("unscaled", ["--no-scale-lr-by-ratio"])):
        code, _, err = pretrain(capsys, *args, *flags, "--output-dir", str(tmp_path / name))
        assert code == 0, err
        first_record = (tmp_path / name / "log.jsonl").read_text().splitlines()[0]
        first_lr[name] = json.loads(first_record)["lr"]
    assert first_lr["unscaled"] == pytest.approx(1e-3 * 8 / 256)  # blr × batch / 256
    assert first_lr["scaled"] == pytest.approx(first_lr["unscaled"] * 0.25 / 0.75)


def test_folders_where_files_belong_and_files_where_folders_belong(quiet, tmp_path, capsys):
    (tmp_path / "afile").write_text("not a folder")
    err = _error(capsys, *quiet, "--output-dir", str(tmp_path / "afile"))
    assert "--output-dir " + str(tmp_path / "afile") + " is a file, not a folder" in err
    err = _error(capsys, *quiet, "--resume", str(tmp_path))
    assert f"--resume {tmp_path} is a folder; pass a checkpoint in it, or --resume auto" in err


def test_min_lr_above_the_scaled_learning_rate_is_refused(tiny, image_folder, capsys):
    err = _error(capsys, *tiny, "--data", str(image_folder), "--min-lr", "1")
    assert "--min-lr 1 is above the learning rate" in err


def test_runs_started_in_the_same_second_get_folders_of_their_own(monkeypatch, tmp_path):
    from crossmae.train.run_folder import _claim

    monkeypatch.chdir(tmp_path)
    stem = "runs/pretrain-20261201-120000"
    assert [_claim(stem) for _ in range(3)] == [stem, f"{stem}-2", f"{stem}-3"]


def test_a_run_that_fails_to_start_leaves_no_empty_folder(quiet, monkeypatch, tmp_path, capsys):
    (tmp_path / "data" / "train" / "cats").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert "found no images in" in _error(capsys, *quiet, "--data", str(tmp_path / "data"))
    assert not (tmp_path / "runs").exists()
    (tmp_path / "runs" / "earlier").mkdir(parents=True)  # a folder of other runs stays
    assert "found no images in" in _error(capsys, *quiet, "--data", str(tmp_path / "data"))
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["earlier"]


def test_an_interval_without_a_finite_step_logs_no_loss(tiny, image_folder, tmp_path, capsys):
    run_dir = tmp_path / "nan"
    _error(capsys, *tiny, "--data", str(image_folder), "--epochs", "3", "--batch-size", "8",
           "--warmup-epochs", "0", "--lr", "1e30", "--log-every", "2", "--max-nonfinite", "4",
           "--output-dir", str(run_dir))  # fmt: skip
    records = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    skipped = [r for r in records if r["step"] > 2]  # step 1's loss came before any update
    assert skipped and all("loss" not in r and "grad_norm" not in r for r in skipped)


def test_online_knn_refuses_splits_with_other_class_folders(
    tiny, image_folder, write_images, tmp_path, capsys
):
    write_images(image_folder / "val", 4, seed=3)
    for image in (image_folder / "val" / "a").iterdir():  # val holds class b alone
        image.unlink()
    (image_folder / "val" / "a").rmdir()
    err = _error(capsys, *tiny, "--data", str(image_folder), "--knn-every-epochs", "1",
                 "--output-dir", str(tmp_path / "knn"))  # fmt: skip
    assert "needs the same class folders in its train and eval splits" in err


def test_an_output_folder_under_a_file_is_one_sentence(quiet, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    err = _error(capsys, *quiet, "--output-dir", str(tmp_path / "afile" / "sub"))
    assert f"is under the file {tmp_path / 'afile'}, not a folder" in err


def test_a_folder_with_a_run_that_saved_no_checkpoint_is_not_written_over(quiet, tmp_path, capsys):
    (tmp_path / "exp").mkdir()
    recipe = tmp_path / "exp" / "config.yaml"
    recipe.write_text("# my notes\nepochs: 1\n")
    err = _error(capsys, *quiet, "--config", str(recipe), "--output-dir", str(tmp_path / "exp"))
    assert "already holds a run; pass --resume auto" in err
    assert recipe.read_text().startswith("# my notes")


def test_samples_per_epoch_is_refused_for_image_folders(tiny, image_folder, capsys):
    err = _error(capsys, *tiny, "--data", str(image_folder), "--samples-per-epoch", "80")
    assert "--samples-per-epoch is for tar shards" in err


def test_a_run_that_logged_no_step_says_so(tiny, image_folder, tmp_path, capsys):
    code, out, err = pretrain(capsys, *tiny, "--data", str(image_folder), "--epochs", "3",
                              "--batch-size", "8", "--warmup-epochs", "0", "--max-steps", "1",
                              "--output-dir", str(tmp_path / "a"))  # fmt: skip
    assert code == 0, err
    args = [*tiny, "--data", str(image_folder), "--epochs", "3", "--batch-size", "8",
            "--warmup-epochs", "0", "--resume", str(tmp_path / "a" / "checkpoint.pth"),
            "--output-dir", str(tmp_path / "b"), "--max-steps", "4"]  # fmt: skip
    code, out, err = pretrain(capsys, *args)
    assert code == 0, err
    assert "loss    not logged: no step of this run fell on a --log-every 20 step" in out
    assert "nan" not in out and "0 images/s" not in out


def test_resuming_a_finished_run_says_there_is_nothing_left(tiny_run, capsys):
    run_dir, args = tiny_run
    before = (run_dir / "checkpoint.pth").read_bytes()
    code, out, err = pretrain(capsys, *args, "--resume", "auto")
    assert code == 0, err
    latest = run_dir / "checkpoint.pth"
    assert f"resumed {latest} after its last step (8): nothing left to train" in out
    assert "epoch 2" not in out
    assert (run_dir / "checkpoint.pth").read_bytes() == before


def test_the_header_counts_the_steps_that_warm_up(tiny_run, tmp_path, capsys):
    _, args = tiny_run  # 8 steps, one epoch; the later flags win
    code, out, err = pretrain(capsys, *args, "--warmup-epochs", "0.3", "--output-dir",
                              str(tmp_path / "r"))  # fmt: skip
    assert code == 0, err
    assert "8 steps per epoch, 1 epoch\n" in out and "after 3 warmup steps" in out
    records = map(json.loads, (tmp_path / "r" / "log.jsonl").read_text().splitlines())
    lrs = [r["lr"] for r in records if "lr" in r]
    assert lrs[0] < lrs[1] < lrs[2] < lrs[3] == max(lrs)  # 0.3 x 8 = 2.4: 3 steps below peak


def test_a_prediction_ratio_given_to_mae_is_noted_as_not_its_setting(tiny_run, tmp_path, capsys):
    _, args = tiny_run
    mae = [a.replace("crossmae_vit_tiny", "mae_vit_tiny") for a in args]
    code, out, err = pretrain(capsys, *mae, "--prediction-ratio", "0.25", "--max-steps", "1",
                              "--output-dir", str(tmp_path / "mae"))  # fmt: skip
    assert code == 0, err
    assert "--prediction-ratio 0.25 is CrossMAE's: this MAE decodes every masked patch" in out
