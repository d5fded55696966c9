"""A class: a workshop's shared experiment. The class is an Optuna study (nbkit.core.study) whose queue of
WAITING trials is the set of configurations the room trains; a student's "Train next" takes one exactly as a
study worker does, so the queue, the heartbeat and the retry of a dead student's trial are the studies' own.

    study = create_class(spec, chapter="01_learning_rate")      # the instructor (YAML: nbkit.interfaces.workshop)
    seat = join_class("lr101", "sqlite:///class.db", "ana")      # a student takes a seat
    trial = seat.take_next()                   # the next free configuration, now RUNNING, with ana's name on it
    run, line = seat.run(trial, callbacks=[...], stop_event=...)  # trained, its result told to the class
    seat.record_own(run)                       # a run with ana's own values: kept in the class, outside the design
    seat.work()                                # a terminal student: take and train until the design is done
    class_runs(study)                          # every run of the class, a row each: what the board draws

A student's name is taken once per class: joining creates a small study of its own, "<class>/students/<name>",
and the database's unique study name makes that atomic (two laptops claiming "ana" in the same instant: one
gets it). The same person joining again (same user on the same machine, or the same `identity`) gets the
seat back. That study also holds the student's own runs, so a class is one storage and nothing else.
"""

from __future__ import annotations

import dataclasses
import getpass
import math
import socket
import time

import optuna
import pandas as pd
from optuna.trial import TrialState

from nbkit.core import optuna_private
from nbkit.core.config import TrainConfig
from nbkit.core.i18n import _
from nbkit.core.runs import NOT_KNOBS, Run, format_value, load_run
from nbkit.core.study import best_value, prepare_for_workers, suggest, trial_params
from nbkit.core.study_spec import SPEC_ATTR, StudyError, StudySpec, _canonical, _shown, quiet_create_study
from nbkit.core.study_storage import check_stored, open_storage
from nbkit.core.study_trials import train_trial, trial_config
from nbkit.core.study_workers import finish, take_trial, work, worker_study

CLASS_ATTR = "nbkit_class"  # a class study's user attr: {"chapter": ...}; what tells a class from a study
STUDENTS = "/students/"  # a student's study is "<class>/students/<name>"
MAX_NAME = 40  # characters of a student's name: enough for a full name, short enough for a leaderboard
# A student's training runs at the lowest CPU priority (`class join --nice`, the hub's students' servers): 30 students
# on a 2-core hub at the usual priority left the instructor's board a 31st of the CPU (a finished run took 22 s to
# show, median; bench/classroom_load.py). At nice 10 (a ninth of the board's weight each) 15 students on a core still
# outweighed it: its drawing ran 2-10x slower than its CPU time. At 19 (1/68 each) the board gets most of a core
# when it draws; a student alone on a laptop loses nothing, the CPU is theirs whatever the priority.
STUDENT_NICE = 19


def create_class(spec: StudySpec, chapter: str) -> optuna.Study:
    """Create the class (or open it again: the same spec resumes it, as `study run` does) and fill its queue
    with the design's configurations. `chapter`: the notebook whose panel the students use."""
    if STUDENTS in spec.study_name:
        raise StudyError(_("study_name={name!r}: a class name may not contain {part!r} between slashes; allowed: a "
                           "name such as 'lr101'").format(name=spec.study_name, part=STUDENTS.strip("/")))
    spec = dataclasses.replace(spec, output_dir=None)  # each student's runs go to their own disk (Seat)
    study = prepare_for_workers(spec)[0]
    study.set_user_attr(CLASS_ATTR, {"chapter": chapter})
    return study


def check_student(student) -> str:
    """A student's name as given, stripped; a StudyError naming the field otherwise."""
    if not isinstance(student, str) or not student.strip():
        raise StudyError(_("student={student!r} is not a name; allowed: a non-empty name such as 'ana'").format(
            student=student))
    student = student.strip()
    if len(student) > MAX_NAME or "/" in student or not student.isprintable():
        raise StudyError(_("student={student!r}: allowed: up to {n} printable characters without '/'").format(
            student=student, n=MAX_NAME))
    return student


def default_identity() -> str:
    """Who is joining: the user on this machine. A JupyterHub gives each student a user (or a machine) of
    their own, a room of laptops a machine each."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def open_class(name: str, storage: str, read_only: bool = False) -> optuna.Study:
    """The class `name` in `storage`; a StudyError naming the classes there when it is not one. read_only: for
    a board, which only reads (nbkit.core.study_storage.open_storage)."""
    check_stored(storage)
    opened = open_storage(storage, read_only=read_only)
    studies = {s.study_name: s for s in optuna.study.get_all_study_summaries(opened, include_best_trial=False)}
    if name not in studies or CLASS_ATTR not in studies[name].user_attrs:
        classes = sorted(n for n, s in studies.items() if CLASS_ATTR in s.user_attrs)
        message = (_("class {name!r} is a study, not a class in {storage}; classes there: {classes}") if name in studies
                   else _("class {name!r} is not a class in {storage}; classes there: {classes}"))
        raise StudyError(message.format(name=name, storage=_shown(storage), classes=", ".join(classes) or _("none")))
    return optuna.load_study(study_name=name, storage=opened)


def join_class(name: str, storage: str, student: str, identity: str | None = None,
               output_dir: str = "runs") -> "Seat":
    """Take a seat in class `name` as `student`; the student's runs go to <output_dir>/classes/<name>/<student>.
    A name another person holds in this class is refused (StudyError); the same identity gets its seat back."""
    student = check_student(student)
    identity = identity or default_identity()
    study = open_class(name, storage)
    spec = StudySpec.from_dict({k: v for k, v in study.user_attrs[SPEC_ATTR].items() if k != "n_trials"})
    spec = dataclasses.replace(spec, storage=storage, output_dir=f"{output_dir}/classes/{name}/{student}")
    own = _register(study, student, identity)
    return Seat(name=name, student=student, spec=spec, chapter=study.user_attrs[CLASS_ATTR]["chapter"],
                study=worker_study(spec), own=own)


def _register(study: optuna.Study, student: str, identity: str) -> optuna.Study:
    """The student's study: created now (the name is ours), or found with our identity (our seat again)."""
    name = f"{study.study_name}{STUDENTS}{student}"
    storage = study._storage
    try:
        own = quiet_create_study(study_name=name, storage=storage)
    except optuna.exceptions.DuplicatedStudyError:
        own = optuna.load_study(study_name=name, storage=storage)
        holder = own.user_attrs.get("identity")
        if holder != identity:
            since = time.strftime("%H:%M", time.localtime(own.user_attrs.get("joined_at", 0)))
            message = _("student={student!r} is already taken in class {name!r} (since {since}, by {holder}); "
                        "allowed: another name")
            raise StudyError(message.format(student=student, name=study.study_name, since=since,
                                            holder=holder or _("someone joining right now"))) from None
        return own
    own.set_user_attr("identity", identity)
    own.set_user_attr("joined_at", time.time())
    return own


@dataclasses.dataclass
class Seat:
    """A student's place in a class: take the next configuration, train it, record one's own runs."""
    name: str  # the class
    student: str
    spec: StudySpec  # the class's spec, with this student's storage URL and output folder
    chapter: str  # the notebook whose panel the class uses
    study: optuna.Study  # the class study, opened as a worker opens it
    own: optuna.Study  # the student's study: their own runs, outside the design

    def take_next(self) -> optuna.Trial | None:
        """The next free configuration, now RUNNING with this student's name on it; None when none is free."""
        return take_trial(self.study, self.spec, self.student)

    def params(self, trial: optuna.Trial) -> dict:
        """The configuration's values of the class's knobs."""
        return suggest(trial, self.spec)

    def config(self, trial: optuna.Trial):
        """The TrainConfig the trial trains with (nbkit.core.study_trials.trial_config)."""
        return trial_config(trial.number, self.params(trial), self.spec)

    def run(self, trial: optuna.Trial, callbacks=(), stop_event=None) -> tuple[Run | None, str]:
        """Train the trial under the class's heartbeat and tell the class its result: (its Run, a line saying
        how it went). Stopped by `stop_event`: the trial is queued again for the class and KeyboardInterrupt
        is raised (as a study worker's Ctrl-C)."""
        def objective(trial, spec):
            return train_trial(trial, spec, callbacks=callbacks, stop_event=stop_event)

        line = finish(self.study, trial, objective, self.spec)
        run_dir = optuna_private.stored_trial(self.study, trial.number).user_attrs.get("run_dir")
        return (load_run(run_dir) if run_dir else None), line

    def record_own(self, run: Run) -> None:
        """Keep a run the student trained with their own values in the class, outside the design: a trial of
        the student's study with the run's best validation loss, its curve, and the values it used."""
        if run.status in ("running", "interrupted", "incomplete"):
            return  # nothing to compare yet
        value = math.inf if run.status == "diverged" else best_value(run)
        curve = {int(e): float(v) for e, v in zip(run.epochs["epoch"], run.epochs["eval_loss"])
                 if e >= 1 and math.isfinite(v)} if run.epochs is not None and not run.epochs.empty else {}
        self.own.add_trial(optuna.trial.create_trial(
            state=TrialState.COMPLETE, value=value, intermediate_values=curve,
            user_attrs={"student": self.student, "run_dir": str(run.path), "run_status": run.status,
                        "params": {k: run.config.get(k) for k in self.spec.knobs},
                        "differs": differs_from_class(run.config, self.spec)}))

    def counts(self) -> dict:
        return class_counts(self.study)

    def work(self, progress: bool = True, max_runs: int | None = None) -> int:
        """A terminal student: take and train configurations until none is free and none is running (or
        `max_runs` are trained: a student who has to leave early)."""
        return work(self.spec.to_dict(), progress=progress, student=self.student, max_trials=max_runs)


def differs_from_class(config: dict, spec: StudySpec) -> dict:
    """{field: value} of a run's config that differ from what the class holds fixed (its knobs and where runs
    go aside): empty when the run is at the class's budget and differs only in the knobs the class varies."""
    held = TrainConfig.from_dict(spec.held()).to_dict()
    return {k: config[k] for k, v in held.items()
            if k not in NOT_KNOBS and k not in spec.knobs and k in config and _canonical(config[k]) != _canonical(v)}


def class_counts(study: optuna.Study, trials=None) -> dict:
    """How many configurations are done, running and free, and who runs which. `trials`: the class study's
    trials when already read (a board reads them once a look, for its counts and its rows)."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    states = [t.state for t in trials]
    running = {t.number: t.user_attrs.get("student", "?") for t in trials if t.state == TrialState.RUNNING}
    return {"done": sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states),
            "running": len(running), "free": states.count(TrialState.WAITING),
            "failed": states.count(TrialState.FAIL), "running_by": running,
            "configurations": study.user_attrs.get(SPEC_ATTR, {}).get("n_trials")}


def student_studies(study: optuna.Study) -> list:
    """The students' studies of the class (optuna FrozenStudy: name, user attrs), in the order they joined.
    One read of the storage's study list, whatever the number of students: a board does it every second."""
    prefix = f"{study.study_name}{STUDENTS}"
    found = [s for s in study._storage.get_all_studies() if s.study_name.startswith(prefix)]
    return sorted(found, key=lambda s: s.user_attrs.get("joined_at", 0))


def students(study: optuna.Study) -> list[str]:
    prefix = f"{study.study_name}{STUDENTS}"
    return [s.study_name[len(prefix):] for s in student_studies(study)]


def class_runs(study: optuna.Study, trials=None) -> list[dict]:
    """Every run of the class, a dict each, design trials first: trial, student, kind ("design" or "own"),
    state, run_status, value (best validation loss; inf if diverged; None while running), best_epoch, params
    (the class's knobs), differs (own runs: what else they changed), curve ({epoch: eval_loss}, read from the
    database, so a board sees every student's curve whichever machine trained it), finished (a timestamp).
    `trials`: the class study's trials when already read."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    rows = [_row(t, "design", trial_params(t)) for t in trials if _shown_trial(t)]
    for own in student_studies(study):
        rows += [_row(t, "own", t.user_attrs.get("params", {})) for t in optuna_private.frozen_study_trials(study, own)]
    return rows


def _shown_trial(trial) -> bool:
    """A trial that is a run to show: not a free configuration, and not one whose student stopped it or left
    (interrupted, or failed for want of a heartbeat: it is queued again as it was). One that raised is shown."""
    if trial.state == TrialState.WAITING:
        return False
    return trial.state != TrialState.FAIL or trial.user_attrs.get("error", "interrupted") != "interrupted"


def _row(trial, kind: str, params: dict) -> dict:
    curve = {int(k): float(v) for k, v in sorted(trial.intermediate_values.items())}
    finite = {e: v for e, v in curve.items() if math.isfinite(v)}
    status = trial.user_attrs.get("run_status") or trial.state.name.lower()
    return {"trial": trial.number, "student": trial.user_attrs.get("student", ""), "kind": kind,
            "state": trial.state.name, "run_status": status, "value": trial.value,
            "best_epoch": min(finite, key=finite.get) if finite else None, "params": dict(params),
            "differs": trial.user_attrs.get("differs", {}), "curve": curve,
            "finished": trial.datetime_complete.timestamp() if trial.datetime_complete else None}


# ---------------------------------------------------------------- the instructor's board: its tables
# Pure functions of the class study or of class_runs' rows; nbkit.views.board draws them, `class board` prints them.

RANKED_STATES = ("COMPLETE",)  # a pruned trial stopped short of the budget: it is counted done, never ranked
BOARD_TOP = 10  # leaderboard rows in board_lines: a terminal screen with the counts and the lists under it


def class_knobs(study: optuna.Study) -> list[str]:
    """The class's searched knobs, scientific first (the columns every board table shows)."""
    spec = study.user_attrs.get(SPEC_ATTR, {})
    return list(spec.get("scientific", {})) + list(spec.get("nuisance", {}))


def class_budget(study: optuna.Study) -> dict:
    """{field: value} of how long every design run trains (num_train_epochs, and max_steps when it is set):
    the budget the leaderboard ranks at."""
    held = TrainConfig.from_dict({k: v for k, v in _held_of(study).items() if k not in NOT_KNOBS})
    budget = {"num_train_epochs": held.num_train_epochs}
    if held.max_steps != -1:  # -1: off, the epochs decide
        budget["max_steps"] = held.max_steps
    return budget


def _held_of(study: optuna.Study) -> dict:
    spec = study.user_attrs.get(SPEC_ATTR, {})
    return {**spec.get("base", {}), **spec.get("fixed", {})}


def _knobs_of(rows: list[dict], knobs) -> list[str]:
    """The knobs given, else every param the rows have, in the order they first appear."""
    if knobs is not None:
        return list(knobs)
    return list(dict.fromkeys(k for row in rows for k in row["params"]))


def is_diverged(row: dict) -> bool:
    """A run that blew up: its run says so, or the class recorded it as inf."""
    return row["run_status"] == "diverged" or (row["value"] is not None and math.isinf(row["value"]))


def is_ranked(row: dict) -> bool:
    """On the leaderboard: finished, a finite validation loss, and at the class's budget (design runs, and own
    runs that differ from the class only in its knobs)."""
    return (row["state"] in RANKED_STATES and not is_diverged(row) and row["value"] is not None
            and math.isfinite(row["value"]) and not row["differs"])


def changes_text(differs: dict) -> str:
    """'num_train_epochs=2, seed=7': what an own run changed besides the class's knobs."""
    return ", ".join(f"{k}={format_value(v)}" for k, v in differs.items())


def _table(rows: list[dict], knobs: list[str], columns: list[str]) -> pd.DataFrame:
    """One board table: student and kind, the knob values, then `columns` (from each row, or computed)."""
    computed = {"best_eval_loss": lambda r: r["value"], "status": lambda r: r["run_status"],
                "changed": lambda r: changes_text(r["differs"])}
    records = [{"student": r["student"], "kind": r["kind"], **{k: r["params"].get(k) for k in knobs},
                **{c: computed[c](r) if c in computed else r[c] for c in columns}} for r in rows]
    return pd.DataFrame(records, columns=["student", "kind", *knobs, *columns])


def leaderboard(rows: list[dict], knobs=None) -> pd.DataFrame:
    """The ranked runs (is_ranked), lowest best validation loss first, ranks 1.. as the index: student, kind
    ("design" or "own"), the knob values, best_eval_loss, best_epoch, status, trial. Ties: the one that
    finished first ranks first."""
    ranked = sorted((r for r in rows if is_ranked(r)), key=lambda r: (r["value"], r["finished"] or math.inf))
    table = _table(ranked, _knobs_of(rows, knobs), ["best_eval_loss", "best_epoch", "status", "trial"])
    table.index = pd.RangeIndex(1, len(table) + 1, name="rank")
    return table


def diverged_runs(rows: list[dict], knobs=None) -> pd.DataFrame:
    """The runs that diverged, by name, never ranked: student, kind, the knob values, what an own run changed
    besides them, trial."""
    return _table([r for r in rows if is_diverged(r)], _knobs_of(rows, knobs), ["changed", "trial"])


def outside_budget(rows: list[dict], knobs=None) -> pd.DataFrame:
    """Students' own runs that changed more than the class's knobs (another budget, another seed...), not
    ranked with the design's: student, the knob values, what they changed, best_eval_loss, best_epoch, status."""
    other = [r for r in rows if r["kind"] == "own" and r["differs"] and not is_diverged(r)]
    table = _table(other, _knobs_of(rows, knobs), ["changed", "best_eval_loss", "best_epoch", "status", "trial"])
    return table.drop(columns="kind")


def board_fingerprint(rows: list[dict], counts: dict) -> tuple:
    """What the board shows, in a form cheap to compare: the board redraws only when this changes (a trial
    taken, an epoch reported, a run finished, an own run recorded, a student leaving)."""
    runs = tuple((r["kind"], r["student"], r["trial"], r["state"], r["run_status"], r["value"], len(r["curve"]))
                 for r in rows)
    return runs, tuple((k, counts[k]) for k in ("done", "running", "free", "failed")), \
        tuple(sorted(counts["running_by"].items()))


def counts_line(study: optuna.Study, counts: dict | None = None) -> str:
    """'class lr101: 3 of 28 configurations done, 2 running, 23 free, 0 failed'."""
    c = counts or class_counts(study)
    total = c["configurations"] if c["configurations"] is not None else "?"
    return _("class {name}: {done} of {total} configurations done, {running} running, {free} free, "
             "{failed} failed").format(name=study.study_name, done=c["done"], total=total, running=c["running"],
                                       free=c["free"], failed=c["failed"])


def running_line(counts: dict) -> str | None:
    """'running: 3 (ana), 5 (bo)': who runs which configuration; None when nobody does."""
    if not counts["running_by"]:
        return None
    runs = ", ".join(f"{n} ({who})" for n, who in sorted(counts["running_by"].items()))
    return _("running: {runs}").format(runs=runs)


def budget_text(study: optuna.Study) -> str:
    return ", ".join(f"{k}={v}" for k, v in class_budget(study).items())


def board_lines(study: optuna.Study, top: int = BOARD_TOP) -> list[str]:
    """The board in words, for a terminal: the counts and who runs which, the leaderboard's top rows, the runs
    that diverged by name, and the own runs outside the class's budget with what they changed."""
    rows, counts, knobs = class_runs(study), class_counts(study), class_knobs(study)
    lines = [counts_line(study, counts)] + [line for line in [running_line(counts)] if line]
    board = leaderboard(rows, knobs)
    heading = (_("leaderboard: best validation loss at the class's budget ({budget}), {n} ranked, top {top}")
               if len(board) > top else _("leaderboard: best validation loss at the class's budget ({budget}), "
                                          "{n} ranked"))
    lines.append(heading.format(budget=budget_text(study), n=len(board), top=top))
    width = max([len(_who(r)) for _rank, r in board.head(top).iterrows()], default=0)  # names in a column
    lines += [_("{rank:>4}. {who:<{width}}  {values}  {loss:.4g} at epoch {epoch}  {status}").format(
        rank=rank, who=_who(r), width=width, values=_values(r, knobs), loss=r["best_eval_loss"],
        epoch=_epoch(r["best_epoch"]), status=r["status"]) for rank, r in board.head(top).iterrows()]
    if board.empty:
        lines.append("      " + _("no finished run yet"))
    diverged = diverged_runs(rows, knobs)
    if not diverged.empty:
        lines.append(_("diverged (not ranked): {runs}").format(runs="; ".join(
            _("{who} {values}, changed {changes}").format(who=_who(r), values=_values(r, knobs), changes=r["changed"])
            if r["changed"] else f"{_who(r)} {_values(r, knobs)}" for _index, r in diverged.iterrows())))
    other = outside_budget(rows, knobs)
    if not other.empty:
        lines.append(_("own runs outside the class's budget (not ranked): {runs}").format(runs="; ".join(
            _("{student} {values}, changed {changes}: {loss}").format(
                student=r["student"], values=_values(r, knobs), changes=r["changed"], loss=_loss(r["best_eval_loss"]))
            for _index, r in other.iterrows())))
    return lines


def _who(row) -> str:
    return _("{student} (own)").format(student=row["student"]) if row.get("kind") == "own" else row["student"]


def _values(row, knobs) -> str:
    return ", ".join(f"{k}={format_value(row[k])}" for k in knobs)


def _epoch(epoch) -> str:
    return "?" if epoch is None or (isinstance(epoch, float) and math.isnan(epoch)) else str(int(epoch))


def _loss(value) -> str:
    return _("no loss yet") if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"
