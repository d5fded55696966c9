"""Runs side by side in worker processes: how a chapter affords a seed set on a laptop.

    sweep(cfg, {"learning_rate": [...], "seed": ch.seeds}, workers=default_workers(cfg))

The tiny model's matrices are small: a second thread barely speeds one run up, but two processes
of one thread each run two runs in the time of one (measured on 2 cores: 4 runs in 13.8 s one
after another, 7.2 s as 2 processes of 1 thread; DESIGN.md). A pool is started the first time it
is asked for and kept for the life of the kernel, as DataLoader's `persistent_workers` are:
starting a process and importing torch costs about 4 s, once, not once per sweep.
Workers are spawned (never forked: the kernel runs threads, and torch's OpenMP pool does not
survive a fork), each with one thread per core it owns.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

MAX_WORKERS = 8  # a tiny run's process holds ~0.6 GB: 8 of them fit a laptop's memory

_pools: dict[int, ProcessPoolExecutor] = {}  # one pool per size, started on first use


def default_workers(cfg) -> int:
    """Processes for cfg's runs: one per core for the tiny model on a CPU (its runs gain from
    processes, not threads); 1 for anything else (a real LLM uses every core in one run, and
    several copies of its weights would not fit in memory)."""
    import torch
    if cfg.model != "tiny" or torch.cuda.is_available():
        return 1
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


def pool(workers: int) -> ProcessPoolExecutor:
    """The kernel's pool of `workers` processes (started now if it is the first call)."""
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


def _start_worker(threads: int) -> None:
    import signal

    import torch
    torch.set_num_threads(threads)
    # the stop button (and a kernel shutdown) sends SIGINT to the whole process group: the sweep
    # in the kernel handles it by cancelling the runs not started; a worker printing its own
    # KeyboardInterrupt traceback would only be noise
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def train_in_worker(cfg, keep_model: bool):
    """train(cfg) in a worker process; the Run (curves, files, weights if kept) comes back pickled."""
    from nbkit.core.train import train
    return train(cfg, keep_model=keep_model)
