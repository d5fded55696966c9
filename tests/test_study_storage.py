"""nbkit.core.study_storage: where a study lives. A SQLite path is made absolute for workers elsewhere,
each SQLite transaction takes the write lock when it begins (a read-only board's reads need none), and a
storage that cannot hold the study (unreachable, missing file, another study's name) is refused with a
sentence naming it."""
import sqlite3

import pytest

from nbkit.core.i18n import set_language
from nbkit.core.study import StudyError, run_study
from nbkit.core.study_storage import absolute_storage_url, check_stored, load_study, open_storage
from nbkit.interfaces.cli import main
from study_helpers import free_port, spec_dict

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # in-process trials: 2 threads on busy cores spin


def test_an_unreachable_postgresql_url_is_refused_with_its_url(tmp_path):
    url = f"postgresql+psycopg2://nbkit@localhost:{free_port()}/studies"  # nothing listens there
    with pytest.raises(StudyError) as err:
        run_study(spec_dict(tmp_path, storage=url), workers=1)
    assert url.replace("+psycopg2", "") in str(err.value).replace("+psycopg2", "")
    assert "cannot be reached" in str(err.value)
    assert not (tmp_path / "runs").exists()


def test_study_show_refuses_a_missing_file_and_an_unknown_study(tmp_path, capsys):
    missing = f"sqlite:///{tmp_path}/nothing_here.db"
    assert main(["study", "show", "--storage", missing, "--study", "x"]) == 2
    assert "no such file" in capsys.readouterr().err and not (tmp_path / "nothing_here.db").exists()
    run_study(spec_dict(tmp_path, study_name="there"), workers=1, progress=False)
    assert main(["study", "show", "--storage", f"sqlite:///{tmp_path}/studies.db", "--study", "elsewhere"]) == 2
    err = capsys.readouterr().err
    assert "'elsewhere' is not in" in err and "there" in err


def test_a_relative_sqlite_path_becomes_absolute_so_workers_elsewhere_find_the_same_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = absolute_storage_url("sqlite:///runs/new/studies.db")
    assert url == f"sqlite:///{tmp_path / 'runs' / 'new' / 'studies.db'}"
    assert (tmp_path / "runs" / "new").is_dir()  # its folder made: SQLite would not create it
    assert absolute_storage_url(url) == url
    for other in ("postgresql+psycopg2://nbkit@db:5432/studies", "sqlite:///:memory:"):
        assert absolute_storage_url(other) == other


def test_a_sqlite_transaction_takes_the_write_lock_when_it_begins(tmp_path):
    """Optuna reads a WAITING trial, then writes it RUNNING: only atomic if the read already holds the
    lock. Python's sqlite3 driver begins lazily (at the first write), so another worker could write between."""
    storage = open_storage(f"sqlite:///{tmp_path}/studies.db")
    other = sqlite3.connect(tmp_path / "studies.db", timeout=0, isolation_level=None)
    with storage.engine.connect() as connection, connection.begin():
        connection.exec_driver_sql("SELECT 1")  # a read only
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    other.execute("BEGIN IMMEDIATE")  # the first transaction ended: the lock is free again
    other.execute("ROLLBACK")
    other.close()


def test_a_read_only_storage_reads_while_a_writer_holds_the_write_lock(tmp_path):
    """The board's storage: 30 students writing must never keep it waiting for the write lock."""
    import time

    import optuna

    url = f"sqlite:///{tmp_path}/studies.db"
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    study.enqueue_trial({"x": 1.0})
    writer = sqlite3.connect(tmp_path / "studies.db", timeout=0, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # a student in the middle of a write transaction
    try:
        reader = open_storage(url, read_only=True)
        started = time.monotonic()
        trials = optuna.load_study(study_name="s", storage=reader).get_trials(deepcopy=False)
        assert len(trials) == 1 and time.monotonic() - started < 5
        with pytest.raises(sqlite3.OperationalError, match="locked"):  # a writer's storage would have waited
            sqlite3.connect(tmp_path / "studies.db", timeout=0, isolation_level=None).execute("BEGIN IMMEDIATE")
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_a_storage_that_cannot_hold_the_study_is_refused_in_chinese(tmp_path):
    missing = f"sqlite:///{tmp_path}/nothing_here.db"
    set_language("zh")
    try:
        with pytest.raises(StudyError) as err:
            check_stored(missing)
        assert str(err.value) == (f"storage={missing!r}：没有文件 {tmp_path / 'nothing_here.db'}；"
                                  "用这个存储运行研究时会创建它（python -m nbkit study run FILE.yaml）")
        with pytest.raises(StudyError) as err:
            load_study(f"sqlite:///{tmp_path}/empty.db", "lr")
        assert str(err.value) == f"研究 'lr' 不在 sqlite:///{tmp_path}/empty.db 中；那里的研究：无"
    finally:
        set_language("en")
