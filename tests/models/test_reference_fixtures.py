"""Our models against golden input/output pairs computed with the authors' own code."""

from pathlib import Path

import pytest
import torch

from crossmae import convert_official_state_dict, load_official_checkpoint
from crossmae.models.autoencoder import MaskedAutoencoder
from crossmae.serialization import safe_torch_load

from conftest import REFERENCE_DIR

CASES = sorted(
    p.name.removesuffix(".checkpoint.pth") for p in REFERENCE_DIR.glob("*.checkpoint.pth")
)


def test_fixture_directory_has_cases():
    assert CASES, f"no *.checkpoint.pth fixtures in {REFERENCE_DIR}"
    for case in CASES:
        assert (REFERENCE_DIR / f"{case}.io.pt").is_file(), f"{case} has no .io.pt"


@pytest.mark.parametrize("case", CASES)
def test_matches_reference(case: str):
    model = load_official_checkpoint(REFERENCE_DIR / f"{case}.checkpoint.pth")
    assert isinstance(model, MaskedAutoencoder)
    io = safe_torch_load(REFERENCE_DIR / f"{case}.io.pt")
    model.zero_grad()
    out = model(io["imgs"], noise=io["noise"])
    out.loss.backward()

    assert torch.equal(out.mask, io["mask"].to(out.mask.dtype)), "mask differs"
    # The fixture is the authors' float32 output: our model run in float64 lies up to 1.24e-6
    # from it, so an atol below that floor passed or failed by the CPU's kernels (1e-6 failed
    # mae_npl by 1.3e-6 on an AVX-512 machine). 2e-6 sits just above it.
    torch.testing.assert_close(out.pred, io["pred"], rtol=1e-5, atol=2e-6)
    torch.testing.assert_close(out.loss, io["loss"], rtol=1e-5, atol=1e-6)

    grads = convert_official_state_dict(io["grads"])
    params = dict(model.named_parameters())
    assert set(grads) == {n for n, p in params.items() if p.requires_grad}
    for name, ref in grads.items():
        got = params[name].grad
        assert got is not None, f"no gradient for {name}"
        torch.testing.assert_close(
            got, ref, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}"
        )


def test_reference_dir_is_the_shared_copy():
    """The repository's copy stays identical to ../shared/reference when that is present."""
    shared = Path(__file__).resolve().parents[3] / "shared" / "reference"
    if not shared.is_dir() or REFERENCE_DIR.resolve() == shared.resolve():
        pytest.skip("no ../shared/reference beside this clone")
    for case in CASES:
        for suffix in (".checkpoint.pth", ".io.pt"):
            ours = (REFERENCE_DIR / f"{case}{suffix}").read_bytes()
            assert ours == (shared / f"{case}{suffix}").read_bytes()
