import os
from pathlib import Path

import pytest
import torch

REFERENCE_DIR = Path(os.environ.get("CROSSMAE_REFERENCE_DIR", Path(__file__).parent / "reference"))


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Fresh seed per test; one intra-op thread, because the test models are tiny and two
    threads spin-waiting on a shared 2-core CI machine make each step many times slower."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
