"""nbkit.core.study_trials: one trial is a train() run (or a notebook under papermill) whose curve is
reported to Optuna epoch by epoch: pruned runs end `pruned` with their curves, a last epoch is never
pruned, a notebook trial keeps its notebook beside its run, and a chapter's sweep reads as a study."""
import json
from pathlib import Path

import pytest
from optuna.trial import TrialState

from nbkit.core.runs import as_runs, load_run
from nbkit.core.study import StudyError, StudySpec, prepare_study, pruning_note, run_study
from study_helpers import TINY, ended, spec_dict

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # in-process trials: 2 threads on busy cores spin


def test_pruned_trials_end_their_runs_as_pruned_with_their_curves(tmp_path):
    good, barely = [1e-3, 3e-3], [1e-6, 2e-6, 3e-6, 5e-6]  # the tiny LRs barely learn
    spec = spec_dict(tmp_path, base=dict(TINY, num_train_epochs=3), pruner="asha",
                     pruner_settings={"reduction_factor": 2}, scientific={"learning_rate": good + barely})
    queue = sorted(prepare_study(StudySpec.from_dict(spec)).trials, key=lambda t: t.number)
    arrival = [t.system_attrs["fixed_params"]["learning_rate"] for t in queue]  # one worker: trials in this order
    late = {lr for i, lr in enumerate(arrival) if lr in barely and set(good) <= set(arrival[:i])}
    assert late, f"the shuffled queue {arrival} puts no barely-learning LR after both good ones: nothing to test"
    study = run_study(spec, workers=1, progress=False)
    assert len(ended(study)) == len(study.trials) == 6
    pruned = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    # halving at epoch 1 (reduction factor 2): an LR that barely learns, judged after both good ones, is
    # below the rung's cut (ASHA judges a trial only against those before it: the first ones always go on)
    assert late <= {t.params["learning_rate"] for t in pruned}
    for trial in study.trials:
        run = load_run(trial.user_attrs["run_dir"])
        assert run.status == trial.user_attrs["run_status"]
        curve = dict(zip(run.epochs.epoch, run.epochs.eval_loss))
        assert trial.intermediate_values == {e: pytest.approx(v) for e, v in curve.items() if e >= 1}
        if trial.state == TrialState.PRUNED:
            assert run.status == "pruned" and run.epochs.epoch.max() < 3 and 0 in curve
            assert run.summary["best_eval_loss"] is not None
        else:
            assert run.status == "completed" and run.epochs.epoch.max() == 3
            assert trial.value == pytest.approx(min(v for e, v in curve.items() if e >= 1))


def test_a_trial_that_trains_its_last_epoch_is_complete_whatever_the_rungs(tmp_path, capsys):
    """ASHA's rung at epoch 1 is here also the last epoch: halving would cut the worse half of the trials
    after their compute was spent. They end COMPLETE, with their values, and the study says before it
    runs that this pruner can stop nothing."""
    spec = spec_dict(tmp_path, base=dict(TINY, num_train_epochs=1), pruner="asha",
                     pruner_settings={"reduction_factor": 2},
                     scientific={"learning_rate": [1e-3, 3e-3, 1e-6, 2e-6, 3e-6]})
    assert "can stop nothing" in pruning_note(StudySpec.from_dict(spec))
    study = run_study(spec, workers=1)
    out = capsys.readouterr().out
    assert out.index("can stop nothing") < out.index("trial 0 ")
    assert len(study.trials) == 5 and all(t.state == TrialState.COMPLETE for t in study.trials)
    assert all(load_run(t.user_attrs["run_dir"]).status == "completed" for t in study.trials)


def write_notebook(path: Path) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('learning_rate: float = 1e-3\noutput_dir: str = "runs"\n'
                                       'max_samples: int = 80\nnum_train_epochs: int = 1')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "from nbkit import TrainConfig, train\n"
        "run = train(TrainConfig(model='tiny', max_samples=max_samples, num_train_epochs=num_train_epochs,\n"
        "                        learning_rate=learning_rate, output_dir=output_dir, predict_with_generate=False,\n"
        "                        disable_tqdm=True))")]
    nbformat.write(nb, path)
    return path


def test_the_papermill_backend_keeps_one_output_notebook_per_trial(tmp_path):
    notebook = write_notebook(tmp_path / "tiny.ipynb")
    spec = spec_dict(tmp_path, notebook=str(notebook), base=dict(TINY, num_train_epochs=2))
    study = run_study(spec, workers=1, backend="papermill", progress=False)
    assert len(ended(study)) == len(study.trials) == 2
    labels = {1e-3: "learning_rate=0.001", 3e-3: "learning_rate=0.003"}
    for trial in study.trials:
        name = f"trial-{trial.number:03d}_{labels[trial.params['learning_rate']]}"
        path = Path(trial.user_attrs["notebook"])
        assert path == tmp_path / "runs" / name.split("_")[0] / f"{name}.ipynb" and path.exists()
        cells = json.loads(path.read_text())["cells"]
        injected = [c for c in cells if "injected-parameters" in c["metadata"].get("tags", [])]
        assert f"learning_rate = {trial.params['learning_rate']}" in "".join(injected[0]["source"])
        run = load_run(trial.user_attrs["run_dir"])
        assert Path(trial.user_attrs["run_dir"]).parent == path.parent  # the run beside its notebook
        assert run.config["learning_rate"] == trial.params["learning_rate"] and run.config["num_train_epochs"] == 2
        assert sorted(trial.intermediate_values) == [1, 2] and trial.user_attrs["run_status"] == "completed"
    assert len(list((tmp_path / "runs").rglob("*.ipynb"))) == 2


def test_a_papermill_study_refuses_a_notebook_without_the_knob(tmp_path):
    notebook = write_notebook(tmp_path / "tiny.ipynb")
    with pytest.raises(StudyError, match="no parameter 'warmup_ratio'"):
        run_study(spec_dict(tmp_path, notebook=str(notebook), scientific={"warmup_ratio": [0.0, 0.1]}),
                  workers=1, backend="papermill")


def test_a_sweep_reads_as_a_study_for_the_analysis(tmp_path):
    """study_from_runs: a chapter's sweep table becomes an Optuna study the analysis and figures take."""
    from nbkit import TrainConfig
    from nbkit.core import study_analysis
    from nbkit.core.study import best_value, study_from_runs
    from nbkit.core.sweep import sweep

    cfg = TrainConfig(**TINY, output_dir=str(tmp_path / "runs"), disable_tqdm=True)
    df = sweep(cfg, {"learning_rate": [1e-3, 3e-3, 1.0], "warmup_ratio": [0.0, 0.2]}, progress=False)
    study = study_from_runs(df, scientific="warmup_ratio", nuisance="learning_rate")
    assert len(study.trials) == len(df) == 6
    for trial, run in zip(study.trials, df.attrs["runs"]):
        assert trial.params == {"warmup_ratio": run.config["warmup_ratio"],
                                "learning_rate": run.config["learning_rate"]}
        assert trial.user_attrs["run_dir"] == str(run.path.resolve())
        assert trial.value == (float("inf") if run.status == "diverged" else best_value(run))
    table = study_analysis.isolation(study)
    for warmup, row in table.set_index("warmup_ratio").iterrows():  # the best over the LRs, per warmup
        usable = df[(df.warmup_ratio == warmup) & (df.status != "diverged")]
        assert row["best_value"] == pytest.approx(min(best_value(r) for r in as_runs(usable)))
    with pytest.raises(StudyError, match="knob 'lora_rnk' is not in the config"):
        study_from_runs(df, scientific="lora_rnk")


def test_a_trial_line_and_a_study_error_speak_chinese():
    """The real catalogue (nbkit/locale/zh_CN/LC_MESSAGES/nbkit.po); state names and run statuses stay as stored."""
    from types import SimpleNamespace

    from nbkit.core.i18n import set_language
    from nbkit.core.study import study_from_runs
    from nbkit.core.study_trials import trial_line

    trial = SimpleNamespace(number=3, value=0.51234, params={"learning_rate": 1e-3},
                            user_attrs={"run_status": "completed"}, state=TrialState.COMPLETE)
    set_language("zh")
    try:
        assert trial_line(trial) == "试验 3 COMPLETE 值 0.5123 [learning_rate=0.001] completed"
        with pytest.raises(StudyError, match=r"^runs=\[\]：没有可以做成研究的运行"):
            study_from_runs([], scientific="learning_rate")
    finally:
        set_language("en")
