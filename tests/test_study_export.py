"""nbkit.core.study_export: a study's winner as a TrainConfig and the files other tools read. The best
configuration is the study's held knobs with the best usable trial's params, trained for that trial's best
epoch; its YAML reads back as the same config; each tool's format is what `export` writes for it; a study
with nothing to export is refused naming why. Studies are built by hand in memory: nothing trains."""
import math

import optuna
import pytest
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from nbkit.core.config import TrainConfig
from nbkit.core.export import EXPORT_FORMATS, export_text
from nbkit.core.study import SPEC_ATTR, StudyError
from nbkit.core.study_export import best_config, best_config_yaml, best_text, winner, write_best_config

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPEC = {"study_name": "lr", "base": {"model": "tiny", "dataset": "arithmetic", "max_samples": 80,
                                     "num_train_epochs": 5},
        "fixed": {"finetuning_type": "lora", "warmup_ratio": 0.1}, "scientific": {}, "nuisance": {}}


def a_trial(lr, value, curve, state=TrialState.COMPLETE):
    return create_trial(params={"learning_rate": lr}, distributions={"learning_rate": FloatDistribution(1e-5, 1.0)},
                        value=value, state=state, intermediate_values=curve,
                        user_attrs={"run_dir": f"/elsewhere/lr-{lr:g}"})  # its run folder is not on this machine


def study_of(*trials, spec=SPEC) -> optuna.Study:
    study = optuna.create_study(study_name="lr")
    if spec:
        study.set_user_attr(SPEC_ATTR, spec)
    for trial in trials:
        study.add_trial(trial)
    return study


@pytest.fixture
def study():
    return study_of(a_trial(1e-3, 1.2, {1: 1.5, 2: 1.3, 3: 1.2, 4: 1.25, 5: 1.3}),
                    a_trial(3e-3, 1.0, {1: 1.2, 2: 1.0, 3: 1.1, 4: 1.2, 5: 1.3}),  # the best, at epoch 2
                    a_trial(1.0, math.inf, {1: math.inf}),  # diverged: never the best
                    a_trial(2e-3, None, {1: 0.9}, state=TrialState.PRUNED))  # pruned: never the best


def test_the_best_epoch_comes_from_the_trials_curve_when_its_run_folder_is_elsewhere():
    """A study whose workers ran on another machine (PostgreSQL): no run folder here, the curve decides."""
    from optuna.trial import create_trial

    from nbkit.core.study_export import best_epoch

    trial = create_trial(value=0.7, intermediate_values={1: 0.9, 2: 0.7, 3: 0.8},
                         user_attrs={"run_dir": "/nowhere/trial-000"})
    assert best_epoch(trial) == 2
    assert best_epoch(trial, threshold=0.5) == 1  # the trainer's rule: a fall below the threshold is no better


def test_the_best_config_is_the_held_knobs_and_the_best_trials_params_for_its_best_epoch(study):
    cfg = best_config(study)
    assert winner(study).params == {"learning_rate": 3e-3}
    assert cfg == TrainConfig(model="tiny", dataset="arithmetic", max_samples=80, finetuning_type="lora",
                              warmup_ratio=0.1, learning_rate=3e-3, num_train_epochs=2)


def test_a_best_at_epoch_zero_or_unknown_keeps_the_studys_length():
    for curve in ({}, {0: 0.5, 1: 1.0, 2: 1.1}):
        assert best_config(study_of(a_trial(3e-3, 1.0, curve))).num_train_epochs == 5


def test_the_yaml_reads_back_as_the_same_config_and_names_the_searched_knobs(study, tmp_path):
    text = best_config_yaml(study)
    fields = yaml.safe_load(text)
    assert TrainConfig.from_dict(fields) == best_config(study)
    assert {"model", "dataset", "seed", "learning_rate"} <= set(fields)  # said even where they are defaults
    assert "lr_scheduler_type" not in fields  # other defaults are left out
    path = write_best_config(study, tmp_path / "best.yaml")
    assert path == tmp_path / "best.yaml" and path.read_text() == text


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_each_tools_format_is_what_export_writes_for_the_best_config(study, fmt):
    assert best_text(study, fmt) == export_text(best_config(study), fmt)
    assert best_text(study, fmt, style="python") == export_text(best_config(study), fmt, "python")


def test_a_study_with_nothing_to_export_is_refused_naming_why():
    with pytest.raises(StudyError, match="study 'lr' has no usable trial to export .*1 diverged, 1 pruned"):
        best_config(study_of(a_trial(1.0, math.inf, {1: math.inf}),
                             a_trial(2e-3, None, {1: 0.9}, state=TrialState.PRUNED)))
    with pytest.raises(StudyError, match="no trial has run yet"):
        best_text(study_of())
    with pytest.raises(StudyError, match="was not made by nbkit"):
        winner(study_of(a_trial(3e-3, 1.0, {1: 1.0}), spec=None))
