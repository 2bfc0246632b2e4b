"""Training checkpoints: complete, atomic, loadable with weights_only, RNG states restored."""

import errno
import os
import random
import re
import shutil

import numpy as np
import pytest
import torch

import crossmae
from crossmae.errors import CrossMAEError
from crossmae.train import checkpointing as ckpt


def _trained_pair():
    model = crossmae.create_model("crossmae_vit_tiny_patch4_32", depth=2, decoder_depth=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    model(torch.randn(4, 3, 32, 32)).loss.backward()
    optimizer.step()
    return model, optimizer


def test_round_trip_restores_everything(tmp_path):
    model, optimizer = _trained_pair()
    gen = torch.Generator().manual_seed(3)
    path = tmp_path / ckpt.LATEST
    random.seed(1), np.random.seed(2), torch.manual_seed(4)
    ckpt.save_training_state(
        path, model, optimizer.state_dict(), epoch=2, step_in_epoch=5, global_step=45,
        config={"epochs": 9}, generators={"masking": gen}, effective_batch=64,
    )  # fmt: skip
    expected = (random.random(), np.random.rand(), torch.rand(3), torch.rand(3, generator=gen))

    state = ckpt.load_training_state(path)
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (2, 5, 45)
    assert state["config"] == {"epochs": 9} and state["effective_batch"] == 64
    for name, tensor in model.state_dict().items():
        assert torch.equal(state["model"][name], tensor)
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    fresh.load_state_dict(state["optimizer"])
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"],
                       optimizer.state_dict()["state"][0]["exp_avg"])  # fmt: skip

    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    gen2 = torch.Generator().manual_seed(9)
    ckpt.restore_rng(state["rng"], {"masking": gen2})
    again = (random.random(), np.random.rand(), torch.rand(3), torch.rand(3, generator=gen2))
    assert again[:2] == expected[:2]
    assert torch.equal(again[2], expected[2]) and torch.equal(again[3], expected[3])


def test_training_checkpoint_is_a_model_checkpoint(tmp_path):
    model, optimizer = _trained_pair()
    path = tmp_path / "c.pth"
    ckpt.save_training_state(path, model, optimizer.state_dict(), epoch=0, step_in_epoch=0,
                             global_step=0, config={})  # fmt: skip
    loaded = crossmae.load_model(path)
    assert torch.equal(loaded.decoder.pred.weight, model.decoder.pred.weight)
    assert [p.name for p in tmp_path.iterdir()] == ["c.pth"]  # no temporary file left


def test_a_model_only_checkpoint_cannot_be_resumed(tmp_path):
    model, _ = _trained_pair()
    crossmae.save_model(tmp_path / "m.pth", model)
    with pytest.raises(CrossMAEError, match="not a crossmae training checkpoint"):
        ckpt.load_training_state(tmp_path / "m.pth")


def _save_at(path, global_step):
    model, optimizer = _trained_pair()
    ckpt.save_training_state(path, model, optimizer.state_dict(), epoch=0, step_in_epoch=0,
                             global_step=global_step, config={})  # fmt: skip


def test_latest_checkpoint_is_the_one_furthest_along_whatever_the_file_times(tmp_path):
    assert ckpt.latest_checkpoint(tmp_path) is None
    kept, latest = tmp_path / ckpt.epoch_checkpoint_name(1), tmp_path / ckpt.LATEST
    _save_at(kept, 8)
    _save_at(latest, 28)
    os.utime(latest, ns=(1, 1))  # copied file by file, as a download does: times lost
    assert ckpt.latest_checkpoint(tmp_path) == latest
    (tmp_path / ".checkpoint.pth.tmp").write_bytes(b"torn")  # a save killed half-way
    assert ckpt.latest_checkpoint(tmp_path) == latest
    _save_at(tmp_path / ckpt.epoch_checkpoint_name(4), 32)  # killed before the latest moved on
    assert ckpt.latest_checkpoint(tmp_path).name == ckpt.epoch_checkpoint_name(4)
    torch.save({"model": {}}, tmp_path / "checkpoint-other.pth")
    with pytest.raises(CrossMAEError, match=re.escape(
        f"{tmp_path / 'checkpoint-other.pth'} is not a crossmae training checkpoint; move it "
        f"out of {tmp_path} to resume from the others there (the furthest along: "
        "checkpoint-epoch0004.pth, step 32)"
    )):  # fmt: skip
        ckpt.latest_checkpoint(tmp_path)


def test_a_corrupt_latest_checkpoint_names_the_readable_one_to_resume_from(tmp_path):
    _save_at(tmp_path / ckpt.epoch_checkpoint_name(2), 16)
    _save_at(tmp_path / ckpt.LATEST, 24)
    data = (tmp_path / ckpt.LATEST).read_bytes()
    (tmp_path / ckpt.LATEST).write_bytes(data[: len(data) // 2])  # damaged after it was written
    with pytest.raises(CrossMAEError) as err:
        ckpt.latest_checkpoint(tmp_path)
    message = str(err.value)
    assert message.startswith(f"{tmp_path / ckpt.LATEST} is not a readable PyTorch checkpoint")
    assert message.endswith(f"; move it out of {tmp_path} to resume from the others there "
                            "(the furthest along: checkpoint-epoch0002.pth, step 16)")  # fmt: skip
    assert ckpt.readable_latest(tmp_path) is None  # an error message's lookup: no second error
    (tmp_path / ckpt.epoch_checkpoint_name(2)).unlink()
    with pytest.raises(CrossMAEError, match=re.escape(
        f", and no other checkpoint is there: move it out of {tmp_path} and --resume auto "
        "starts a new run"
    )):  # fmt: skip
        ckpt.latest_checkpoint(tmp_path)


def _kept_and_latest(directory):
    """A latest checkpoint after epoch 1 and a kept copy after epoch 2, not yet the latest."""
    model, optimizer = _trained_pair()
    kept, latest = directory / ckpt.epoch_checkpoint_name(2), directory / ckpt.LATEST
    for path, epoch in ((latest, 1), (kept, 2)):
        ckpt.save_training_state(path, model, optimizer.state_dict(), epoch=epoch,
                                 step_in_epoch=0, global_step=epoch, config={})  # fmt: skip
    return kept, latest


def test_the_latest_becomes_a_hard_link_to_the_kept_copy(tmp_path):
    kept, latest = _kept_and_latest(tmp_path)
    ckpt.copy_training_state(kept, latest)
    assert latest.stat().st_ino == kept.stat().st_ino  # nothing was written a second time
    assert ckpt.latest_checkpoint(tmp_path) == latest  # the same time: the latest wins
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([kept.name, latest.name])

    model, optimizer = _trained_pair()  # the next save replaces the name, not the file
    ckpt.save_training_state(latest, model, optimizer.state_dict(), epoch=3, step_in_epoch=0,
                             global_step=3, config={})  # fmt: skip
    assert ckpt.load_training_state(kept)["epoch"] == 2


def test_without_hard_links_the_kept_copy_is_copied(tmp_path, monkeypatch):
    kept, latest = _kept_and_latest(tmp_path)
    monkeypatch.setattr(os, "link", _no_links)
    ckpt.copy_training_state(kept, latest)
    assert latest.stat().st_ino != kept.stat().st_ino
    assert latest.read_bytes() == kept.read_bytes()


def test_a_copy_that_fills_the_disk_leaves_the_old_latest(tmp_path, monkeypatch):
    kept, latest = _kept_and_latest(tmp_path)

    def copy_until_the_disk_fills(source, target, length=0) -> None:
        target.write(source.read(1000))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "link", _no_links)
    monkeypatch.setattr(shutil, "copyfileobj", copy_until_the_disk_fills)
    with pytest.raises(CrossMAEError) as caught:
        ckpt.copy_training_state(kept, latest)
    assert str(caught.value) == (
        f"could not write checkpoint {latest}: No space left on device; "
        f"the previous checkpoint {kept} is intact"
    )
    assert ckpt.load_training_state(latest)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([kept.name, latest.name])


def test_a_link_that_cannot_be_renamed_is_removed(tmp_path, monkeypatch):
    kept, latest = _kept_and_latest(tmp_path)

    def refuse(source, target) -> None:
        raise OSError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(CrossMAEError):
        ckpt.copy_training_state(kept, latest)
    assert ckpt.load_training_state(latest)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([kept.name, latest.name])


def test_a_temporary_link_left_by_a_crash_does_not_truncate_the_kept_copy(tmp_path):
    kept, latest = _kept_and_latest(tmp_path)
    os.link(kept, tmp_path / f".{latest.name}.tmp")  # killed between link and rename
    model, optimizer = _trained_pair()
    ckpt.save_training_state(latest, model, optimizer.state_dict(), epoch=3, step_in_epoch=0,
                             global_step=3, config={})  # fmt: skip
    assert ckpt.load_training_state(kept)["epoch"] == 2
    assert ckpt.load_training_state(latest)["epoch"] == 3


def _no_links(source, target) -> None:
    raise OSError(errno.EPERM, "hard links are not supported here")


def test_a_positional_optimizer_state_is_renamed_parameter_by_parameter():
    """Resuming a plain run under FSDP: each Adam moment must land on its own parameter,
    including among parameters of one shape (a swap there would fail nothing loudly)."""
    from crossmae.train.optim import build_adamw, param_groups

    model = crossmae.create_model("crossmae_vit_tiny_patch4_32", depth=2, decoder_depth=2)
    optimizer = build_adamw(param_groups(model, 0.05), 1e-3, (0.9, 0.95), "cpu")
    model(torch.randn(2, 3, 32, 32)).loss.backward()
    optimizer.step()
    saved = optimizer.state_dict()
    by_name = ckpt.optimizer_state_by_name(saved, optimizer, model)
    position = {id(p): i for i, p in enumerate(p for g in optimizer.param_groups
                                              for p in g["params"])}  # fmt: skip
    for name, param in model.named_parameters():
        expected = saved["state"][position[id(param)]]["exp_avg"]
        assert torch.equal(by_name["state"][name]["exp_avg"], expected), name
        assert torch.equal(optimizer.state[param]["exp_avg"], expected), name
    assert ckpt.optimizer_state_by_name(by_name, optimizer, model) is by_name  # named already
    fewer = {
        **saved,
        "param_groups": [{**g, "params": g["params"][1:]} for g in saved["param_groups"]],
    }
    with pytest.raises(CrossMAEError, match="other parameters than this model"):
        ckpt.optimizer_state_by_name(fewer, optimizer, model)


def test_seed_everything_seeds_python_numpy_and_torch_from_its_argument():
    draws = []
    for seed in (5, 6, 5):
        ckpt.seed_everything(seed)
        draws.append((random.random(), float(np.random.rand()), float(torch.rand(()))))
    assert draws[0] == draws[2]
    assert all(a != b for a, b in zip(draws[0], draws[1], strict=True))
