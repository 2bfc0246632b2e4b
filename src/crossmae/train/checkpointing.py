"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A training checkpoint is also a model checkpoint (`crossmae.load_model` reads it): it is
`model_checkpoint(model)` plus the optimizer, the loss scaler, the position in the
schedule, the run's config and every random-number state. Files are written atomically
(temporary file, fsync, rename), so a process killed while saving leaves the previous
checkpoint intact (and a failed write, e.g. a full disk, stops the run with a clear error),
and read with `weights_only=True`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossmae.errors import CrossMAEError
from crossmae.models.autoencoder import MaskedAutoencoder
from crossmae.models.checkpoint import model_checkpoint
from crossmae.serialization import atomic_link_or_copy, atomic_torch_save, safe_torch_load

LATEST = "checkpoint.pth"
CHECKPOINT_GLOB = "checkpoint*.pth"
TRAINING_KEYS = ("optimizer", "epoch", "step_in_epoch", "global_step", "rng")


def epoch_checkpoint_name(epoch: int) -> str:
    """The name of the copy kept after `epoch` epochs (1-based), next to the latest one."""
    return f"checkpoint-epoch{epoch:04d}.pth"


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and torch's global generators from one seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Python, NumPy, torch CPU/CUDA and named generator states, as plain tensors and lists
    (so they load under `weights_only=True`)."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    return state


def restore_rng(state: Mapping[str, Any], generators: Mapping[str, torch.Generator]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state({
        "bit_generator": "MT19937",
        "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
        "has_gauss": np_state["has_gauss"],
        "gauss": np_state["gauss"],
    })  # fmt: skip
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])
    for name, gen in generators.items():
        if name in state["generators"]:
            gen.set_state(state["generators"][name])


def save_training_state(
    path: str | Path, model: MaskedAutoencoder, optimizer_state: dict[str, Any], **fields: Any
) -> None:
    """`write_training_state(training_state(...), path)`, in one call."""
    write_training_state(training_state(model, optimizer_state, **fields), path)


def training_state(
    model: MaskedAutoencoder,
    optimizer_state: dict[str, Any],
    *,
    epoch: int,
    step_in_epoch: int,
    global_step: int,
    config: dict[str, Any],
    scaler_state: dict[str, Any] | None = None,
    generators: Mapping[str, torch.Generator] | None = None,
    model_state: dict[str, torch.Tensor] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """What a resumable checkpoint holds (its tensors are the live ones until copied).

    `epoch` is the epoch in progress (0-based) and `step_in_epoch` the optimizer steps done
    in it; an epoch boundary is (epoch + 1, 0). `model_state` replaces `model.state_dict()`
    when the caller had to gather it (sharded training).
    """
    state = model_checkpoint(
        model,
        optimizer=optimizer_state,
        scaler=scaler_state,
        epoch=epoch,
        step_in_epoch=step_in_epoch,
        global_step=global_step,
        config=config,
        rng=capture_rng(generators),
        **extra,
    )
    if model_state is not None:
        state["model"] = model_state
    return state


def write_training_state(
    state: dict[str, Any], path: str | Path, *, also_as: str | Path | None = None
) -> None:
    """Write `state` atomically to `path`, then give it the second name `also_as` (the
    latest, when `path` is a kept copy); an unwritable file is one sentence."""
    try:
        atomic_torch_save(state, path)
    except OSError as err:  # a full disk, a lost mount: the atomic write left the old file
        raise CrossMAEError(_unwritten(Path(path), err)) from None
    if also_as is not None:
        copy_training_state(path, also_as)


def copy_training_state(source: str | Path, path: str | Path) -> None:
    """Make `path` (the latest) hold the kept copy `source` without serializing the state a
    second time, as atomically and with the same errors as a save."""
    try:
        atomic_link_or_copy(source, path)
    except OSError as err:
        raise CrossMAEError(_unwritten(Path(path), err)) from None


def _unwritten(path: Path, err: OSError) -> str:
    """Why the run stops, and what is still there to resume from."""
    kept = readable_latest(path.parent)
    return f"could not write checkpoint {path}: {err.strerror or err}; " + (
        f"the previous checkpoint {kept} is intact" if kept else "no checkpoint was saved yet"
    )


def optimizer_state_by_name(
    saved: dict[str, Any], optimizer: torch.optim.Optimizer, module: torch.nn.Module
) -> dict[str, Any]:
    """`saved` keyed by parameter names, as FSDP's `set_optimizer_state_dict` wants it.

    A run without FSDP saves `optimizer.state_dict()`, keyed by each parameter's position in
    the groups; the groups are built the same way with and without FSDP, so position i of
    group g is the same parameter here. A state already keyed by name passes unchanged.
    """
    groups = saved["param_groups"]
    if all(isinstance(i, str) for group in groups for i in group["params"]):
        return saved
    names = {id(p): name for name, p in module.named_parameters()}
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in optimizer.param_groups]:
        raise CrossMAEError("the checkpoint's optimizer holds other parameters than this model")
    by_position = {
        i: names[id(p)]
        for saved_group, group in zip(groups, optimizer.param_groups, strict=True)
        for i, p in zip(saved_group["params"], group["params"], strict=True)
    }
    return {
        "state": {by_position[i]: value for i, value in saved["state"].items()},
        "param_groups": [{**g, "params": [by_position[i] for i in g["params"]]} for g in groups],
    }


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The checkpoint in `output_dir` furthest into training (on a tie the latest, which a
    kept copy is a hard link to), or None. Progress is read from the files: their times do
    not survive a copy or a download, and a run killed between writing a kept copy and
    linking the latest to it has a kept copy ahead of the latest."""
    steps: dict[Path, int] = {}
    unreadable: list[tuple[Path, CrossMAEError]] = []
    for path in Path(output_dir).glob(CHECKPOINT_GLOB):
        if path.is_file():
            try:
                steps[path] = global_step_of(path)
            except CrossMAEError as err:
                unreadable.append((path, err))
    newest = max(steps, key=lambda p: (steps[p], p.name == LATEST)) if steps else None
    if unreadable:  # it may be the furthest along: refuse rather than go back silently
        path, err = min(unreadable)
        raise CrossMAEError(
            f"{err}; move it out of {path.parent} to resume from the others there (the "
            f"furthest along: {newest.name}, step {steps[newest]})"
            if newest
            else f"{err}, and no other checkpoint is there: move it out of {path.parent} and "
            "--resume auto starts a new run"
        )
    return newest


def readable_latest(output_dir: str | Path) -> Path | None:
    """`latest_checkpoint` for an error message: None, not a second error, when a file there
    cannot be read."""
    try:
        return latest_checkpoint(output_dir)
    except CrossMAEError:
        return None


def global_step_of(path: str | Path) -> int:
    """The optimizer steps a training checkpoint was saved after (its tensors not read)."""
    state = safe_torch_load(path, mmap=True)
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        raise CrossMAEError(f"{path} is not a crossmae training checkpoint")
    return state["global_step"]


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by `save_training_state` (never running code from it)."""
    ckpt = safe_torch_load(path)
    missing = [k for k in TRAINING_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CrossMAEError(
            f"{path} is not a crossmae training checkpoint (it has no {missing[0]!r}); "
            "only checkpoints written by `crossmae pretrain` can be resumed"
        )
    return ckpt
