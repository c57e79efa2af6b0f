"""Fixtures that several test modules share. A module asks for the module-scoped ``one_thread`` with
``pytestmark = pytest.mark.usefixtures("one_thread")``; ``ckpt`` is requested by name."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's tests: the test networks are tiny, and on a busy machine
    OpenMP's threads wait on each other; one thread is fast and steady. Subprocesses get
    OMP_NUM_THREADS=1 from the tests that start them."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    """A small generator checkpoint in our format (tests/anonymize_helpers.py), one per module."""
    from tests.anonymize_helpers import save_small_checkpoint  # imported here: torch-only modules skip it
    return save_small_checkpoint(str(tmp_path_factory.mktemp("ck") / "small.pth"))


@pytest.fixture
def password(monkeypatch):
    """The passphrases the anonymize.py tests pass with --password-env: FIT_PW, and FIT_WRONG."""
    monkeypatch.setenv("FIT_PW", "tall ship and a star")
    monkeypatch.setenv("FIT_WRONG", "something else")
