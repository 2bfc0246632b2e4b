"""Where a pretraining run lives: the checkpoint (and settings) a run continues from, the
checks that it can continue it and will not write over another run, and fresh
runs/pretrain-<time> folders."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from crossmae.errors import CrossMAEError
from crossmae.train import checkpointing as ckpt
from crossmae.train.config import PretrainConfig, with_demo
from crossmae.train.distributed import DistInfo, broadcast_object
from crossmae.train.options import build_dataclass

CONFIG_YAML = "config.yaml"  # written when a run starts, before its first checkpoint
# Settings about one invocation, not the run: a resumed run does not inherit them.
PER_INVOCATION = ("resume", "max_steps")


def resume_point(
    layers: tuple[dict[str, Any], ...], source: str
) -> tuple[PretrainConfig, dict[str, Any] | None, Path | None]:
    """The validated settings and the checkpoint to continue from, if any.

    When resuming, the checkpoint's own settings lie under the ones given now and are read
    before anything is checked or set up: its epochs and device, not the demo's. Every
    process reads the same files, before any of them joins the group.
    """
    given = build_dataclass(PretrainConfig, *with_demo(*layers), source=source)
    path = _checkpoint_to_resume(given)
    if path is None:
        return given.validate(), None, None
    state = ckpt.load_training_state(path)
    saved = {k: v for k, v in state["config"].items() if k not in PER_INVOCATION}
    cfg = build_dataclass(PretrainConfig, saved, *layers, source=source)
    cfg.output_dir = given.output_dir or str(path.parent)
    if given.resume != "auto":  # auto took the furthest checkpoint there already
        _refuse_writing_over_further(Path(cfg.output_dir), path, state["global_step"])
    return cfg.validate(), state, path


def check_resumable(
    state: dict[str, Any],
    path: Path | None,
    *,
    model_config: dict[str, Any],
    effective_batch: int,
    readers: int | None,
    steps_per_epoch: int,
    data: str,
    epochs: float,
) -> None:
    """Refuse a checkpoint this run cannot continue: another model, a run already past
    `epochs`, or a mid-epoch position that another batch, dealing of tar shards (`readers`,
    None for folders) or data set would put somewhere else in the epoch."""
    saved = state.get("model_config", {})
    for key in model_config:
        if saved.get(key) != model_config[key]:
            raise CrossMAEError(
                f"checkpoint {path} is a different model ({key} is {saved.get(key)!r} "
                f"there and {model_config[key]!r} here); resume with the settings it was "
                "trained with, or start a new --output-dir"
            )
    if state["step_in_epoch"] and state.get("effective_batch") != effective_batch:
        raise CrossMAEError(
            f"checkpoint {path} stopped mid-epoch with an effective batch of "
            f"{state.get('effective_batch')}; resume it with the same batch size, "
            "accumulation and process count"
        )
    dealt = state.get("data_readers")
    if state["step_in_epoch"] and dealt not in (None, readers):
        raise CrossMAEError(
            f"checkpoint {path} stopped mid-epoch with its tar shards dealt to {dealt} "
            "readers (processes x loader workers); resume it with the same --num-workers "
            "and process count, or from an epoch's end"
        )
    if state["step_in_epoch"] > steps_per_epoch:
        raise CrossMAEError(
            f"checkpoint {path} stopped at step {state['step_in_epoch']} of an epoch, but an "
            f"epoch of {data} has {steps_per_epoch} steps; resume it on the data it was "
            "trained on (the same --data and --train-images)"
        )
    done = state["epoch"] + state["step_in_epoch"] / steps_per_epoch
    if done > epochs:
        raise CrossMAEError(
            f"checkpoint {path} is {done:.3g} epochs in (step {state['global_step']}), "
            f"already past --epochs {epochs}; resume with more epochs"
        )


def _refuse_writing_over_further(folder: Path, path: Path, step: int) -> None:
    """Continuing from `path` in `folder` would replace a checkpoint further along there."""
    further = ckpt.latest_checkpoint(folder) if folder.is_dir() else None
    if further is None:
        return
    further_step = ckpt.global_step_of(further)
    if further_step > step:
        raise CrossMAEError(
            f"{further} is further along (step {further_step}) than {path} (step {step}), and "
            f"continuing from it in {folder} would write over it; pass a new --output-dir to "
            "branch off"
        )


def _checkpoint_to_resume(cfg: PretrainConfig) -> Path | None:
    if cfg.resume not in (None, "auto"):
        found = Path(cfg.resume).expanduser()
        if found.is_dir():
            raise CrossMAEError(
                f"--resume {found} is a folder; pass a checkpoint in it, or "
                f"--resume auto --output-dir {found}"
            )
        if not found.is_file():
            raise CrossMAEError(f"checkpoint {found} does not exist")
        return found
    if cfg.output_dir is None:
        if cfg.resume == "auto":
            raise CrossMAEError("--resume auto needs the --output-dir of the run to continue")
        return None
    if not Path(cfg.output_dir).is_dir():
        return None  # validate() refuses a file there
    latest = ckpt.latest_checkpoint(cfg.output_dir)
    started = latest is not None or (Path(cfg.output_dir) / CONFIG_YAML).exists()
    if started and cfg.resume is None:  # a run that saved no checkpoint yet has a config.yaml
        raise CrossMAEError(
            f"{cfg.output_dir} already holds a run; pass --resume auto to continue it, "
            "or choose another --output-dir"
        )
    return latest


def new_run_folder(dist: DistInfo) -> str:
    """runs/pretrain-<time>, made by rank 0 so that no other run can take it too (runs started
    in the same second, as a job array's, get -2, -3, ...)."""
    named: tuple[str, str | None] = ("", None)
    if dist.is_main:
        stem = f"runs/pretrain-{datetime.now():%Y%m%d-%H%M%S}"
        try:
            named = (_claim(stem), None)
        except OSError as err:
            named = ("", f"cannot make a run folder {stem}: {err.strerror or err}")
    folder, error = broadcast_object(named)
    if error:
        raise CrossMAEError(error)
    return folder


def _claim(stem: str) -> str:
    folder, n = stem, 1
    while True:
        try:
            Path(folder).mkdir(parents=True)
            return folder
        except FileExistsError:
            n += 1
            folder = f"{stem}-{n}"
