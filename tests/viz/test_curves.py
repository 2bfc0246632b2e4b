import json
import math
import random

import numpy as np
import pytest
from PIL import Image

from crossmae.cli import main
from crossmae.viz.curves import CURVE_SIZE, running_mean, step_series


def _write_log(path, steps=120, with_lr=True):
    rng = random.Random()
    with open(path, "w") as f:
        for s in range(0, steps * 10, 10):
            record = {"step": s, "epoch": s // 100, "loss": 1 / (1 + s / 300) + rng.random() / 20}
            if with_lr:
                record["lr"] = 1e-3 * math.cos(s / steps / 10)
            f.write(json.dumps(record) + "\n")
        f.write(json.dumps({"step": steps * 10, "epoch": 9, "epoch_time": 3.0}) + "\n")
        f.write('{"step": 5, "lo')  # torn last line of a killed run


@pytest.mark.parametrize("with_lr", [True, False])
def test_plot_writes_the_curves_png(tmp_path, capsys, with_lr):
    _write_log(tmp_path / "log.jsonl", with_lr=with_lr)
    assert main(["plot", str(tmp_path)]) == 0
    assert "loss.png" in capsys.readouterr().out
    with Image.open(tmp_path / "loss.png") as img:
        assert img.format == "PNG" and img.size == CURVE_SIZE


def test_plot_to_a_chosen_file(tmp_path):
    _write_log(tmp_path / "log.jsonl", steps=10)
    assert main(["plot", str(tmp_path / "log.jsonl"), "--output", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_resumed_steps_replace_earlier_ones():
    records = [
        {"step": 0, "loss": 3.0},
        {"step": 10, "loss": 2.0},
        {"step": 10, "loss": 1.5},
        {"epoch": 1, "loss_mean": 2.0},
        {"step": 20, "loss": "nan?"},
    ]
    steps, loss = step_series(records, "loss")
    assert steps.tolist() == [0, 10] and loss.tolist() == [3.0, 1.5]


def test_a_fine_tuning_log_plots_its_train_loss(tmp_path):
    """`crossmae finetune` and `linprobe` log {"train_loss", "lr", "step"} records."""
    rng = np.random.default_rng()
    lines = [json.dumps({"train_loss": float(2 - i / 30 + rng.random() / 5), "lr": 1e-3,
                         "step": i}) for i in range(60)]  # fmt: skip
    (tmp_path / "log.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["plot", str(tmp_path)]) == 0
    with Image.open(tmp_path / "loss.png") as img:
        assert img.size == CURVE_SIZE


def test_running_mean_is_centred():
    values = np.random.default_rng().random(9)
    smooth = running_mean(values, 3)
    assert smooth[4] == pytest.approx(values[3:6].mean())
    assert smooth[0] == pytest.approx(values[:2].mean())


@pytest.mark.parametrize("content", [None, "", '{"step": 1, "epoch": 0}\n'])
def test_missing_or_empty_logs_exit_2(tmp_path, capsys, content):
    if content is not None:
        (tmp_path / "log.jsonl").write_text(content)
    assert main(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "log.jsonl" in err or "no records" in err


def test_a_file_that_is_not_a_log_is_one_sentence_and_non_records_are_ignored(tmp_path, capsys):
    (tmp_path / "checkpoint.pth").write_bytes(bytes(range(256)) * 4)
    assert main(["plot", str(tmp_path / "checkpoint.pth")]) == 2
    assert "checkpoint.pth is not a log.jsonl (it is not text)" in capsys.readouterr().err
    _write_log(tmp_path / "log.jsonl", steps=10)
    with open(tmp_path / "log.jsonl", "a") as f:
        f.write("\n[1, 2]\n3\n")  # JSON, but not records
    assert main(["plot", str(tmp_path)]) == 0
