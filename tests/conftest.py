import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
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


@contextlib.contextmanager
def _ctrl_c_after(seconds: float) -> Iterator[None]:
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def ctrl_c_after() -> Callable[[float], AbstractContextManager[None]]:
    """`with ctrl_c_after(s):` a Ctrl-C s seconds later, wherever the main thread then is."""
    return _ctrl_c_after
