"""Where a study lives: Optuna's RDBStorage on a SQLite file (one machine) or PostgreSQL (several).

    open_storage(url, heartbeat_interval, grace_period, max_retry)   heartbeats and retries when asked
    load_study(url, name)                                            a stored study, or a StudyError naming those stored
    check_stored(url)                                                refuse a storage to read that cannot hold a study

On SQLite, Optuna's "read WAITING, then write RUNNING" is only atomic if the read and the write are in one
transaction, which Python's sqlite3 driver does not do on its own (measured: three processes emptying a
queue of 300 trials took 15 of them twice): open_storage makes every transaction BEGIN IMMEDIATE
(SQLAlchemy's documented recipe), and then none is taken twice. PostgreSQL locks the row (SELECT ... FOR
UPDATE) by itself.
"""

from __future__ import annotations

from pathlib import Path

import optuna

from nbkit.core import notices
from nbkit.core.i18n import _
from nbkit.core.study_spec import StudyError, StudySpec, _shown, check_storage_url, with_driver


def absolute_storage_url(url: str) -> str:
    """A SQLite URL with an absolute path (its folder created): workers elsewhere find the same file."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return url
    path = Path(parsed.database).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return parsed.set(database=str(path)).render_as_string(hide_password=False)


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite"):
        # wait up to a minute for another worker's write instead of failing with "database is locked"
        return {"connect_args": {"timeout": 60}}
    # fail fast on a wrong host; pre-ping replaces a connection the server dropped during a long trial
    return {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}


def _serialize_sqlite_transactions(engine) -> None:
    """Make each SQLite transaction BEGIN IMMEDIATE (SQLAlchemy's recipe for the pysqlite driver),
    so Optuna's read-then-write of a trial's state cannot interleave between two workers."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection, record):
        dbapi_connection.isolation_level = None  # the driver stops issuing its own (late) BEGIN

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made before the hooks are replaced by hooked ones


def open_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None,
                 max_retry: int | None = None, read_only: bool = False) -> optuna.storages.RDBStorage:
    """Optuna's RDBStorage for a sqlite or postgresql URL, with heartbeats and retries when asked.
    An unreachable database raises StudyError naming the URL.

    read_only: a reader that never writes (the instructor's board). On SQLite its reads are plain statements,
    not BEGIN IMMEDIATE transactions: they need no write lock, so a room of 30 writing students never keeps the
    board waiting (a reader queued for the write lock waited past the 60 s timeout in bench/classroom_load.py)."""
    import sqlalchemy.exc

    check_storage_url(url)
    url = absolute_storage_url(with_driver(url))
    retry = None
    with notices.optuna_experimental():  # heartbeats and retries
        if heartbeat_interval is not None:
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        try:
            storage = optuna.storages.RDBStorage(
                url, engine_kwargs=_engine_kwargs(url), heartbeat_interval=heartbeat_interval,
                grace_period=grace_period, heartbeat_stale_trial_callback=retry)
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, ImportError) as err:
            reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
            raise StudyError(_("storage {url} cannot be reached: {reason}").format(
                url=_shown(url), reason=reason)) from None
    if url.startswith("sqlite") and not read_only:
        _serialize_sqlite_transactions(storage.engine)
    return storage


def spec_storage(spec: StudySpec) -> optuna.storages.RDBStorage:
    return open_storage(spec.storage, spec.heartbeat_interval, spec.grace_period, spec.max_retry)


def check_stored(storage_url: str) -> None:
    """Refuse, before opening it, a storage to read that cannot hold a study: a bad URL, or a SQLite
    file that does not exist (opening it would create an empty database there)."""
    from sqlalchemy.engine import make_url

    check_storage_url(storage_url)
    parsed = make_url(storage_url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database).expanduser()
        if not path.is_file():
            raise StudyError(_("storage={url!r}: no such file {path}; a study run with this storage creates it "
                               "(python -m nbkit study run FILE.yaml)").format(url=storage_url, path=path.resolve()))


def load_study(storage_url: str, study_name: str) -> optuna.Study:
    """The stored study (read it with study.trials, study.user_attrs["nbkit_spec"], ...)."""
    storage = open_storage(storage_url)
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = optuna.study.get_all_study_names(storage)
        if not names:
            raise StudyError(_("study {name!r} is not in {storage}; studies there: none").format(
                name=study_name, storage=_shown(storage_url))) from None
        raise StudyError(_("study {name!r} is not in {storage}; studies there: {names}").format(
            name=study_name, storage=_shown(storage_url), names=", ".join(names))) from None
