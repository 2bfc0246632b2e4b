"""`crossmae <command>`: what a stopped command says, and by which process."""

import pytest

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
