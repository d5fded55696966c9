"""nbkit.core.optuna_private: each private Optuna call the study workers use, on a real SQLite study with
heartbeats. An Optuna release that moves one of them fails here, by name (requirements.txt allows the
versions this has run on)."""
import time

import optuna
import pytest
from optuna.trial import TrialState

from nbkit.core import optuna_private
from nbkit.core.study_storage import open_storage


@pytest.fixture
def study(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/s.db", heartbeat_interval=1, grace_period=30, max_retry=1)
    study = optuna.create_study(study_name="s", storage=storage)
    study.enqueue_trial({"x": 0.5})
    study.enqueue_trial({})
    return study


def test_take_waiting_trial_takes_each_queued_trial_once_and_never_creates_one(study):
    first, second = optuna_private.take_waiting_trial(study), optuna_private.take_waiting_trial(study)
    assert (first, second) == (0, 1)
    assert optuna_private.take_waiting_trial(study) is None
    assert len(study.trials) == 2 and all(t.state == TrialState.RUNNING for t in study.trials)


def test_a_running_trial_made_after_its_params_are_fixed_suggests_them(study):
    optuna_private.take_waiting_trial(study)
    number = optuna_private.take_waiting_trial(study)
    optuna_private.set_trial_system_attr(study, number, "fixed_params", {"x": 0.25})
    assert optuna_private.stored_trial(study, number).system_attrs["fixed_params"] == {"x": 0.25}
    trial = optuna_private.running_trial(study, number)
    assert trial.number == number and trial.suggest_float("x", 0.0, 1.0) == 0.25
    study.tell(trial, 1.0)
    assert optuna_private.stored_trial(study, number).state == TrialState.COMPLETE


def test_study_system_attrs_round_trip(study):
    optuna_private.set_study_system_attr(study, "place", 3)
    assert optuna_private.study_system_attrs(study)["place"] == 3


def test_the_heartbeat_thread_beats_and_heartbeat_ages_reads_it(study):
    number = optuna_private.take_waiting_trial(study)
    trial = optuna_private.running_trial(study, number)
    assert optuna_private.heartbeat_ages(study) == {}  # no beat yet
    with optuna_private.heartbeat(study, trial):
        time.sleep(1.5)
        ages = optuna_private.heartbeat_ages(study)
        assert set(ages) == {number} and 0 <= ages[number] < 1.5
    time.sleep(1.2)
    assert optuna_private.heartbeat_ages(study)[number] >= 1.0  # the thread stopped with the context


def test_frozen_study_trials_reads_another_studys_trials_by_its_id(study):
    other = optuna.create_study(study_name="other", storage=study._storage)
    other.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=2.0, intermediate_values={1: 3.0}))
    frozen = {s.study_name: s for s in study._storage.get_all_studies()}
    assert [(t.value, t.intermediate_values) for t in optuna_private.frozen_study_trials(study, frozen["other"])] \
        == [(2.0, {1: 3.0})]
    assert [t.state for t in optuna_private.frozen_study_trials(study, frozen["s"])] == [TrialState.WAITING] * 2
