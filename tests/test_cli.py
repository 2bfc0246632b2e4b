"""`crossmae <command>`: what a stopped command says, and by which process; what it answers
before torch is imported."""

import subprocess
import sys

import pytest

import crossmae
import crossmae.commands.models as models_command
from crossmae.cli import main
from crossmae.errors import Terminated


@pytest.mark.parametrize(
    ("stop", "code", "line"),
    [(Terminated, 143, "crossmae models: stopped by SIGTERM"),
     (KeyboardInterrupt, 130, "crossmae models: interrupted")],
)  # fmt: skip
@pytest.mark.parametrize("rank", [None, "0", "1"])
def test_a_stop_is_said_once_under_torchrun(monkeypatch, capsys, stop, code, line, rank):
    """Every torchrun process gets the signal; only the first says so."""
    if rank is None:
        monkeypatch.delenv("RANK", raising=False)
    else:
        monkeypatch.setenv("RANK", rank)

    def stopped(args):
        raise stop

    monkeypatch.setattr(models_command, "run", stopped)
    assert main(["models"]) == code
    said = capsys.readouterr().err
    assert said == ("" if rank == "1" else f"{line}\n")


# Run in a fresh interpreter (this one imported torch long ago): each call must end with a
# one-sentence error, and none may have imported torch.
WITHOUT_TORCH = """
import contextlib, io, sys
from crossmae.cli import build_parser, main
build_parser().format_help()
calls = [
    ["models"],
    ["pretrain", "--mask-ratio", "1.5"],
    ["pretrain", "--model", "vit_nope"],
    ["knn", "--checkpoint", "/nope/a.pth"],
    ["linprobe", "--checkpoint", "/nope/a.pth"],
    ["finetune", "--checkpoint", "/nope/a.pth"],
    ["evaluate", "--checkpoint", "/nope/a.pth"],
    ["pretrain", "--output-dir", sys.executable],
    ["pretrain", "--data", "/nope/images"],
    ["knn", "--checkpoint", sys.executable, "--eval-data", "/nope/images"],
]
for argv in calls:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    print(code, err.getvalue().strip())
print("torch imported:", "torch" in sys.modules)
"""


def test_help_listing_and_bad_settings_are_answered_without_torch():
    """`--help`, `crossmae models` and settings that fail validation take a fraction of a
    second: importing torch and timm takes seconds."""
    out = subprocess.run([sys.executable, "-c", WITHOUT_TORCH], capture_output=True,
                         text=True, check=True).stdout.splitlines()  # fmt: skip
    assert out[0] == "0 "
    assert out[1] == "2 crossmae pretrain: error: mask ratio must be between 0 and 1, got 1.5"
    assert out[2].startswith("2 crossmae pretrain: error: unknown model 'vit_nope'")
    for line, command in zip(out[3:7], ("knn", "linprobe", "finetune", "evaluate"), strict=True):
        assert line == f"2 crossmae {command}: error: checkpoint /nope/a.pth does not exist"
    assert (
        out[7]
        == f"2 crossmae pretrain: error: --output-dir {sys.executable} is a file, not a folder"
    )
    assert out[8] == "2 crossmae pretrain: error: data path /nope/images does not exist"
    assert out[9] == "2 crossmae knn: error: --eval-data /nope/images does not exist"
    assert out[10] == "torch imported: False"


SUBMODULE_AS_ATTRIBUTE = """
import crossmae
print(crossmae.models.registry.list_models("tiny_patch4")[:1], crossmae.data.__name__)
"""


def test_package_names_load_on_first_use():
    assert crossmae.create_model is crossmae.models.registry.create_model
    out = subprocess.run([sys.executable, "-c", SUBMODULE_AS_ATTRIBUTE], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    assert out == "['crossmae_vit_tiny_patch4_32'] crossmae.data\n"
    assert {"MaskedAutoencoder", "load_model", "CrossMAEError"} <= set(dir(crossmae))
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        crossmae.nope  # noqa: B018
