import os
from pathlib import Path

import pytest
import torch

REFERENCE_DIR = Path(os.environ.get("CROSSMAE_REFERENCE_DIR", Path(__file__).parent / "reference"))


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
