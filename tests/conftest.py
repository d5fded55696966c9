"""Fixtures shared by several test files."""
import getpass
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

from study_helpers import free_port


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


def _server_binaries() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        pytest.fail("no PostgreSQL server binaries (initdb, pg_ctl): `make postgresql` installs them")
    return Path(candidates[-1]).parent


@pytest.fixture(scope="session")
def postgresql_url():
    """A real PostgreSQL server in a temporary folder, on a free port, started once for the test session (the
    study and classroom tests); as `postgres` when we are root (initdb refuses root)."""
    import psycopg2

    bin_dir, port = _server_binaries(), free_port()
    root = Path(tempfile.mkdtemp(prefix="nbkit-pg-"))
    as_root = os.geteuid() == 0
    user = "postgres" if as_root else getpass.getuser()
    if as_root:
        shutil.chown(root, user="postgres")
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []

    def server(*args):
        subprocess.run(prefix + [str(bin_dir / args[0]), *args[1:]], check=True, capture_output=True, timeout=120)

    server("initdb", "-D", str(root / "data"), "-U", user, "-A", "trust")
    server("pg_ctl", "start", "-w", "-D", str(root / "data"), "-l", str(root / "server.log"),
           "-o", f"-p {port} -k {root} -c listen_addresses=localhost")
    try:
        connection = psycopg2.connect(host="localhost", port=port, user=user, dbname="postgres")
        connection.autocommit = True
        connection.cursor().execute("CREATE DATABASE studies")
        connection.close()
        yield f"postgresql+psycopg2://{user}@localhost:{port}/studies"
    finally:
        server("pg_ctl", "stop", "-m", "fast", "-D", str(root / "data"))
        shutil.rmtree(root, ignore_errors=True)
