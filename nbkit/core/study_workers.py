"""Workers and backends: each worker takes queued trials until none is left and none is running, in
this process, in spawned processes or as Ray tasks; run_study runs a study to its end and shows progress.

    run_study(spec, workers=2)        check, create or resume, run every missing trial, print the summary
    work(spec.to_dict())              one worker's loop (what every backend runs)
    summary(study) / describe(study)  counts by state and the best trial, as a dict / text
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import optuna
from optuna.trial import TrialState

from nbkit.core import notices, optuna_private
from nbkit.core.i18n import _, get_language, set_language
from nbkit.core.runs import format_value
from nbkit.core.study_analysis import best_trial
from nbkit.core.study_queue import _queue_again, fix_params, prepare_for_workers
from nbkit.core.study_spec import (BACKENDS, StudySpec, _require_choice, _require_int, as_spec, make_pruner,
                                   make_sampler, pruning_note)
from nbkit.core.study_storage import spec_storage
from nbkit.core.study_trials import check_notebook, notebook_trial, train_trial, trial_line
from nbkit.core.workers import default_workers, exit_with_parent


def worker_study(spec: StudySpec) -> optuna.Study:
    """The study as a worker opens it. Every slot's params are fixed before its trial starts (fix_params
    draws them with the spec's sampler): the study's own sampler never draws, and a neutral one keeps QMC's
    place in its sequence untouched."""
    sampler = make_sampler(spec) if spec.sampler == "grid" else optuna.samplers.RandomSampler(seed=0)
    return optuna.load_study(study_name=spec.study_name, storage=spec_storage(spec), sampler=sampler,
                             pruner=make_pruner(spec))


def take_trial(study: optuna.Study, spec: StudySpec, student: str | None = None) -> optuna.Trial | None:
    """A WAITING trial, now RUNNING and ours, its params fixed (fix_params), or None. A worker never
    creates a trial: the queue was filled before any worker started. In a class (nbkit.core.classroom)
    the trial carries the name of the student who took it (user attr "student")."""
    with notices.optuna_experimental():
        optuna.storages.fail_stale_trials(study)  # a dead worker's trial goes back in the queue first
    number = optuna_private.take_waiting_trial(study)
    if number is None:
        return None
    if spec.sampler != "grid":
        fix_params(study, number, spec)
    trial = optuna_private.running_trial(study, number)
    if student is not None:
        trial.set_user_attr("student", student)
    return trial


def finish(study: optuna.Study, trial: optuna.Trial, objective, spec: StudySpec) -> str:
    """Run the objective under Optuna's heartbeat and tell the result; a line saying how it went. A trial that
    another worker took for dead meanwhile (its heartbeat late by grace_period: a machine so busy that the
    heartbeat thread did not run) is left as that worker left it, FAIL with a retry queued: its result is dropped,
    even when writing to it is what failed."""
    value, state, error = None, TrialState.COMPLETE, None
    with optuna_private.heartbeat(study, trial):
        try:
            value = objective(trial, spec)
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except Exception as err:  # the trial's own failure: recorded, the study goes on
            state, error = TrialState.FAIL, f"{type(err).__name__}: {err}"
        except KeyboardInterrupt:  # stopped by hand: the trial is FAIL and queued again as it was, the loop ends
            if not _taken_for_dead(study, trial):
                trial.set_user_attr("error", "interrupted")
                frozen = study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                _queue_again(study, frozen)
            raise
    dropped = _("trial {number}: taken for dead (no heartbeat for {grace_period} s) and retried; "
                "this result is dropped").format(number=trial.number, grace_period=spec.grace_period)
    if _taken_for_dead(study, trial):
        return dropped
    try:
        if error:
            trial.set_user_attr("error", error[:2000])
        done = study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:  # taken for dead between the look above and the write
        return dropped
    return trial_line(done, error)


def _taken_for_dead(study: optuna.Study, trial: optuna.Trial) -> bool:
    """Finished by someone else while this worker ran it: another worker's fail_stale_trials."""
    return optuna_private.stored_trial(study, trial.number).state.is_finished()


def work(spec_dict: dict, backend: str = "local", worker: int = 0, threads: int | None = None,
         progress: bool = True, student: str | None = None, max_trials: int | None = None) -> int:
    """A worker: take WAITING trials of the study until none is left and none is running (or it has run
    `max_trials`); returns how many it ran. Runs in this process, a spawned process or a Ray task alike; a
    class's terminal student is one too, each trial it takes marked with the student's name."""
    if threads:
        import torch
        torch.set_num_threads(threads)
    spec = StudySpec.from_dict(spec_dict)
    objective = notebook_trial if backend == "papermill" else train_trial
    study = worker_study(spec)
    done, told = 0, set()
    while max_trials is None or done < max_trials:
        trial = take_trial(study, spec, student)
        if trial is None:
            if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                return done
            if progress:
                for line in _waiting_lines(study, spec, told):
                    print(line, flush=True)
            # a running trial may still turn out to be a dead worker's: look again in a second (reading the
            # storage is cheap; sleeping a whole heartbeat_interval kept the last trial's neighbour idle)
            time.sleep(min(1.0, spec.heartbeat_interval))
            continue
        line = finish(study, trial, objective, spec)
        done += 1
        if progress:
            print(line, flush=True)
    return done


def _waiting_lines(study: optuna.Study, spec: StudySpec, told: set) -> list[str]:
    """A line, once per trial, for each RUNNING trial whose worker has missed its heartbeats (a live one
    beats every heartbeat_interval): the queue is empty and this worker waits for it to be taken for
    dead, at most grace_period seconds after its last beat."""
    lines = []
    for number, age in optuna_private.heartbeat_ages(study).items():
        if number not in told and age > 2 * spec.heartbeat_interval:
            told.add(number)
            left = max(0, math.ceil(spec.grace_period - age))
            line = _("waiting for trial {number}: its worker has sent no heartbeat for {age:.0f} s; it is taken "
                     "for dead and queued again after grace_period={grace_period} s (about {left} s more)")
            lines.append(line.format(number=number, age=age, grace_period=spec.grace_period, left=left))
    return lines


def run_study(spec, workers: int | None = None, backend: str = "local", storage: str | None = None,
              ray_address: str | None = None, progress: bool = True) -> optuna.Study:
    """Run a study to the end: spec is a StudySpec, a dict or a YAML path. Checks everything first,
    creates or resumes the study, runs the missing trials on `backend` with `workers` workers
    (default: workers.default_workers, one per core for the tiny model on a CPU, else 1; backend
    "inprocess" or workers=1: in this process), prints a line
    per trial and a summary, and returns the optuna Study."""
    spec = as_spec(spec)
    _require_choice("backend", backend, BACKENDS)
    changes = {"output_dir": str(spec.resolved_output_dir())}
    if storage is not None:
        changes["storage"] = storage
    if spec.notebook:
        changes["notebook"] = str(Path(spec.notebook).resolve())
    spec = dataclasses.replace(spec, **changes)
    spec.check()
    if backend == "papermill":
        check_notebook(spec)
    workers = default_workers(spec.held()) if workers is None else workers
    _require_int("workers", workers, 1)
    study, spec_dict = prepare_for_workers(spec)
    note = pruning_note(spec)
    if note and progress:
        print(_("note: {note}").format(note=note), flush=True)
    board = StudyProgress(study, spec.trial_count(), workers) if progress else None
    try:
        if backend == "ray":
            _run_on_ray(spec_dict, workers, ray_address, progress)
        elif backend == "inprocess" or workers == 1:
            work(spec_dict, "papermill" if backend == "papermill" else "local", progress=progress)
        else:
            _run_in_processes(spec_dict, backend, workers, progress)
    except KeyboardInterrupt:
        if progress:
            print(interrupted_line(study), flush=True)
        raise
    finally:
        if board:
            board.close()
    if progress:  # the Study reads the storage afresh: it sees what every worker wrote
        print(describe(study), flush=True)
    return study


def interrupted_line(study: optuna.Study) -> str:
    """What an interrupted study kept, and how to go on: one line instead of a traceback per worker."""
    counts = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    kept = counts["COMPLETE"] + counts["PRUNED"]
    return _("interrupted: {kept} finished trial(s) kept ({complete} COMPLETE, {pruned} PRUNED) "
             "in study {study!r}; {waiting} queued, the interrupted ones among them with "
             "their params; run the same command again to resume").format(
        kept=kept, complete=counts["COMPLETE"], pruned=counts["PRUNED"], study=study.study_name,
        waiting=counts["WAITING"])


class StudyProgress:
    """Trials started, ended (pruned and failed among them) and left, with an estimate of the time left,
    read from the storage every `every` seconds by a thread of this process (the workers may be other
    processes or machines): a bar in a terminal, a line per change when the output is piped, a widget
    in a notebook. close() shows the last state and stops."""

    def __init__(self, study: optuna.Study, n_trials: int, workers: int, every: float = 1.0, mode: str | None = None):
        self.study, self.n_trials, self.workers, self.every = study, n_trials, workers, every
        self.mode = mode or progress_mode()
        self.shown, self.done = None, threading.Event()
        self.bar = self.widget = None
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def counts(self) -> dict:
        trials = self.study.get_trials(deepcopy=False)
        states = Counter(t.state.name for t in trials)
        ended = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.duration]
        mean = sum(t.duration.total_seconds() for t in ended) / len(ended) if ended else None
        left, running = states["WAITING"], states["RUNNING"]
        eta = None if mean is None else mean * (left + running / 2) / max(1, self.workers)
        return {"started": running + states["COMPLETE"] + states["PRUNED"] + states["FAIL"],
                "ended": states["COMPLETE"] + states["PRUNED"], "pruned": states["PRUNED"],
                "failed": states["FAIL"], "running": running, "left": left, "eta_s": eta}

    def text(self, c: dict) -> str:
        counts = dict(ended=c["ended"], n=self.n_trials, pruned=c["pruned"], failed=c["failed"], running=c["running"],
                      left=c["left"])
        if c["eta_s"] is None:
            return _("{ended} of {n} ended ({pruned} pruned, {failed} failed), {running} running, {left} left; "
                     "time left: known after the first trial").format(**counts)
        return _("{ended} of {n} ended ({pruned} pruned, {failed} failed), {running} running, {left} left; "
                 "about {eta} left").format(eta=_duration(c["eta_s"]), **counts)

    def _watch(self) -> None:
        while not self.done.wait(self.every):
            self._show()

    def _show(self) -> None:
        try:
            c = self.counts()
        except Exception:  # a busy database: the next look will do
            return
        key = {k: v for k, v in c.items() if k != "eta_s"}
        if key == self.shown and self.mode == "lines":
            return
        self.shown = key
        if self.mode == "lines":
            print(_("progress: {progress}").format(progress=self.text(c)), flush=True)
        elif self.mode == "bar":
            self._bar(c)
        else:
            self._widget(c)

    def _bar(self, c: dict) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=self.n_trials, desc=_("trials"), unit="trial", leave=True)
        self.bar.n = c["ended"]
        self.bar.set_postfix_str(self.text(c).split(", ", 1)[-1])  # [-1]: a translation may have no ", "

    def _widget(self, c: dict) -> None:
        import ipywidgets as widgets
        from IPython.display import display

        if self.widget is None:
            self.widget = (widgets.IntProgress(min=0, max=self.n_trials, description=_("trials")), widgets.HTML())
            display(widgets.HBox(self.widget))
        self.widget[0].value, self.widget[1].value = c["ended"], self.text(c)

    def close(self) -> None:
        self.done.set()
        self.thread.join()
        self.shown = None
        self._show()
        if self.bar is not None:
            self.bar.close()


def progress_mode() -> str:
    """"widget" in a Jupyter kernel, "bar" in a terminal, "lines" when the output goes to a file or pipe."""
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    if shell is not None and type(shell).__name__ == "ZMQInteractiveShell":
        return "widget"
    return "bar" if sys.stdout.isatty() else "lines"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _run_in_processes(spec_dict: dict, backend: str, workers: int, progress: bool) -> None:
    """`workers` workers, each with an equal share of the cores, all pulling from the same storage:
    worker 0 is this process (torch is imported here already: it starts training at once, while the
    others are still importing it, about 5 s each) and the others are spawned processes (never
    forked: torch's OpenMP pool does not survive a fork; measured here, a forked child with 2 threads hangs).
    The spawned ones ignore Ctrl-C (which a terminal sends to every process of the group): this process
    stops them, so one line, not one traceback per worker, says what happened; and they end when this
    process dies (worker_process)."""
    import torch

    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=worker_process, args=(spec_dict, backend, i, threads, progress, get_language()),
                                 daemon=False) for i in range(1, workers)]
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # ignored from their first instruction (kept by exec)
    try:
        for process in processes:
            process.start()
    finally:
        signal.signal(signal.SIGINT, previous)
    own_threads = torch.get_num_threads()
    try:
        work(spec_dict, backend, 0, threads, progress)
    except KeyboardInterrupt:
        for process in processes:
            process.terminate()  # SIGTERM: the worker stops its trial as Ctrl-C would (worker_process)
        raise
    finally:
        torch.set_num_threads(own_threads)  # the caller's process (a kernel, say) gets its threads back
        for process in processes:
            process.join()
    died = [p.exitcode for p in processes if p.exitcode != 0]
    if died and progress:
        print(_("{died} of {workers} workers ended abnormally (exit codes {codes}); their trials are retried "
                "by the others or on the next run").format(died=len(died), workers=workers, codes=died), flush=True)


def worker_process(spec_dict: dict, backend: str, worker: int, threads: int, progress: bool,
                   language: str | None = None) -> None:
    """A spawned worker: `work`, ended by SIGTERM as by Ctrl-C (its trial queued again, no traceback), and
    ended when the process that started it dies (a SIGKILL, a closed terminal): left alone, it would go
    on taking trials nobody watches. Its trial then stays RUNNING until the heartbeat gives it back.
    language: the starting process's (nbkit.core.i18n), so its lines read as that process's do."""
    def stop(signum, frame):
        raise KeyboardInterrupt

    if language is not None:
        set_language(language)
    signal.signal(signal.SIGTERM, stop)
    exit_with_parent()
    try:
        work(spec_dict, backend, worker, threads, progress)
    except KeyboardInterrupt:
        sys.exit(130)


def _run_on_ray(spec_dict: dict, workers: int, address: str | None, progress: bool) -> None:
    """`workers` Ray tasks of the worker loop; connects to `address` (or RAY_ADDRESS), else starts a
    local cluster of `workers` CPUs, which is shut down afterwards. The trial lines are printed by this
    process from the storage (TrialLines): a task's own prints reach us through Ray's log monitor, which
    drops the last ones when the cluster shuts down, and folds lines that differ only in their numbers."""
    import ray

    started = not ray.is_initialized()
    if started:
        address = address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=progress)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=progress)
    lines = TrialLines(StudySpec.from_dict(spec_dict)) if progress else None
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(work)  # a dead task's trial comes back via the heartbeat
        ray.get([task.remote(spec_dict, "local", i, None, False) for i in range(workers)])
    finally:
        if lines:
            lines.close()
        if started:
            ray.shutdown()


class TrialLines:
    """A line for each trial that ends (trial_line) and for each one waited on (_waiting_lines), printed by
    a thread of this process that reads the storage every `every` seconds; close() prints the rest."""

    def __init__(self, spec: StudySpec, every: float = 1.0):
        self.spec, self.every = spec, every
        self.study = optuna.load_study(study_name=spec.study_name, storage=spec_storage(spec))
        self.shown = {t.number for t in self.study.get_trials(deepcopy=False) if t.state.is_finished()}
        self.told, self.done = set(), threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while not self.done.wait(self.every):
            try:
                self._print()
            except Exception:  # a busy database: the next look will do
                pass

    def _print(self) -> None:
        for trial in self.study.get_trials(deepcopy=False):
            if trial.state.is_finished() and trial.number not in self.shown:
                self.shown.add(trial.number)
                print(trial_line(trial, trial.user_attrs.get("error")), flush=True)
        for line in _waiting_lines(self.study, self.spec, self.told):
            print(line, flush=True)

    def close(self) -> None:
        self.done.set()
        self.thread.join()
        self._print()


def summary(study: optuna.Study) -> dict:
    """Counts of trials by state, and the best trial (study_analysis.best_trial: the lowest finite value)."""
    counts = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    best = best_trial(study)
    return {"study_name": study.study_name, "counts": dict(counts),
            "best_trial": None if best is None else best.number,
            "best_value": None if best is None else best.value,
            "best_params": None if best is None else dict(best.params),
            "best_run_dir": None if best is None else best.user_attrs.get("run_dir")}


def describe(study: optuna.Study) -> str:
    s = summary(study)
    counts = ", ".join(f"{n} {state}" for state, n in sorted(s["counts"].items()))
    lines = [_("study {study}: {counts}").format(study=s["study_name"], counts=counts or _("no trials"))]
    if s["best_trial"] is None:
        lines.append(_("best: none (no trial completed with a finite validation loss)"))
    else:
        params = ", ".join(f"{k}={format_value(v)}" for k, v in s["best_params"].items())
        lines.append(_("best: trial {trial}, eval_loss {value:.4f}, {params}").format(
            trial=s["best_trial"], value=s["best_value"], params=params))
        lines.append(_("      run {run_dir}").format(run_dir=s["best_run_dir"]))
    return "\n".join(lines)
