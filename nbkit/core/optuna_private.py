"""The few parts of Optuna's private API that nbkit's study workers use, in one place.

A study worker must take only trials that are already queued (Optuna's `ask()` creates one when the
queue is empty), run them under Optuna's heartbeat, and fix a queued trial's params before it starts;
Optuna offers these steps only inside `Study.optimize`. Each function below wraps one private call, so
an Optuna release that moves one breaks one function here, and `tests/test_optuna_private.py` says
which. `requirements.txt` allows the Optuna versions that test has run on.

    take_waiting_trial(study)              the number of a WAITING trial, now RUNNING and ours (None: queue empty)
    running_trial(study, number)           that trial as an optuna.Trial (suggest_*, report, tell)
    heartbeat(study, trial)                a context: the trial's heartbeat thread, as optimize() runs it
    stored_trial(study, number)            the trial as stored now (FrozenTrial), another worker's writes included
    set_trial_system_attr(study, number, key, value)
    study_system_attrs(study) / set_study_system_attr(study, key, value)
    heartbeat_ages(study)                  {trial number: seconds since its last heartbeat}, RUNNING trials
    frozen_study_trials(study, frozen)     the trials of another study in the same storage, from its FrozenStudy
"""
from __future__ import annotations

import optuna
from optuna.trial import TrialState


def _storage(study: optuna.Study):
    return study._storage


def _trial_id(study: optuna.Study, number: int) -> int:
    return _storage(study).get_trial_id_from_study_id_trial_number(study._study_id, number)


def take_waiting_trial(study: optuna.Study) -> int | None:
    """The number of a WAITING trial, now RUNNING and ours (None: the queue is empty). Optuna's own
    atomic WAITING -> RUNNING step (what ask() does first), without ask()'s fallback of creating a new
    trial when none is waiting."""
    trial_id = study._pop_waiting_trial_id()
    return None if trial_id is None else _storage(study).get_trial(trial_id).number


def running_trial(study: optuna.Study, number: int) -> optuna.Trial:
    """The optuna.Trial of a trial this worker took, for suggest_*, report and tell. Made after its params
    are fixed: a Trial reads its fixed params once, when it is made."""
    return optuna.Trial(study, _trial_id(study, number))


def heartbeat(study: optuna.Study, trial: optuna.Trial):
    """The heartbeat thread Optuna's optimize loop runs around a trial (a no-op without heartbeats)."""
    from optuna.storages._heartbeat import get_heartbeat_thread

    return get_heartbeat_thread(trial._trial_id, _storage(study))


def stored_trial(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    """The trial as the storage holds it now (study.trials may be cached)."""
    return _storage(study).get_trial(_trial_id(study, number))


def set_trial_system_attr(study: optuna.Study, number: int, key: str, value) -> None:
    _storage(study).set_trial_system_attr(_trial_id(study, number), key, value)


def study_system_attrs(study: optuna.Study) -> dict:
    return dict(_storage(study).get_study_system_attrs(study._study_id))


def set_study_system_attr(study: optuna.Study, key: str, value) -> None:
    _storage(study).set_study_system_attr(study._study_id, key, value)


def heartbeat_ages(study: optuna.Study) -> dict[int, float]:
    """{trial number: seconds since its last heartbeat} for the RUNNING trials that have beaten. Optuna
    keeps heartbeats in a table of its RDB storage and offers only "which trials are stale"."""
    from optuna.storages._rdb import models
    from sqlalchemy import func

    storage = getattr(_storage(study), "_backend", _storage(study))  # the RDBStorage inside Optuna's cache
    with storage.scoped_session() as session:
        now = session.execute(func.now()).scalar().replace(tzinfo=None)
        rows = (session.query(models.TrialModel.number, models.TrialHeartbeatModel.heartbeat)
                .join(models.TrialHeartbeatModel, models.TrialHeartbeatModel.trial_id == models.TrialModel.trial_id)
                .filter(models.TrialModel.study_id == study._study_id,
                        models.TrialModel.state == TrialState.RUNNING).all())
    return {number: (now - beat.replace(tzinfo=None)).total_seconds() for number, beat in rows}


def frozen_study_trials(study: optuna.Study, frozen) -> list[optuna.trial.FrozenTrial]:
    """The trials of `frozen` (a FrozenStudy from storage.get_all_studies(), in `study`'s storage), read by its
    id: no load_study (two more reads) per study, which a board looking at 30 students' studies every second
    would pay 30 times."""
    return _storage(study).get_all_trials(frozen._study_id, deepcopy=False)
