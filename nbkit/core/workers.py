"""Work side by side in worker processes: how a chapter affords a seed set on a laptop.

    sweep(cfg, {"learning_rate": [...], "seed": ch.seeds}, workers=default_workers(cfg))
    runs = run_side_by_side(train_in_worker, [(c, False) for c in configs], workers)  # any jobs, in order

The tiny model's matrices are small: a second thread barely speeds one run up, but two processes
of one thread each run two runs in the time of one (measured on 2 cores: 4 runs in 13.8 s one
after another, 7.2 s as 2 processes of 1 thread; DESIGN.md). A pool is started the first time it
is asked for and kept for the life of the kernel, as DataLoader's `persistent_workers` are:
starting a process and importing torch costs about 4 s, once, not once per sweep.
Workers are spawned (never forked: the kernel runs threads, and torch's OpenMP pool does not
survive a fork), each with an equal share of the cores as its threads; they ignore the stop
button (the kernel cancels what has not started) and end when the kernel's process ends.

`run_side_by_side` is the one place that hands jobs to the pool: the sweep and every chapter's lab
call it, so a dead worker and the stop button are handled the same way everywhere.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool

from nbkit.core.config import TrainConfig
from nbkit.core.i18n import N_, _, get_language, set_language

MAX_WORKERS = 8  # a tiny run's process holds ~0.6 GB: 8 of them fit a laptop's memory
STOP_POLL_SECONDS = 0.2  # how often a wait looks at stop_event

_pools: dict[int, ProcessPoolExecutor] = {}  # one pool per size, started on first use


class WorkerDied(RuntimeError):
    """A worker process died (the out-of-memory killer, a kill by hand) while jobs were running."""


def default_workers(cfg=None) -> int:
    """How many runs of cfg's model to train side by side here: the cores divided by the threads one
    run puts to use, at least 1, at most MAX_WORKERS (memory). Each worker then gets an equal share of
    the cores as its threads (pool).

    - The tiny model on a CPU puts ONE thread to use (its matrices are small: a second thread barely
      speeds a run up, a second process of one thread doubles the runs per second; DESIGN.md): one
      worker per core. This holds for a chapter's sweep of tiny runs and for a study's workers alike
      (a study worker trains its trials one after another, each with its worker's threads).
    - Anything else, a real LLM or any model on a GPU, uses every core (or the GPU) in one run, and a
      second copy of its weights may not fit: 1 worker.

    cfg: a TrainConfig, or a dict of its fields (a study spec's `base`); None or no "model": the
    TrainConfig default model."""
    model = _model_of(cfg)
    if model != "tiny":
        return 1
    import torch
    if torch.cuda.is_available():
        return 1
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


def _model_of(cfg) -> str:
    if cfg is None:
        cfg = {}
    if isinstance(cfg, dict):
        return cfg.get("model", TrainConfig.model)
    return cfg.model


def pool(workers: int) -> ProcessPoolExecutor:
    """The kernel's pool of `workers` processes (started now if it is the first call). Use it through
    run_side_by_side, which handles a dead worker and the stop button."""
    if workers not in _pools:
        threads = max(1, (os.cpu_count() or 1) // workers)
        _pools[workers] = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                              initializer=_start_worker, initargs=(threads,))
    return _pools[workers]


def discard(workers: int) -> None:
    """Drop a pool whose process died (BrokenProcessPool): the next pool(workers) starts a new one."""
    executor = _pools.pop(workers, None)
    if executor is not None:
        executor.shutdown(wait=False, cancel_futures=True)


def shutdown() -> None:
    """Stop every pool (a later sweep with workers starts a new one)."""
    while _pools:
        _pools.popitem()[1].shutdown(cancel_futures=True)


def run_side_by_side(function, jobs, workers: int = 1, *, on_result=None, stop_event=None, on_stop: str = "raise",
                     name: str = "run_side_by_side", what: str = N_("jobs")) -> list:
    """function(*job) for every job (a tuple of arguments), `workers` at a time in the kernel's
    persistent pool (workers > 1) or here, one after another (workers <= 1). Returns the results in the
    jobs' order; on_result(i, result) is called for each as soon as it and every job before it are done
    (a progress line, say). `function` and the jobs must pickle (a module-level function; bind keyword
    arguments with functools.partial). A job's own exception is raised here (the jobs not started are
    cancelled).

    A worker process dies (killed by hand or by the out-of-memory killer): the pool is discarded and
    WorkerDied says how many jobs had finished and that the rest are lost; the next call starts new
    workers. The stop (a KeyboardInterrupt here, the kernel's stop button; or stop_event set, checked
    between jobs and while waiting): the jobs not started are cancelled (those already running in a
    worker finish there, unseen), one line says so, then on_stop="raise" raises KeyboardInterrupt and
    on_stop="return" returns the results finished so far (the first k, in order), as a sweep does.
    name and what name the caller and its jobs in those messages ("sweep", "runs"; `what` is shown through _(),
    so a caller marks it: what=N_("runs")). The jobs in the pool run in this process's language
    (nbkit.core.i18n), so their messages read as its do."""
    if on_stop not in ("raise", "return"):
        raise ValueError(_("on_stop={on_stop!r}; allowed: 'raise', 'return'").format(on_stop=on_stop))
    jobs = [tuple(job) for job in jobs]
    results = []
    if not jobs:
        return results
    if workers <= 1:
        inside = False  # in a job when the stop came: that one was started, not cancelled
        try:
            for i, job in enumerate(jobs):
                _check_stop(stop_event)
                inside = True
                results.append(function(*job))
                inside = False
                if on_result is not None:
                    on_result(i, results[-1])
        except KeyboardInterrupt:
            return _stopped(name, what, results, len(jobs), cancelled=len(jobs) - len(results) - inside, running=0,
                            on_stop=on_stop)
        return results
    futures = []
    try:
        _check_stop(stop_event)
        executor = pool(workers)
        for job in jobs:  # one by one: a stop while submitting still finds the submitted ones to cancel
            futures.append(executor.submit(_in_language, get_language(), function, *job))
        for i, future in enumerate(futures):
            results.append(_wait(future, stop_event))
            if on_result is not None:
                on_result(i, results[-1])
        return results
    except BrokenProcessPool as err:
        discard(workers)
        raise WorkerDied(_("{name}: a worker process died (killed, or out of memory) after {done} of "
                           "{total} {what} had finished ({error}); the others are lost. Run it again (the next "
                           "call starts new workers), or with workers=1").format(
            name=name, done=len(results), total=len(jobs), what=_(what), error=err)) from None
    except KeyboardInterrupt:
        cancelled = sum(future.cancel() for future in futures)
        not_submitted = len(jobs) - len(futures)
        running = sum(not f.done() for f in futures)
        return _stopped(name, what, results, len(jobs), cancelled + not_submitted, running, on_stop)
    finally:  # a job's own exception, or anything else: nothing more of this call starts
        for future in futures:
            future.cancel()


def _check_stop(stop_event) -> None:
    if stop_event is not None and stop_event.is_set():
        raise KeyboardInterrupt


def _wait(future, stop_event):
    if stop_event is None:
        return future.result()
    while True:
        _check_stop(stop_event)
        try:
            return future.result(timeout=STOP_POLL_SECONDS)
        except FutureTimeout:
            continue


def _in_language(language: str, function, *args):
    """function(*args) in a pool's worker, in `language` (the submitting process's: a worker keeps no language
    of its own, and the pool outlives a change of the kernel's)."""
    set_language(language)
    return function(*args)


def _stopped(name, what, results, total, cancelled, running, on_stop):
    line = _("{name} interrupted: {done} of {total} {what} finished, {cancelled} not started were cancelled").format(
        name=name, done=len(results), total=total, what=_(what), cancelled=cancelled)
    if running:
        line += _(" ({running} already running finish in their workers, unseen)").format(running=running)
    print(line + (_("; returning the finished ones") if on_stop == "return" else ""), flush=True)
    if on_stop == "raise":
        raise KeyboardInterrupt
    return results


def _start_worker(threads: int) -> None:
    import signal

    import torch
    torch.set_num_threads(threads)
    # the stop button (and a kernel shutdown) sends SIGINT to the whole process group: the kernel
    # (run_side_by_side) handles it by cancelling the jobs not started; a worker printing its own
    # KeyboardInterrupt traceback would only be noise
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # a job may be long (a study worker's loop of trials): if the kernel's process dies (killed, or a
    # kernel restart), nobody will read its results, so the worker ends with it
    exit_with_parent()


def exit_with_parent() -> None:
    """In a process started by multiprocessing: end it (os._exit(1)) as soon as the process that started
    it is gone, whatever it is doing; a thread waits on the parent's sentinel. Elsewhere: nothing."""
    import threading

    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_when_gone, args=(parent.sentinel,), daemon=True,
                         name="nbkit-exit-with-parent").start()


def _exit_when_gone(sentinel) -> None:
    import multiprocessing.connection
    multiprocessing.connection.wait([sentinel])  # ready when the parent process is gone
    os._exit(1)


def train_in_worker(cfg, keep_model: bool):
    """train(cfg) in a worker process; the Run (curves, files, weights if kept) comes back pickled."""
    from nbkit.core.train import train  # here, not at the top: the trainer imports torch and transformers
    return train(cfg, keep_model=keep_model)
