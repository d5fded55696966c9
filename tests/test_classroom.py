"""A class (nbkit.core.classroom): a study whose queue is the room's design, seats taken by name, each
configuration trained once with its student's name on it, a student's own runs kept outside the design, and bad
input refused with a message that names it, nothing written. On a real SQLite storage and tiny seconds-long
runs; the class spec, the command line and the dashboard are in tests/test_workshop.py, the panel's Class row
in tests/test_ui.py, the board in tests/test_board.py, many student processes in tests/test_classroom_load.py."""
import json
import multiprocessing
import threading
import time

import optuna
import pytest

from conftest import tiny_config
from nbkit import train
from nbkit.core.callbacks import STEP
from nbkit.core.classroom import class_counts, class_runs, create_class, join_class, open_class, students
from nbkit.core.study import StudyError, prepare_study
from study_helpers import GRID, TINY, class_spec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

def seat(tmp_path, student, identity=None, name="lr101"):
    return join_class(name, f"sqlite:///{tmp_path}/class.db", student, identity=identity or f"{student}@laptop",
                      output_dir=str(tmp_path / "runs"))


def study_names(tmp_path) -> list[str]:
    return sorted(optuna.study.get_all_study_names(f"sqlite:///{tmp_path}/class.db"))


def test_students_take_each_configuration_once_with_their_names(tmp_path):
    create_class(class_spec(tmp_path), "01_learning_rate")
    ana, bo = seat(tmp_path, "ana"), seat(tmp_path, "bo")
    first, second = ana.take_next(), bo.take_next()
    assert first.number != second.number and ana.params(first) != bo.params(second)
    assert class_counts(ana.study)["running_by"] == {first.number: "ana", second.number: "bo"}
    ran = {"ana": [ana.run(first)[0]], "bo": [bo.run(second)[0]]}
    third = ana.take_next()
    ran["ana"].append(ana.run(third)[0])
    assert ana.take_next() is None and bo.take_next() is None  # the design is done: nothing is trained twice
    rows = class_runs(open_class("lr101", f"sqlite:///{tmp_path}/class.db"))
    assert sorted(r["params"]["learning_rate"] for r in rows) == GRID
    for row in rows:
        run = next(r for r in ran[row["student"]] if r.config["learning_rate"] == row["params"]["learning_rate"])
        assert row["kind"] == "design" and row["state"] == "COMPLETE" and row["run_status"] == run.status
        assert row["value"] == pytest.approx(run.epochs.loc[run.epochs.epoch >= 1, "eval_loss"].min())
        assert row["curve"] == pytest.approx(dict(zip(run.epochs.epoch[run.epochs.epoch >= 1],
                                                      run.epochs.eval_loss[run.epochs.epoch >= 1])))
        assert str(run.path).startswith(str(tmp_path / "runs" / "classes" / "lr101" / row["student"]))
    assert class_counts(ana.study) | {"running_by": None} == {"done": 3, "running": 0, "free": 0, "failed": 0,
                                                              "running_by": None, "configurations": 3}
    assert students(ana.study) == ["ana", "bo"]


def test_a_students_own_runs_are_kept_outside_the_design(tmp_path):
    create_class(class_spec(tmp_path), "01_learning_rate")
    ana = seat(tmp_path, "ana")
    at_budget = train(tiny_config(tmp_path / "own", **{**TINY, "learning_rate": 5e-3}))
    longer = train(tiny_config(tmp_path / "own", **{**TINY, "learning_rate": 5e-3, "num_train_epochs": 2}))
    ana.record_own(at_budget)
    ana.record_own(longer)
    own = [r for r in class_runs(ana.study) if r["kind"] == "own"]
    assert [r["student"] for r in own] == ["ana", "ana"]
    assert [r["params"] for r in own] == [{"learning_rate": 5e-3}] * 2
    assert own[0]["differs"] == {} and own[1]["differs"] == {"num_train_epochs": 2}
    assert own[1]["value"] == pytest.approx(longer.epochs.loc[longer.epochs.epoch >= 1, "eval_loss"].min())
    # the design is untouched: three free configurations, and re-creating the class adds none
    assert class_counts(ana.study)["free"] == 3
    assert len(prepare_study(class_spec(tmp_path)).trials) == 3


def test_a_name_is_taken_once_per_class_and_the_same_person_gets_the_seat_back(tmp_path):
    create_class(class_spec(tmp_path), "01_learning_rate")
    create_class(class_spec(tmp_path, name="lr102"), "01_learning_rate")
    seat(tmp_path, "ana", identity="ana@laptop-1")
    with pytest.raises(StudyError, match=r"student='ana' is already taken in class 'lr101'.*ana@laptop-1.*another"):
        seat(tmp_path, "ana", identity="someone@laptop-2")
    assert seat(tmp_path, "ana", identity="ana@laptop-1").student == "ana"  # a restarted kernel: the same seat
    assert seat(tmp_path, "ana", identity="someone@laptop-2", name="lr102").name == "lr102"  # another class
    assert students(open_class("lr101", f"sqlite:///{tmp_path}/class.db")) == ["ana"]


def _claim(url, identity, start, results):
    start.wait()
    try:
        join_class("lr101", url, "ana", identity=identity)
        results.put(identity)
    except StudyError as err:
        results.put(f"refused: {err}")


def test_processes_claiming_one_name_at_once_one_gets_it(tmp_path):
    create_class(class_spec(tmp_path), "01_learning_rate")
    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    url = f"sqlite:///{tmp_path}/class.db"
    claims = [context.Process(target=_claim, args=(url, f"laptop-{i}", start, results)) for i in range(4)]
    for process in claims:
        process.start()
    time.sleep(3)  # every process has imported and waits at the start line
    start.set()
    answers = [results.get(timeout=60) for _ in claims]
    for process in claims:
        process.join(30)
    winners = [a for a in answers if not a.startswith("refused")]
    assert len(winners) == 1, answers
    assert all("already taken" in a for a in answers if a.startswith("refused")), answers


def test_stop_gives_the_configuration_back_to_the_class(tmp_path):
    create_class(class_spec(tmp_path), "01_learning_rate")
    ana, bo = seat(tmp_path, "ana"), seat(tmp_path, "bo")
    trial = ana.take_next()
    params = ana.params(trial)
    stop = threading.Event()
    with pytest.raises(KeyboardInterrupt):
        ana.run(trial, callbacks=[lambda event, data: stop.set() if event == STEP else None], stop_event=stop)
    assert class_counts(ana.study)["free"] == 3  # queued again, with its params
    assert class_runs(ana.study) == []  # a stopped run is not one of the class's runs
    taken = [bo.take_next() for _ in range(3)]
    assert sorted(bo.params(t)["learning_rate"] for t in taken) == GRID and params in [bo.params(t) for t in taken]


def test_a_trial_that_raises_is_shown_failed_and_the_class_goes_on(tmp_path):
    data = tmp_path / "missing.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"{i}+1", "input": "", "output": str(i + 1)}) + "\n"
                            for i in range(40)))
    create_class(class_spec(tmp_path, base={**TINY, "dataset": str(data)}), "01_learning_rate")
    data.unlink()  # the class's data file went away after the class was made: every trial now raises
    ana = seat(tmp_path, "ana")
    run, line = ana.run(ana.take_next())
    assert run is None and "FAIL" in line and "missing.jsonl" in line
    rows = class_runs(ana.study)
    assert [(r["student"], r["state"]) for r in rows] == [("ana", "FAIL")]
    assert ana.take_next() is not None


# ---------------------------------------------------------------- bad input: a message that names it, nothing written

@pytest.mark.parametrize("name, storage, student, says", [
    ("lr1", "{db}", "ana", "class 'lr1' is not a class in sqlite:///.*; classes there: lr101"),
    ("plain", "{db}", "ana", "class 'plain' is a study, not a class"),
    ("lr101", "sqlite:///{tmp}/other.db", "ana", "no such file .*other.db"),
    ("lr101", "mysql://host/db", "ana", "storage='mysql://host/db': 'mysql' is not supported; allowed"),
    ("lr101", "postgresql+psycopg2://nobody@127.0.0.1:1/class", "ana", "cannot be reached"),
    ("lr101", "{db}", "", "student='' is not a name"),
    ("lr101", "{db}", 7, "student=7 is not a name"),
    ("lr101", "{db}", "a/b", "student='a/b': allowed: up to 40 printable characters without '/'"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, name, storage, student, says):
    create_class(class_spec(tmp_path), "01_learning_rate")
    prepare_study(class_spec(tmp_path, name="plain"))  # a study that is not a class
    before = study_names(tmp_path)
    storage = storage.format(db=f"sqlite:///{tmp_path}/class.db", tmp=tmp_path)
    with pytest.raises(StudyError, match=says):
        join_class(name, storage, student)
    assert study_names(tmp_path) == before
    assert not (tmp_path / "other.db").exists()


def test_the_class_lines_and_errors_read_in_chinese():
    """In Chinese (nbkit/locale/zh_CN/LC_MESSAGES/nbkit.po): the counts a student and the board read, who runs
    which, and a bad student name; the data keys stay English."""
    from types import SimpleNamespace

    from nbkit.core.classroom import check_student, counts_line, running_line
    from nbkit.core.i18n import set_language

    counts = {"done": 1, "running": 1, "free": 1, "failed": 0, "running_by": {2: "ana"}, "configurations": 3}
    set_language("zh")
    try:
        assert counts_line(SimpleNamespace(study_name="lr101"), counts) == (
            "课堂 lr101：3 个配置中已完成 1 个，运行中 1 个，空闲 1 个，失败 0 个")
        assert running_line(counts) == "运行中：2 (ana)"
        with pytest.raises(StudyError, match="student='' 不是一个名字"):
            check_student("")
    finally:
        set_language("en")
    assert running_line(counts) == "running: 2 (ana)"
