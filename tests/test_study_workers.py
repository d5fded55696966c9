"""nbkit.core.study_workers: workers and backends on real SQLite and PostgreSQL, real worker processes and
Ray, on tiny seconds-long runs. Every trial runs exactly once; a killed worker's trial is retried;
Ctrl-C stops every worker with one line and the study resumes; progress estimates the time left."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from nbkit.core.runs import load_run
from nbkit.core.study import StudySpec, load_study, prepare_study, run_study
from study_helpers import (REPO_ROOT, TINY, assert_each_trial_once, assert_no_configuration_twice, ended, run_folders,
                           spec_dict)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # in-process trials: 2 threads on busy cores spin


def test_two_workers_on_one_sqlite_study_run_each_grid_point_once(tmp_path):
    import torch
    grid = {"learning_rate": [1e-3, 3e-3, 1e-2], "warmup_ratio": [0.0, 0.1]}
    torch.set_num_threads(3)  # not what a worker on 2 cores gets: the caller's own count must come back
    study = run_study(spec_dict(tmp_path, scientific=grid), workers=2, progress=False)
    assert torch.get_num_threads() == 3
    assert_each_trial_once(study, tmp_path, 6)
    pids = {load_run(t.user_attrs["run_dir"]).summary["pid"] for t in study.trials}
    # worker 0 is this process; the spawned one joins when torch is imported (seconds-long trials may all be gone)
    assert os.getpid() in pids and len(pids) <= 2, pids
    points = sorted((t.params["learning_rate"], t.params["warmup_ratio"]) for t in study.trials)
    assert points == sorted((lr, w) for lr in grid["learning_rate"] for w in grid["warmup_ratio"])
    spec = study.user_attrs["nbkit_spec"]
    assert spec["scientific"] == grid and spec["n_trials"] == 6 and spec["sampler"] == "grid"
    assert json.loads(json.dumps(spec)) == spec
    # run again: it resumes, nothing is trained twice
    assert run_study(spec_dict(tmp_path, scientific=grid), workers=1, progress=False).trials == study.trials
    assert len(run_folders(tmp_path)) == 6


def test_two_workers_on_one_postgresql_study_run_n_trials_exactly(tmp_path, postgresql_url):
    postgresql_url = postgresql_url.replace("+psycopg2", "")  # postgresql:// as most guides write it: no driver named
    spec = spec_dict(tmp_path, study_name="lr_pg", storage=postgresql_url, sampler="qmc", sampler_seed=0,
                     n_trials=4, scientific={"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}})
    study = run_study(spec, workers=2, progress=False)
    assert_each_trial_once(study, tmp_path, 4)
    assert len({t.params["learning_rate"] for t in study.trials}) == 4
    assert load_study(postgresql_url, "lr_pg").user_attrs["nbkit_spec"]["n_trials"] == 4


def test_a_killed_workers_trial_is_retried_and_the_study_still_ends_with_n_trials(tmp_path):
    spec = spec_dict(tmp_path, study_name="killed", sampler="random", sampler_seed=1, n_trials=2,
                     base=dict(TINY, max_samples=240, num_train_epochs=4),  # long enough to kill it mid-run
                     scientific={"learning_rate": {"low": 1e-3, "high": 3e-3}})
    (tmp_path / "killed.yaml").write_text(yaml.safe_dump(spec))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with open(tmp_path / "worker.log", "w") as log:
        worker = subprocess.Popen([sys.executable, "-m", "nbkit", "study", "run", "killed.yaml", "--workers", "1"],
                                  cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        killed_dir = _wait_for_a_run_mid_training(tmp_path, worker)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)

    study = run_study(spec, workers=1, progress=False)  # resumes: the dead worker's trial comes back
    assert len(ended(study)) == 2
    assert all(t.state == TrialState.COMPLETE for t in ended(study))
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    assert len(failed) == 1 and failed[0].user_attrs["run_dir"] == str(killed_dir)
    retry = [t for t in ended(study) if t.system_attrs.get("failed_trial") == failed[0].number]
    assert len(retry) == 1 and retry[0].params == failed[0].params
    killed = load_run(killed_dir)
    assert killed.status == "incomplete" and len(killed.epochs) >= 2  # kept, marked as not finished
    assert len(run_folders(tmp_path)) == 3  # the two trials' runs and the killed one: none lost
    assert len(study.trials) == 3
    assert_no_configuration_twice(study)  # the resumed worker drew afresh, not the killed trial's params again


def _wait_for_a_run_mid_training(tmp_path, worker) -> Path:
    """The first run's folder, once it has evaluated epoch 1 and is still running."""
    deadline = time.time() + 120
    while time.time() < deadline:
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()
        for folder in run_folders(tmp_path):
            epochs, summary = folder / "epochs.csv", json.loads((folder / "summary.json").read_text())
            if summary["status"] == "running" and epochs.exists() and len(epochs.read_text().splitlines()) >= 3:
                return folder
        time.sleep(0.05)
    pytest.fail("no run reached epoch 1 within 2 minutes")


def test_the_ray_backend_completes_a_study_and_prints_every_trial_line(tmp_path):
    """Ray folds log lines that differ only in numbers (two of four trial lines went missing), and its log
    monitor dropped a task's last line at shutdown (one in CI): the lines are now printed from the storage."""
    grid = {"learning_rate": [1e-3, 3e-3], "warmup_ratio": [0.0, 0.1]}
    spec = spec_dict(tmp_path, study_name="lr_ray", scientific=grid)
    (tmp_path / "ray.yaml").write_text(yaml.safe_dump(spec))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(PYTHONPATH=str(REPO_ROOT), RAY_AUTH_MODE="disabled")
    done = subprocess.run([sys.executable, "-m", "nbkit", "study", "run", "ray.yaml", "--backend", "ray", "--workers",
                           "2"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = {int(n) for n in re.findall(r"trial (\d+) COMPLETE", done.stdout)}
    assert printed == {0, 1, 2, 3}, done.stdout
    assert_each_trial_once(load_study(spec["storage"], "lr_ray"), tmp_path, 4)


def children_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by a container's init, is not)."""
    status = Path(f"/proc/{pid}/status")
    try:
        return "\nState:\tZ" not in status.read_text()
    except FileNotFoundError:
        return False


def start_cli_study(tmp_path, name, workers=2, n_trials=4, epochs=6):
    spec = spec_dict(tmp_path, study_name=name, sampler="random", sampler_seed=3, n_trials=n_trials,
                     base=dict(TINY, max_samples=240, num_train_epochs=epochs),  # long enough to stop it mid-run
                     scientific={"learning_rate": {"low": 1e-3, "high": 3e-3}})
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    log = open(tmp_path / f"{name}.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "nbkit", "study", "run", f"{name}.yaml",
                                "--workers", str(workers)],
                               cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)  # its own group, as a terminal's job
    return spec, process


def wait_for_two_workers(tmp_path, process) -> list[int]:
    deadline = time.time() + 180
    while time.time() < deadline:
        assert process.poll() is None
        pids = {json.loads((f / "summary.json").read_text()).get("pid") for f in run_folders(tmp_path)}
        if len(pids) >= 2 and children_of(process.pid):
            return children_of(process.pid)
        time.sleep(0.1)
    pytest.fail("the two workers did not both start a trial within 3 minutes")


def test_ctrl_c_prints_one_line_and_the_study_resumes_where_it_stopped(tmp_path):
    # 60 epochs: both trials must still run when the test has seen two runs and sends Ctrl-C; at 6, and once
    # more at 20 on a loaded CI machine, the study had ended by then (exit 0, nothing to stop). Stopped at once,
    # the epochs cost nothing when the test works
    spec, process = start_cli_study(tmp_path, "stopped", n_trials=2, epochs=60)
    wait_for_two_workers(tmp_path, process)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: every process of the job
    assert process.wait(timeout=120) == 130
    out = (tmp_path / "stopped.log").read_text()
    assert "Traceback" not in out and out.count("interrupted:") == 1, out
    assert "run the same command again to resume" in out
    study = load_study(spec["storage"], "stopped")
    stopped = [t for t in study.trials if t.state == TrialState.FAIL and t.user_attrs.get("error") == "interrupted"]
    assert len(stopped) == 2  # both workers' trials, each queued again with its params
    queued = {t.system_attrs["failed_trial"]: t.system_attrs["fixed_params"] for t in study.trials
              if t.state == TrialState.WAITING and "failed_trial" in t.system_attrs}
    assert queued == {t.number: t.params for t in stopped}
    study = run_study(spec, workers=1, progress=False)
    assert len(ended(study)) == 2
    assert_no_configuration_twice(study)
    rerun = {tuple(sorted(t.params.items())) for t in ended(study) if "failed_trial" in t.system_attrs}
    assert rerun == {tuple(sorted(t.params.items())) for t in stopped}


def test_spawned_workers_end_when_the_main_process_is_killed(tmp_path):
    spec, process = start_cli_study(tmp_path, "orphans", n_trials=12)  # minutes of trials left for a survivor
    children = wait_for_two_workers(tmp_path, process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    deadline = time.time() + 15
    while any(alive(pid) for pid in children) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in children), children


def test_progress_counts_the_trials_and_estimates_the_time_left_in_a_widget_or_lines(capsys):
    """Two trials of 10 s ended, one running, three queued, two workers: (3 + 1/2) x 10 s / 2 = 17.5 s left."""
    import datetime

    from optuna.distributions import FloatDistribution
    from optuna.trial import FrozenTrial

    from nbkit.core.study import StudyProgress, quiet_create_study

    study = quiet_create_study()
    start = datetime.datetime(2026, 1, 1)
    for number, state in enumerate((TrialState.COMPLETE, TrialState.PRUNED)):
        study.add_trial(FrozenTrial(
            number=number, state=state, value=1.0 if state == TrialState.COMPLETE else None, values=None,
            datetime_start=start, datetime_complete=start + datetime.timedelta(seconds=10),
            params={"learning_rate": 1e-3}, distributions={"learning_rate": FloatDistribution(1e-4, 1e-2)},
            user_attrs={}, system_attrs={}, intermediate_values={}, trial_id=number))
    for _ in range(4):
        study.enqueue_trial({})
    study.ask()  # one of them now RUNNING
    widget = StudyProgress(study, n_trials=6, workers=2, every=3600, mode="widget")
    widget.close()
    bar, text = widget.widget
    assert bar.value == 2 and bar.max == 6
    assert text.value == "2 of 6 ended (1 pruned, 0 failed), 1 running, 3 left; about 18 s left"
    lines = StudyProgress(study, n_trials=6, workers=2, every=3600, mode="lines")
    lines.close()
    assert capsys.readouterr().out.splitlines()[-1] == "progress: " + text.value


def test_a_worker_waiting_for_a_silent_trial_says_for_how_long(tmp_path):
    from nbkit.core.study_workers import _waiting_lines

    spec = StudySpec.from_dict(spec_dict(tmp_path, heartbeat_interval=1, grace_period=30))
    study = prepare_study(spec)
    trial_id = study._pop_waiting_trial_id()
    study._storage.record_heartbeat(trial_id)  # a worker took it, beat once, and went silent
    assert _waiting_lines(study, spec, set()) == []  # one beat ago: alive
    time.sleep(3.5)  # past 2 heartbeat intervals even on a clock of whole seconds (SQLite's CURRENT_TIMESTAMP)
    told = set()
    lines = _waiting_lines(study, spec, told)
    assert len(lines) == 1 and lines[0].startswith("waiting for trial 0: its worker has sent no heartbeat for")
    assert "grace_period=30 s" in lines[0]
    left = int(re.search(r"about (\d+) s more", lines[0]).group(1))
    assert 25 <= left <= 27
    assert _waiting_lines(study, spec, told) == []  # said once


def _taken_for_dead_then(action):
    """An objective during which another worker takes the trial for dead (fails it, queues its retry, as
    fail_stale_trials does), then `action` happens in this worker."""
    def objective(trial, spec):
        other = optuna.load_study(study_name=trial.study.study_name, storage=spec.storage)
        other.tell(trial.number, state=TrialState.FAIL)
        other.enqueue_trial(dict(trial.params))
        action(trial)
    return objective


@pytest.mark.parametrize("action", ["writes to the trial", "raises"])
def test_a_trial_taken_for_dead_meanwhile_is_dropped_in_one_line(tmp_path, action):
    from nbkit.core.study_workers import finish, take_trial, worker_study

    spec = StudySpec.from_dict(spec_dict(tmp_path))
    prepare_study(spec)
    study = worker_study(spec)
    trial = take_trial(study, spec)
    then = (lambda t: t.set_user_attr("run_dir", "x")) if action == "writes to the trial" else \
        (lambda t: (_ for _ in ()).throw(RuntimeError("a failure after the fact")))
    line = finish(study, trial, _taken_for_dead_then(then), spec)
    assert line == (f"trial {trial.number}: taken for dead (no heartbeat for {spec.grace_period} s) and retried; "
                    "this result is dropped")
    assert study.trials[trial.number].state == TrialState.FAIL and "error" not in study.trials[trial.number].user_attrs


def test_ctrl_c_on_a_trial_taken_for_dead_queues_no_second_copy(tmp_path):
    from nbkit.core.study_workers import finish, take_trial, worker_study

    spec = StudySpec.from_dict(spec_dict(tmp_path))
    prepare_study(spec)
    study = worker_study(spec)
    trial = take_trial(study, spec)
    with pytest.raises(KeyboardInterrupt):
        finish(study, trial, _taken_for_dead_then(lambda t: (_ for _ in ()).throw(KeyboardInterrupt)), spec)
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    assert len(waiting) == 2  # the other grid point and the one retry the other worker queued, not a third


def test_a_studys_lines_speak_chinese():
    """The real catalogue (nbkit/locale/zh_CN/LC_MESSAGES/nbkit.po): progress, the summary, the interruption."""
    from nbkit.core.i18n import set_language
    from nbkit.core.study import StudyProgress, quiet_create_study
    from nbkit.core.study_workers import describe, interrupted_line

    study = quiet_create_study(study_name="zh_demo")
    study.enqueue_trial({})
    progress = StudyProgress(study, n_trials=6, workers=2, every=3600, mode="lines")
    set_language("zh")
    try:
        c = dict(ended=2, pruned=1, failed=0, running=1, left=3, eta_s=17.5)
        assert progress.text(c) == "6 个中已结束 2 个（1 个被剪枝，0 个失败），1 个运行中，3 个待运行；大约还剩 18 s"
        assert describe(study).splitlines() == ["研究 zh_demo：1 WAITING",
                                                "最佳：无（没有试验以有限的验证损失完成）"]
        assert interrupted_line(study).startswith("已中断：研究 'zh_demo' 中保留了 0 个已结束的试验（0 个 COMPLETE，")
    finally:
        set_language("en")
        progress.done.set()
