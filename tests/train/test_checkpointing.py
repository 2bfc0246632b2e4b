"""Training checkpoints: complete, atomic, loadable with weights_only, RNG states restored."""

import random

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


def test_latest_checkpoint_is_the_newest(tmp_path):
    assert ckpt.latest_checkpoint(tmp_path) is None
    for name in (ckpt.epoch_checkpoint_name(20), ckpt.LATEST):
        torch.save({}, tmp_path / name)
    assert ckpt.latest_checkpoint(tmp_path).name == ckpt.LATEST
    (tmp_path / ".checkpoint.pth.tmp").write_bytes(b"torn")  # a save killed half-way
    assert ckpt.latest_checkpoint(tmp_path).name == ckpt.LATEST
