"""Fixtures shared by several test files."""
import pytest
import torch

from study_helpers import postgresql_server


@pytest.fixture(scope="module")
def one_torch_thread():
    """Two torch threads on two busy cores spin against each other; one is faster here. Used by
    the files whose runs share the machine with background threads (the panel) or are many and
    tiny (the doctor's real runs): `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config(output_dir, **kw):
    """A seconds-long config for unit tests: 80 arithmetic rows (64 train = 4 batches of 16),
    no generation, no progress bar. Test files import it: `from conftest import tiny_config`."""
    from nbkit import TrainConfig

    base = dict(model="tiny", dataset="arithmetic", max_samples=80, predict_with_generate=False,
                disable_tqdm=True, output_dir=str(output_dir))
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def postgresql_url():
    """A real PostgreSQL server (study_helpers.postgresql_server), started once for the test session: the
    study and classroom tests each use their own study names in it."""
    with postgresql_server() as url:
        yield url
