"""What the study tests share (tests/test_study*.py): a spec of seconds-long trials in tmp_path, the run
folders it writes, and the checks that every trial ran once and no configuration twice."""
import contextlib
import getpass
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from optuna.trial import TrialState

from nbkit.core.runs import load_run



REPO_ROOT = Path(__file__).resolve().parent.parent


TINY = dict(model="tiny", dataset="arithmetic", max_samples=80, predict_with_generate=False,
            num_train_epochs=1)  # a run of about a second


def spec_dict(tmp_path, **kw) -> dict:
    d = dict(study_name="lr", base=dict(TINY), scientific={"learning_rate": [1e-3, 3e-3]}, sampler="grid",
             storage=f"sqlite:///{tmp_path}/studies.db", output_dir=str(tmp_path / "runs"),
             heartbeat_interval=1, grace_period=3)
    d.update(kw)
    return d


def run_folders(tmp_path) -> list[Path]:
    return sorted(p.parent for p in (tmp_path / "runs").rglob("summary.json"))


def ended(study) -> list:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def assert_each_trial_once(study, tmp_path, n_trials):
    """n_trials trials, all COMPLETE or PRUNED, each with its own run folder, and no other folder."""
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == n_trials, [(t.number, t.state) for t in trials]
    assert len(ended(study)) == n_trials
    run_dirs = [t.user_attrs["run_dir"] for t in trials]
    assert len(set(run_dirs)) == n_trials
    assert sorted(map(str, run_folders(tmp_path))) == sorted(run_dirs)
    for t in trials:
        run = load_run(t.user_attrs["run_dir"])
        assert run.status == t.user_attrs["run_status"] == "completed"
        assert all(run.config[k] == v for k, v in t.params.items())
        assert t.value == pytest.approx(run.epochs.loc[run.epochs.epoch >= 1, "eval_loss"].min())


def configurations(study) -> list[tuple]:
    """Each trial's params, but for heartbeat retries (which repeat a dead worker's trial on purpose)."""
    return [tuple(sorted(t.params.items())) for t in study.get_trials(deepcopy=False)
            if t.params and "failed_trial" not in t.system_attrs]


def assert_no_configuration_twice(study):
    seen = configurations(study)
    assert len(seen) == len(set(seen)), sorted(seen)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


GRID = [1e-3, 3e-3, 1e-2]


def class_spec(tmp_path, name="lr101", **kw):
    """A class (nbkit.core.classroom) of three tiny configurations in tmp_path/class.db."""
    from nbkit.core.study import StudySpec

    d = dict(study_name=name, base=dict(TINY), scientific={"learning_rate": list(GRID)}, sampler="grid",
             storage=f"sqlite:///{tmp_path}/class.db", heartbeat_interval=1, grace_period=3)
    d.update(kw)
    return StudySpec.from_dict(d)


def _server_binaries() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        raise RuntimeError("no PostgreSQL server binaries (initdb, pg_ctl): `make postgresql` installs them")
    return Path(candidates[-1]).parent


@contextlib.contextmanager
def postgresql_server(max_connections: int = 200):
    """A real PostgreSQL server in a temporary folder, on a free port, its URL for a database "studies";
    as `postgres` when we are root (initdb refuses root). max_connections: a class of 30 student processes
    holds about 3 connections each, more than PostgreSQL's default of 100 leaves room for."""
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
           "-o", f"-p {port} -k {root} -c listen_addresses=localhost -c max_connections={max_connections}")
    try:
        connection = psycopg2.connect(host="localhost", port=port, user=user, dbname="postgres")
        connection.autocommit = True
        connection.cursor().execute("CREATE DATABASE studies")
        connection.close()
        yield f"postgresql+psycopg2://{user}@localhost:{port}/studies"
    finally:
        server("pg_ctl", "stop", "-m", "fast", "-D", str(root / "data"))
        shutil.rmtree(root, ignore_errors=True)
