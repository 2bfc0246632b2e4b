"""The run logger: JSON lines, TensorBoard, a bar on terminals, plain lines elsewhere."""

import json
import subprocess
import sys

import pytest

from crossmae.train.logging import RunLogger, read_log


def test_plain_lines_and_json_records(tmp_path, capsys):
    logger = RunLogger(tmp_path, total_steps=10, tensorboard=False, progress_bar=False)
    logger.log({"loss": 0.5, "lr": 1e-3}, step=4, line="step 4 loss 0.5000")
    logger.message("hello")
    logger.close()
    out = capsys.readouterr().out
    assert out.splitlines() == ["step 4 loss 0.5000", "hello"]
    (record,) = read_log(tmp_path / "log.jsonl")
    assert record["loss"] == 0.5 and record["step"] == 4 and "time" in record


def test_progress_bar_on_a_terminal(tmp_path, capsys):
    logger = RunLogger(tmp_path, total_steps=10, tensorboard=False, progress_bar=True)
    logger.log({"loss": 0.5}, step=4, line="loss 0.5000")
    logger.close()
    captured = capsys.readouterr()
    assert captured.out == ""  # the bar replaces the plain lines
    assert "4/10" in captured.err and "loss 0.5000" in captured.err


def test_other_ranks_write_nothing(tmp_path, capsys):
    logger = RunLogger(tmp_path / "run", enabled=False, progress_bar=False)
    logger.log({"loss": 1.0}, step=1, line="x")
    logger.message("y")
    logger.close()
    assert not (tmp_path / "run").exists() and capsys.readouterr().out == ""


def test_tensorboard_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = RunLogger(tmp_path, progress_bar=False)
    for step in (1, 2, 3):
        logger.log({"loss": 1.0 / step, "note": "text is not a scalar"}, step=step)
    logger.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert events.Tags()["scalars"] == ["loss"]
    assert [e.value for e in events.Scalars("loss")] == pytest.approx([1.0, 0.5, 1 / 3])


def test_a_torn_last_line_is_ignored(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps({"loss": 1.0, "step": 1}) + "\n" + '{"loss": 0.')
    assert read_log(path) == [{"loss": 1.0, "step": 1}]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_peak_host_memory_is_this_process_own():
    """A fresh process reports its own peak, which rises with an allocation it touches."""
    code = ("from crossmae.train.logging import peak_host_memory_gib as peak; "
            "before = peak(); block = bytearray(300 * 2**20); print(before, peak())")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = map(float, out.stdout.split())
    assert 0.01 < before < after and after - before > 0.25
