"""A class under load and faults, as a room runs it: students as separate processes (`python -m nbkit class join`,
the terminal student) on one class in SQLite and in PostgreSQL, each training tiny runs until the design is done,
the instructor's terminal board reading while they write. Every configuration is taken exactly once, every run
carries its student's name, none is lost, and no "database is locked" reaches a student. A student killed
mid-run: their configuration goes back after the heartbeat's grace period and another student trains it.

CI runs 4 students; the 30-student room is `make test-classroom-load` (part of `make test-all`)."""
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from optuna.trial import TrialState

from nbkit.core.classroom import class_runs, create_class, open_class, students
from nbkit.core.study import StudySpec
from study_helpers import TINY

WAIT = 900  # seconds for a whole room on 2 shared cores; a tiny run itself takes about one


def make_class(name, storage, learning_rates, warmups=(0.0, 0.1), **kw):
    # a room's heartbeat as a real class has it (nbkit's defaults: a beat every 10 s, dead after 60 s): 30 processes
    # on 2 cores starve a heartbeat thread for seconds, and a grace of 3 s takes busy students for dead
    d = dict(study_name=name, base=dict(TINY), sampler="grid", storage=storage,
             scientific={"learning_rate": list(learning_rates), "warmup_ratio": list(warmups)})
    d.update(kw)
    return create_class(StudySpec.from_dict(d), "01_learning_rate")


def nbkit(args, tmp_path, log):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # 1 thread a student: many processes share 2 cores
    return subprocess.Popen([sys.executable, "-m", "nbkit", *args], cwd=tmp_path, env=env, text=True,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)


def student(name, storage, who, tmp_path):
    return nbkit(["class", "join", name, "--storage", storage, "--student", who, "--threads", "1",
                  "--output-dir", str(tmp_path / "runs" / who)], tmp_path, tmp_path / f"{who}.log")


def board(name, storage, tmp_path):
    return nbkit(["class", "board", name, "--storage", storage, "--every", "0.5", "--plots", str(tmp_path / "board")],
                 tmp_path, tmp_path / "board.log")


def ended(process, log) -> str:
    try:
        process.wait(WAIT)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return log.read_text()


def assert_room_ran_the_design(study, names, outputs):
    """Every configuration COMPLETE exactly once, each with a student's name, nothing lost, no locked database."""
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    grid = StudySpec.from_dict({k: v for k, v in study.user_attrs["nbkit_spec"].items() if k != "n_trials"})
    assert sorted(tuple(sorted(t.params.items())) for t in done) == \
        sorted(tuple(sorted(p.items())) for p in grid.grid_points())
    assert all(t.user_attrs.get("student") in names for t in done)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    rows = class_runs(study)
    assert len(rows) == len(done) and all(r["student"] in names for r in rows)
    assert all(r["curve"] for r in rows if r["run_status"] != "diverged")  # a diverged run has no finite loss
    assert sorted(students(study)) == sorted(names)
    for who, text in outputs.items():
        assert "database is locked" not in text and "Traceback" not in text, (who, text[-3000:])


def run_room(tmp_path, storage, name, n_students, learning_rates):
    study = make_class(name, storage, learning_rates)
    names = [f"student{i:02d}" for i in range(n_students)]
    room = {who: student(name, storage, who, tmp_path) for who in names}
    watcher = board(name, storage, tmp_path)
    outputs = {who: ended(p, tmp_path / f"{who}.log") for who, p in room.items()}
    outputs["board"] = ended(watcher, tmp_path / "board.log")
    codes = {who: p.returncode for who, p in [*room.items(), ("board", watcher)]}
    assert set(codes.values()) == {0}, {w: (c, outputs[w][-2000:]) for w, c in codes.items() if c}
    study = open_class(name, storage)
    assert_room_ran_the_design(study, names, outputs)
    n = len(study.trials)
    assert f"{n} of {n} configurations done" in outputs["board"].split("---")[-1], outputs["board"][-3000:]
    assert sorted(p.name for p in (tmp_path / "board").glob("*.png"))
    return study


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_four_students_run_a_class_to_its_end(tmp_path, database, request):
    storage = f"sqlite:///{tmp_path}/class.db" if database == "sqlite" else request.getfixturevalue("postgresql_url")
    run_room(tmp_path, storage, f"room4_{database}", 4, [1e-3, 3e-3, 1e-2, 3e-2])


@pytest.mark.classroom_load
@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_thirty_students_run_a_class_to_its_end(tmp_path, database, request):
    storage = f"sqlite:///{tmp_path}/class.db" if database == "sqlite" else request.getfixturevalue("postgresql_url")
    learning_rates = [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 3e-3, 5e-3, 1e-2, 2e-2, 3e-2, 5e-2, 1e-1, 2e-1, 3e-1, 5e-1,
                      7e-1, 1.0, 1.5, 2.0, 3.0]  # 20 x 2 warmups = 40 configurations for 30 students
    run_room(tmp_path, storage, f"room30_{database}", 30, learning_rates)


def test_a_killed_students_configuration_goes_back_and_another_student_trains_it(tmp_path):
    storage = f"sqlite:///{tmp_path}/class.db"
    study = make_class("room_kill", storage, [1e-3, 3e-3], warmups=(0.0,), heartbeat_interval=1, grace_period=3,
                       base={**TINY, "num_train_epochs": 8})  # a run of several seconds: time to kill it mid-run
    ana = student("room_kill", storage, "ana", tmp_path)
    deadline = time.time() + WAIT
    while time.time() < deadline:  # until ana's run has started training
        running = [t for t in open_class("room_kill", storage).trials if t.state == TrialState.RUNNING]
        if running and "run_dir" in running[0].user_attrs:
            break
        assert ana.poll() is None, (tmp_path / "ana.log").read_text()
        time.sleep(0.2)
    os.kill(ana.pid, signal.SIGKILL)
    ana.wait(30)
    lost = running[0]
    bo, watcher = student("room_kill", storage, "bo", tmp_path), board("room_kill", storage, tmp_path)
    bo_says, board_says = ended(bo, tmp_path / "bo.log"), ended(watcher, tmp_path / "board.log")
    assert bo.returncode == 0 and watcher.returncode == 0, (bo_says, board_says)
    study = open_class("room_kill", storage)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["learning_rate"] for t in done) == [1e-3, 3e-3]
    assert Counter(t.user_attrs["student"] for t in done) == {"bo": 2}
    assert study.trials[lost.number].state == TrialState.FAIL  # ana's: taken for dead, its copy trained by bo
    assert [t.system_attrs.get("failed_trial") for t in done].count(lost.number) == 1
    assert [r["student"] for r in class_runs(study)] == ["bo", "bo"]
    assert "Traceback" not in bo_says + board_says
