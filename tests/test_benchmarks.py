"""The benchmarks' CPU smoke modes run end to end and write tables and JSON that add up."""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import yaml
from PIL import Image

from crossmae.errors import CrossMAEError
from crossmae.train.checkpointing import load_training_state

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
METHODS = ["MAE", "CrossMAE γ=0.25", "CrossMAE γ=0.75"]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # the benchmarks as child processes


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCHMARKS / script), *args], env=ONE_THREAD,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def import_benchmark(name: str) -> ModuleType:
    """A script in benchmarks/ as a module (they are scripts, not a package)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


def jpeg_folder(root: Path, count: int) -> Path:
    rng = np.random.default_rng(0)
    folder = root / "jpegs" / "train" / "noise"
    folder.mkdir(parents=True)
    for i in range(count):
        pixels = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
    return root / "jpegs"


@pytest.mark.slow
def test_cpu_step_names_what_an_authors_checkout_lacks(tmp_path):
    done = run("cpu_step.py", "--steps", "1", "--authors-repo", str(tmp_path))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"--authors-repo needs {tmp_path / 'models_cross.py'}" in done.stderr


def test_throughput_smoke_mode(tmp_path):
    out = tmp_path / "throughput.json"
    data = jpeg_folder(tmp_path, 24)
    done = run("throughput.py", "--smoke", "--data", str(data), "--json", str(out))
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    rows = result["models"]
    assert [r["method"] for r in rows] == METHODS
    for r in rows:
        assert r["images_per_s"] > 0 and r["step_ms"] > 0
        assert r["tflops"] == pytest.approx(3 * r["fwd_gflops_per_image"] * r["images_per_s"] / 1e3)
        assert r["mfu"] == pytest.approx(r["tflops"] / 989.0)
        assert r["speed_vs_mae"] == pytest.approx(r["images_per_s"] / rows[0]["images_per_s"])
        assert r["peak_memory_gib"] is None and r["memory_vs_mae"] is None  # CUDA's alone
    decoder = {r["method"]: r["decoder_gflops_per_image"] for r in rows}
    assert decoder["CrossMAE γ=0.25"] < decoder["CrossMAE γ=0.75"] < decoder["MAE"]
    assert result["data_pipeline"]["images"] == 24
    assert result["data_pipeline"]["images_per_s_per_core"] > 0
    assert result["uint8_normalised_as_on_cpu"] is True  # the CPU against itself: recorded
    line = next(
        x for x in done.stdout.splitlines() if x.startswith("| tiny | CrossMAE γ=0.25 | no |")
    )
    assert line.endswith("| — | — |")  # no peak memory measured on the CPU


def test_throughput_refuses_a_wrong_data_path_before_measuring(tmp_path):
    done = run("throughput.py", "--smoke", "--data", str(tmp_path / "missing"))
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        f"throughput.py: error: data path {tmp_path / 'missing'} does not exist"
    )
    assert done.stdout == ""  # nothing was measured


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--warmup", "0"], "--warmup must be at least 1"),  # the compile would be timed
        (["--sizes", "giant"], "argument --sizes: invalid choice: 'giant'"),
    ],
)
def test_throughput_refuses_impossible_settings(argv, message):
    done = run("throughput.py", *argv)
    assert done.returncode == 2 and message in done.stderr.splitlines()[-1]
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_throughput_rows_relative_to_mae_and_rows_that_failed():
    throughput = import_benchmark("throughput")

    def row(method: str, images_per_s: float, memory: float, compiled: bool = False) -> dict:
        return {"size": "base", "method": method, "compiled": compiled,
                "images_per_s": images_per_s, "step_ms": 1e3 * 256 / images_per_s,
                "fwd_gflops_per_image": 30.0, "decoder_gflops_per_image": 4.0,
                "tflops": 50.0, "mfu": 0.05, "peak_memory_gib": memory}  # fmt: skip

    failed = {"size": "base", "method": "MAE", "compiled": True, "fwd_gflops_per_image": 30.0,
              "decoder_gflops_per_image": 10.0,
              "error": "out of GPU memory at batch 256; try a smaller batch size"}  # fmt: skip
    rows = throughput.relative_to_mae([
        row("MAE", 1000.0, 40.0), row("CrossMAE γ=0.25", 1500.0, 22.0), failed,
        row("CrossMAE γ=0.25", 1700.0, 20.0, compiled=True),
    ])  # fmt: skip
    assert (rows[1]["speed_vs_mae"], rows[1]["memory_vs_mae"]) == (1.5, 0.55)
    assert "speed_vs_mae" not in rows[3]  # no MAE row to compare with when compiled
    lines = throughput.markdown(rows).splitlines()
    assert len({line.count("|") for line in lines}) == 1  # every row has every column
    assert "| 1500 | 1.50× |" in lines[3] and lines[3].endswith("| 22.00 | 0.55× |")
    assert "| out of GPU memory at batch 256; try a smaller batch size |" in lines[4]
    assert "| 1700 | — |" in lines[5]


def test_throughput_measures_every_eager_row_before_any_compiled_one_and_data_first(
    tmp_path, monkeypatch
):
    """Compiling takes a minute or more a row: a cut sweep keeps every eager row, and the
    seconds-long JPEG row is saved before any model row."""
    throughput = import_benchmark("throughput")
    order = []

    def measure(config, *args, compile, **kwargs):
        assert json.loads((tmp_path / "t.json").read_text())["data_pipeline"]["images"] == 3
        order.append((config.embed_dim, compile))
        raise CrossMAEError("out of GPU memory")  # the row records it, the sweep goes on

    monkeypatch.setattr(throughput, "measure_step", measure)
    monkeypatch.setattr(throughput.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(throughput.torch.cuda, "get_device_name", lambda: "a test GPU")
    monkeypatch.setattr(throughput, "uint8_normalised_as_on_cpu", lambda device: True)
    argv = ["--device", "cuda", "--sizes", "small", "base", "--data", str(jpeg_folder(tmp_path, 3)),
            "--data-images", "3", "--json", str(tmp_path / "t.json")]  # fmt: skip
    throughput.main(argv)
    eager = [(384, False)] * 3 + [(768, False)] * 3
    assert order == eager + [(384, True)] * 3 + [(768, True)] * 3
    order.clear()
    throughput.main([*argv, "--no-compile"])  # what a session with a broken compiler asks
    assert order == eager


def test_representation_pretrains_then_probes_every_method_before_any_fine_tune(
    tmp_path, monkeypatch
):
    """A phase cut during the evaluations still compares the methods as far as it went:
    every pretraining, then every kNN and probe, then the fine-tunes; the report, rewritten
    after each step, lists each method with what it has so far."""
    representation = import_benchmark("representation")
    calls = []

    def report() -> str:
        return (tmp_path / "rep" / "representation.md").read_text()

    def pretrain(method, args, seed, out):
        calls.append(("pretrain", method.key))
        out.mkdir(parents=True, exist_ok=True)
        return {"pretrain_seconds": 60.0, "after_first_step_seconds": 30.0,
                "images_per_s": 900.0, "peak_memory_gib": 1.0,
                "kept_epochs": [{"epoch": 1, "seconds": 60.0}]}  # fmt: skip

    def probe(checkpoint, args, seed, out):
        calls.append(("probe", out.parent.name))
        if out.parent.name.startswith("crossmae"):
            assert "| MAE | 0 | 10.00 | 20.00 | — | 1.0 | 0.5 | 900 |" in report()
            assert "| CrossMAE γ=0.25 | 0 | — | — | — | 1.0 | 0.5 | 900 |" in report()
        return {"knn_top1": 10.0, "linprobe_top1": 20.0}

    def finetune(checkpoint, args, seed, out):
        calls.append(("finetune", out.parent.name))
        if out.parent.name.startswith("crossmae"):
            assert "| MAE | 0 | 10.00 | 20.00 | 30.00 | 1.0 |" in report()
            assert "| CrossMAE γ=0.25 | 0 | 10.00 | 20.00 | — | 1.0 |" in report()
            raise CrossMAEError("cut")
        return {"finetune_top1": 30.0, "finetune_seconds": 5.0}

    monkeypatch.setattr(representation, "pretrain_method", pretrain)
    monkeypatch.setattr(representation, "probe_scores", probe)
    monkeypatch.setattr(representation, "finetune_scores", finetune)
    code = representation.main(["--methods", "mae", "crossmae-0.25", "--epochs", "1",
                                "--curve-points", "1", "--device", "cpu",
                                "--output-dir", str(tmp_path / "rep")])  # fmt: skip
    assert code == 2
    assert calls == [(stage, name) for stage, names in (
        ("pretrain", ["mae", "crossmae-0.25"]),
        ("probe", ["mae-seed0", "crossmae-0.25-seed0"]),
        ("finetune", ["mae-seed0", "crossmae-0.25-seed0"]),
    ) for name in names]  # fmt: skip


@pytest.mark.slow
def test_representation_smoke_mode_then_rerun_keeps_results(tmp_path):
    out = tmp_path / "rep"
    done = run("representation.py", "--smoke", "--output-dir", str(out))
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "representation.json").read_text())
    results = report["results"]
    assert [r["method"] for r in results] == METHODS
    assert report["epochs"] == 1 and report["command"].endswith(f"--smoke --output-dir {out}")
    for r in results:
        run_dir = out / f"{r['key']}-seed0"
        tuned = json.loads((run_dir / "epoch1" / "finetune" / "results.json").read_text())
        probe = json.loads((run_dir / "epoch1" / "linprobe" / "results.json").read_text())
        knn = json.loads((run_dir / "epoch1" / "knn" / "knn.json").read_text())
        assert (r["finetune_top1"], r["linprobe_top1"], r["knn_top1"]) == (
            tuned["top1"], probe["top1"], knn["top1"])  # fmt: skip
        assert tuned["train_images"] == 256 and knn["eval_images"] == 128
        assert tuned["effective_batch"] == 256  # the fine-tune recipe's
        point = {"epoch": 1, "seconds": r["curve"][0]["seconds"], "knn_top1": knn["top1"],
                 "linprobe_top1": probe["top1"]}  # fmt: skip
        assert r["curve"] == [point]
        assert 0 < r["curve"][0]["seconds"] <= r["pretrain_seconds"]
        # both rounded to 0.1 s: a first step under 0.05 s makes them equal
        assert 0 < r["after_first_step_seconds"] <= r["pretrain_seconds"]
        assert r["images_per_s"] > 0 and r["peak_memory_gib"] > 0
        assert (run_dir / "pretrain" / "checkpoint.pth").is_file()
    decoder = [r["decoder_gflops_per_image"] for r in results]
    assert decoder[1] < decoder[2] < decoder[0]  # γ = 0.25 < γ = 0.75 < MAE
    table = (out / "representation.md").read_text()
    assert table.count("| CrossMAE γ=0.25 | 0 |") == 2  # the summary and the curve
    with Image.open(out / "representation.png") as figure:
        assert figure.size == (800, 560)

    again = run("representation.py", "--smoke", "--output-dir", str(out), "--methods", "mae")
    assert again.returncode == 0, again.stderr
    assert "MAE, seed 0: already in" in again.stdout
    assert json.loads((out / "representation.json").read_text())["results"] == results

    # A fine-tune cut short (probed, no result yet) fine-tunes again on the same pretraining,
    # here with a smaller batch; then one cut before its probe probes again too.
    mae_dir = out / "mae-seed0"
    checkpoint_written = (mae_dir / "pretrain" / "checkpoint.pth").stat().st_mtime_ns
    (mae_dir / "result.json").unlink()
    resumed = run("representation.py", "--smoke", "--output-dir", str(out), "--methods", "mae",
                  "--finetune-batch-size", "64")  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "MAE, seed 0: fine-tuning" in resumed.stdout and "probing" not in resumed.stdout
    (mae_dir / "result.json").unlink()
    (mae_dir / "probed.json").unlink()
    resumed = run("representation.py", "--smoke", "--output-dir", str(out), "--methods", "mae",
                  "--finetune-batch-size", "64")  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert f"MAE, seed 0: pretrained in {mae_dir}, probing" in resumed.stdout
    assert (mae_dir / "pretrain" / "checkpoint.pth").stat().st_mtime_ns == checkpoint_written
    redone = json.loads((mae_dir / "result.json").read_text())
    for key in ("pretrain_seconds", "images_per_s", "peak_memory_gib"):
        assert redone[key] == results[0][key]
    assert [p["epoch"] for p in redone["curve"]] == [1]
    retuned = json.loads((mae_dir / "epoch1" / "finetune" / "results.json").read_text())
    assert retuned["effective_batch"] == 64


def test_seed_means_appear_only_with_several_seeds():
    seed_mean_markdown = import_benchmark("representation").seed_mean_markdown

    def result(method: str, seed: int, knn: float) -> dict:
        return {"method": method, "seed": seed, "knn_top1": knn, "linprobe_top1": 40.0 + seed,
                "finetune_top1": 50.0, "pretrain_seconds": 120.0 * (seed + 1)}  # fmt: skip

    assert seed_mean_markdown([result("MAE", 0, 30.0), result("CrossMAE", 0, 31.0)]) == ""
    table = seed_mean_markdown([result("MAE", 0, 30.0), result("MAE", 1, 34.0),
                                result("CrossMAE", 0, 31.0)])  # fmt: skip
    assert table.splitlines()[2:] == [
        "| MAE | 2 | 32.0 ± 2.8 | 40.5 ± 0.7 | 50.0 ± 0.0 | 3.0 ± 1.4 |",
        "| CrossMAE | 1 | 31.0 ± 0.0 | 40.0 ± 0.0 | 50.0 ± 0.0 | 2.0 ± 0.0 |",
    ]


def test_curve_figure_draws_each_run_against_pretraining_minutes():
    representation = import_benchmark("representation")
    curve = [{"epoch": 4, "seconds": 150.0, "knn_top1": 30.0, "linprobe_top1": 41.0},
             {"epoch": 8, "seconds": 300.0, "knn_top1": 33.0, "linprobe_top1": 44.0}]  # fmt: skip
    runs = [{"key": "mae", "method": "MAE", "seed": 0, "curve": curve},
            {"key": "crossmae-0.25", "method": "CrossMAE γ=0.25", "seed": 1,
             "curve": curve[1:]}]  # fmt: skip
    fig = representation.curve_figure(runs, "title")
    knn, probe = fig.axes
    assert [list(line.get_xdata()) for line in knn.lines] == [[2.5, 5.0], [5.0]]
    assert [list(line.get_ydata()) for line in probe.lines] == [[41.0, 44.0], [44.0]]
    assert knn.lines[0].get_color() != knn.lines[1].get_color()
    labels = [t.get_text() for t in knn.get_legend().get_texts()]
    assert labels == ["MAE, seed 0", "CrossMAE γ=0.25, seed 1"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--smoke", "--curve-points", "0"], "--curve-points must be at least 1"),
        (["--finetune-batch-size", "0"], "--finetune-batch-size must be at least 1"),
        (["--methods", "byol"], "argument --methods: invalid choice: 'byol'"),
    ],
)
def test_representation_refuses_impossible_settings(argv, message, capsys):
    parse_args = import_benchmark("representation").parse_args
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err.splitlines()[-1]


def test_representation_smoke_defaults_and_explicit_epochs():
    parse_args = import_benchmark("representation").parse_args
    smoke = parse_args(["--smoke"])
    assert (smoke.epochs, smoke.curve_points, smoke.device) == (1, 1, "cpu")
    longer = parse_args(["--smoke", "--epochs", "2", "--curve-points", "2"])
    assert (longer.epochs, longer.curve_points) == (2, 2)
    assert (parse_args([]).epochs, parse_args([]).curve_points) == (100, 4)
    assert parse_args(["--device", "cuda"]).compile is True
    assert parse_args(["--device", "cuda", "--no-compile"]).compile is False  # gpu_session's


def written_pretrain_settings(rep, key: str, tmp_path) -> dict:
    """The recipe the benchmark hands `crossmae pretrain` for a method (the run itself fails)."""
    args = rep.parse_args(["--smoke", "--output-dir", str(tmp_path)])
    with pytest.raises(CrossMAEError, match=rf"pretraining {re.escape(rep.METHODS[key].label)} "):
        rep.pretrain_method(rep.METHODS[key], args, 0, tmp_path / key)
    settings = yaml.safe_load((tmp_path / key / "pretrain.yaml").read_text())
    del settings["output_dir"]
    return settings


def test_the_learning_rate_variants_differ_from_their_method_only_in_the_rate(
    tmp_path, monkeypatch
):
    rep = import_benchmark("representation")
    monkeypatch.setattr(subprocess, "run", lambda command: subprocess.CompletedProcess(command, 1))
    keys = (
        "crossmae-0.25",
        "crossmae-0.25-mae-lr",
        "crossmae-0.25-2x-mae-lr",
        "crossmae-0.25-4x-mae-lr",
    )
    variants = [written_pretrain_settings(rep, key, tmp_path) for key in keys]
    paper, mae_lr, twice, four = variants
    assert [s.pop("scale_lr_by_ratio") for s in variants] == [True, False, False, False]
    blr = paper.pop("blr")
    assert [s.pop("blr") for s in (mae_lr, twice, four)] == [blr, 2 * blr, 4 * blr]
    assert paper == mae_lr == twice == four
    mae, mae_twice = (written_pretrain_settings(rep, k, tmp_path) for k in ("mae", "mae-2x-lr"))
    assert mae_twice.pop("blr") == 2 * mae.pop("blr") and mae == mae_twice


@pytest.mark.parametrize("split", ["train", "test"])
def test_representation_refuses_a_wrong_data_path_before_pretraining(tmp_path, split):
    data = tmp_path / "cifar"
    (data / split / "cat").mkdir(parents=True)  # one split, and no images in it
    out = tmp_path / "out"
    done = run("representation.py", "--smoke", "--data", str(data), "--output-dir", str(out))
    assert done.returncode == 2
    message = done.stderr.splitlines()[-1]
    if split == "test":  # the train split is missing first
        assert (
            message == f"representation.py: error: split 'train' not found in {data} (it has test)"
        )
    else:
        assert message.startswith("representation.py: error: found no images in")
    missing = run("representation.py", "--smoke", "--data", str(tmp_path / "none"),
                  "--output-dir", str(out))  # fmt: skip
    assert missing.stderr.splitlines()[-1] == (
        f"representation.py: error: data path {tmp_path / 'none'} does not exist"
    )
    assert not out.exists() and done.stdout == missing.stdout == ""  # nothing was run


@pytest.mark.slow
def test_representation_resumes_a_pretraining_cut_short(tmp_path):
    """Killed (parent and child) after epoch 1 of 2; the same command finishes the run."""
    out = tmp_path / "rep"
    argv = ["--smoke", "--methods", "mae", "--epochs", "2", "--curve-points", "2",
            "--train-images", "512", "--output-dir", str(out)]  # fmt: skip
    command = [sys.executable, str(BENCHMARKS / "representation.py"), *argv]
    process = subprocess.Popen(
        command, env=ONE_THREAD, stdout=subprocess.DEVNULL, start_new_session=True
    )
    pretrain_dir = out / "mae-seed0" / "pretrain"
    deadline = time.monotonic() + 300
    while not (pretrain_dir / "checkpoint.pth").exists():
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGSTOP)  # freeze both while we look, then kill -9
    cut = load_training_state(pretrain_dir / "checkpoint.pth")
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert (cut["epoch"], cut["step_in_epoch"]) == (1, 0) and cut["train_seconds"] > 0

    done = run("representation.py", *argv)
    assert done.returncode == 0, done.stderr
    assert f"MAE, seed 0: resuming the pretraining in {out / 'mae-seed0'}" in done.stdout
    assert "resumed" in done.stdout  # the child said where it picked up
    final = load_training_state(pretrain_dir / "checkpoint.pth")
    assert final["epoch"] == 2 and final["train_seconds"] > cut["train_seconds"]
    (result,) = json.loads((out / "representation.json").read_text())["results"]
    assert result["pretrain_seconds"] == round(final["train_seconds"], 1)  # across the cut
    first, second = result["curve"]
    assert (first["epoch"], second["epoch"]) == (1, 2)
    cut_seconds = round(cut["train_seconds"], 1)  # the curve keeps tenths of a second
    assert 0 < first["seconds"] <= cut_seconds < second["seconds"]
    assert second["seconds"] <= result["pretrain_seconds"]
