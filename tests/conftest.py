"""Fixtures shared by several test files."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Two torch threads on two busy cores spin against each other; one is faster here. Used by
    the files whose runs share the machine with background threads (the panel) or are many and
    tiny (the doctor's real runs): `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
