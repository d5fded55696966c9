"""nbkit.core.workers: run_side_by_side is the one way jobs run side by side (results in the jobs' order,
a dead worker's clear error and fresh workers after it, the stop cancelling what has not started), a
pool worker ends with the kernel, one default_workers rule; and the runs helpers every caller shares
(file_safe_label, Run.drop_weights). The jobs are stand-ins (sleeps, pids, files): the sweep's and the
chapters' real runs through it are tested in test_sweep.py and the labs' own tests."""
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from nbkit.core import workers
from nbkit.core.runs import Run, file_safe_label, new_run_dir
from nbkit.core.workers import WorkerDied, default_workers, run_side_by_side

PACKAGE = Path(__file__).resolve().parent.parent / "nbkit"


# ---------------------------------------------------------------- jobs (module level: they pickle)

def square_after(x, delay):
    time.sleep(delay)
    return x * x, os.getpid()


def mark_and_sleep(folder, i, delay):
    """Leaves a file saying the job started, then takes `delay` seconds."""
    Path(folder, f"started-{i}").touch()
    time.sleep(delay)
    return i


def quick_then_killed(i):
    """Job 0 returns at once; job 1 kills its own process (as the out-of-memory killer would), late
    enough that job 0's result is back."""
    if i == 0:
        return "done"
    time.sleep(2.0)
    os.kill(os.getpid(), signal.SIGKILL)


def fail(x):
    raise ValueError(f"job {x} fails on purpose")


def started(folder) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in Path(folder).glob("started-*"))


def drain(n_workers=2):
    """Wait until every job already handed to the pool has started: the pool takes jobs in order, so
    once jobs handed over later have run on every worker, the earlier ones have all been taken."""
    run_side_by_side(square_after, [(0, 0.2)] * n_workers * 2, n_workers)


# ---------------------------------------------------------------- order, here and in workers

def test_results_come_back_in_the_jobs_order_though_later_jobs_finish_first():
    seen = []
    jobs = [(x, delay) for x, delay in [(1, 1.0), (2, 0.1), (3, 0.1), (4, 0.1)]]
    results = run_side_by_side(square_after, jobs, 2, on_result=lambda i, r: seen.append(i))
    assert [value for value, _ in results] == [1, 4, 9, 16]
    assert seen == [0, 1, 2, 3]  # on_result in order too, each as soon as it and those before it are done
    pids = {pid for _, pid in results}
    assert len(pids) == 2 and os.getpid() not in pids  # two worker processes, side by side
    here = run_side_by_side(square_after, jobs[:2], 1)  # one worker: in this process, one after the other
    assert here == [(1, os.getpid()), (4, os.getpid())]
    assert run_side_by_side(square_after, [], 2) == []


def test_a_jobs_own_error_is_raised_here():
    with pytest.raises(ValueError, match="job 2 fails on purpose"):
        run_side_by_side(fail, [(2,)], 2)
    with pytest.raises(ValueError, match="on_stop='keep'"):
        run_side_by_side(fail, [(2,)], 1, on_stop="keep")


# ---------------------------------------------------------------- a worker dies

def test_a_job_that_kills_its_worker_says_what_was_lost_and_the_next_call_gets_new_workers():
    before = workers.pool(2)
    with pytest.raises(WorkerDied) as caught:
        run_side_by_side(quick_then_killed, [(0,), (1,)], 2, name="demo", what="stand-ins")
    message = str(caught.value)
    assert message.startswith("demo: a worker process died") and "after 1 of 2 stand-ins had finished" in message
    assert "the others are lost" in message and "next call starts new workers" in message
    assert isinstance(caught.value, RuntimeError)  # what callers caught before
    assert workers.pool(2) is not before  # the broken pool was discarded
    assert [value for value, _ in run_side_by_side(square_after, [(2, 0.0), (3, 0.0)], 2)] == [4, 9]


# ---------------------------------------------------------------- the stop

def test_the_stop_button_cancels_the_jobs_not_started_says_so_and_is_raised_again(tmp_path, capsys):
    def press_stop(i, result):  # a KeyboardInterrupt while the kernel waits, as the stop button raises it
        raise KeyboardInterrupt

    jobs = [(str(tmp_path), i, 0.3) for i in range(12)]
    with pytest.raises(KeyboardInterrupt):
        run_side_by_side(mark_and_sleep, jobs, 2, on_result=press_stop, name="demo", what="stand-ins")
    line = capsys.readouterr().out.strip()
    found = re.fullmatch(r"demo interrupted: 1 of 12 stand-ins finished, (\d+) not started were cancelled.*", line)
    assert found, line
    cancelled = int(found.group(1))
    drain()
    assert cancelled >= 5  # 2 running and at most 3 queued in the pool's pipe when job 0 came back
    assert started(tmp_path) == list(range(12 - cancelled))  # the last ones never ran


def test_a_stop_event_returns_the_finished_jobs_when_asked_to(tmp_path, capsys):
    stop = threading.Event()
    jobs = [(str(tmp_path / "pool"), i, 0.3) for i in range(10)]
    (tmp_path / "pool").mkdir()
    done = run_side_by_side(mark_and_sleep, jobs, 2, stop_event=stop, on_stop="return",
                            on_result=lambda i, r: stop.set() if i == 1 else None)
    assert done == [0, 1]
    assert "interrupted: 2 of 10 jobs finished" in capsys.readouterr().out
    drain()
    assert len(started(tmp_path / "pool")) < 10
    # one worker (here): the event is looked at between jobs
    (tmp_path / "here").mkdir()
    stop.clear()
    here = [(str(tmp_path / "here"), i, 0.0) for i in range(4)]
    assert run_side_by_side(mark_and_sleep, here, 1, stop_event=stop, on_stop="return",
                            on_result=lambda i, r: stop.set()) == [0]
    assert started(tmp_path / "here") == [0]
    stop.set()  # already set: nothing starts, in the pool either
    with pytest.raises(KeyboardInterrupt):
        run_side_by_side(mark_and_sleep, here, 2, stop_event=stop)
    assert started(tmp_path / "here") == [0]


# ---------------------------------------------------------------- a worker ends with the kernel

def test_a_pool_worker_busy_with_a_long_job_ends_when_the_kernel_process_dies(tmp_path):
    kernel = textwrap.dedent("""
        import os, signal, time
        from nbkit.core import workers
        from nbkit.core.workers import run_side_by_side
        run_side_by_side(time.sleep, [(0.5,), (0.5,)], 2)  # both workers started, torch imported
        for _ in range(2):
            workers.pool(2).submit(time.sleep, 30)  # long jobs: a study worker's loop, say
        time.sleep(1)
        print(*workers.pool(2)._processes, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # the kernel dies (killed, or out of memory)
    """)
    done = subprocess.run([sys.executable, "-c", kernel], capture_output=True, text=True, timeout=120,
                          cwd=PACKAGE.parent)
    assert done.returncode == -signal.SIGKILL, done.stderr
    worker_pids = [int(pid) for pid in done.stdout.split()]
    assert len(worker_pids) == 2
    deadline = time.time() + 15
    while time.time() < deadline and not all(_gone(pid) for pid in worker_pids):
        time.sleep(0.2)
    assert all(_gone(pid) for pid in worker_pids)


def _gone(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")  # a zombie has ended
    except (FileNotFoundError, ProcessLookupError):
        return True


# ---------------------------------------------------------------- one default_workers rule

def test_default_workers_one_per_core_for_the_tiny_model_on_a_cpu_else_one(monkeypatch):
    import torch

    from nbkit import TrainConfig
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for cores, expected in ((2, 2), (1, 1), (6, 6), (64, workers.MAX_WORKERS), (None, 1)):
        monkeypatch.setattr(os, "cpu_count", lambda: cores)
        assert default_workers(TrainConfig(model="tiny")) == expected
        assert default_workers({"model": "tiny", "seed": 3}) == expected  # a study spec's base
        assert default_workers({}) == default_workers() == expected  # TrainConfig's default model: tiny
        assert default_workers(TrainConfig(model="smollm2-135m")) == 1  # a real LLM: every core in one run
        assert default_workers({"model": "smollm2-135m"}) == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_workers(TrainConfig(model="tiny")) == 1  # one GPU: one run at a time


# ---------------------------------------------------------------- the runs helpers every caller shares

def test_file_safe_label_keeps_readable_characters_and_joins_the_rest_into_one_dash(tmp_path):
    assert file_safe_label("learning_rate=0.001,seed=2") == "learning_rate=0.001,seed=2"
    assert file_safe_label("lr=1e-3/cosine") == "lr=1e-3-cosine"
    assert file_safe_label("a b  c/\\:*?d") == "a-b-c-d"
    assert file_safe_label("x+y_z.1") == "x+y_z.1"
    assert new_run_dir(tmp_path, "lr=1e-3/cosine run").name.endswith("_lr=1e-3-cosine-run")  # run folders use it
    assert len(new_run_dir(tmp_path, "x" * 200).name.split("_", 1)[1]) == 80


def test_drop_weights_in_place_or_on_a_copy():
    def a_run():
        return Run(path=Path("runs/x"), config={"seed": 1}, steps=pd.DataFrame({"loss": [1.0]}),
                   epochs=pd.DataFrame(), summary={"status": "completed"}, model=object(), tokenizer=object())

    run = a_run()
    assert run.drop_weights() is run and run.model is None and run.tokenizer is None
    mine = a_run()
    model = mine.model
    copy = mine.drop_weights(copy=True)
    assert copy is not mine and copy.model is None and copy.tokenizer is None
    assert mine.model is model and mine.tokenizer is not None  # the caller's Run keeps its weights
    assert copy.steps is mine.steps and copy.path == mine.path  # the curves are shared, not copied


# ---------------------------------------------------------------- nobody else builds a pool

FORBIDDEN = re.compile(r"ProcessPoolExecutor|BrokenProcessPool|\.submit\(|multiprocessing\.get_context|as_completed"
                       r"|(?<![\w.])pool\(")


def hand_made_pools(package: Path = PACKAGE) -> list[str]:
    """file:line for every pool built or fed by hand outside nbkit/core/workers.py (and the study
    modules, which the study code converts)."""
    found = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        if relative == "core/workers.py" or re.fullmatch(r"core/study[^/]*\.py", relative):
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if FORBIDDEN.search(line):
                found.append(f"{relative}:{number}: {line.strip()}")
    return found


def test_only_workers_runs_jobs_side_by_side():
    assert hand_made_pools() == [], "use nbkit.core.workers.run_side_by_side"


def test_the_check_sees_a_hand_made_pool(tmp_path):
    (tmp_path / "core").mkdir()
    (tmp_path / "labs").mkdir()
    (tmp_path / "core" / "workers.py").write_text("from concurrent.futures import ProcessPoolExecutor\n")
    (tmp_path / "core" / "study_x.py").write_text("ctx = multiprocessing.get_context('spawn')\n")
    (tmp_path / "labs" / "ch09.py").write_text("futures = [pool(2).submit(f, c) for c in cs]\nx = thread_pool(2)\n"
                                              "from concurrent.futures.process import BrokenProcessPool\n")
    assert [line.split(":")[:2] for line in hand_made_pools(tmp_path)] == [["labs/ch09.py", "1"], ["labs/ch09.py", "3"]]


def test_the_stop_line_speaks_chinese_and_the_pools_jobs_run_in_the_callers_language(capsys):
    """The real catalogue (nbkit/locale/zh_CN/LC_MESSAGES/nbkit.po): `what` is marked N_() by the caller and shown
    through _(); a job in the pool runs in the language of the process that handed it over."""
    from nbkit.core.i18n import N_, get_language, set_language

    def press_stop(i, result):
        raise KeyboardInterrupt

    set_language("zh")
    try:
        done = run_side_by_side(abs, [(-1,), (-2,), (-3,)], 1, on_result=press_stop, on_stop="return", name="demo",
                                what=N_("runs"))
        assert done == [1]
        assert capsys.readouterr().out.strip() == ("demo 已中断：3 个运行记录中完成了 1 个，"
                                                   "2 个尚未开始的已取消；返回已完成的部分")
        assert run_side_by_side(get_language, [(), ()], 2) == ["zh", "zh"]
    finally:
        set_language("en")
    assert run_side_by_side(get_language, [()], 2) == ["en"]
