"""Many runs at once: every combination of a grid of knob values, one table of results.

    df = sweep(cfg, {"learning_rate": [1e-4, 1e-3, 1e-2]})
    plots.sweep_plot(df, "learning_rate")         # best_eval_loss against the LR
    plots.compare_runs(df)                        # their validation curves overlaid
    as_runs(df)                                   # the Run objects of its rows (nbkit.core.runs), by their paths

Each combination trains `cfg.replace(**combo)` with cfg's seed (unless the grid varies
`seed`), in itertools.product order. Every combination is checked before the first run starts,
so a bad value fails at once with the config's ValueError. A diverged run is a row like any
other; the kernel's stop button ends the sweep and keeps the rows finished so far.
`sweep_from_runs(runs)` rebuilds the same table from stored runs (Run objects or folders).
A sweep is the in-process grid a chapter needs (reused runs, kept models, callbacks, a pool kept for
the kernel's life); nbkit.core.study runs the same train() as Optuna trials when a question needs
sampling, pruning, a database or many machines, and `study_from_runs(df, scientific=..., nuisance=...)`
reads a sweep as a study, so its analysis and figures (edge warnings, isolation, importance) apply.

The `path` column links a row to its run: `as_runs(df[df["seed"] == 42])` gives the Runs of any subset
of rows, in their order (the one kept in memory, weights and all, when the sweep kept it; else loaded
from its folder). df.attrs["runs"] is where the sweep keeps them; nothing reads it by position.
"""
from __future__ import annotations

import itertools
import math

import pandas as pd

from nbkit.core.config import TrainConfig
from nbkit.core.i18n import N_, _
from nbkit.core.runs import NOT_KNOBS, as_number, as_runs, differing_knobs, file_safe_label, knob_label
from nbkit.core.train import train
from nbkit.core.workers import run_side_by_side, train_in_worker

FINISHED = ("completed", "early_stopped", "diverged")  # runs that ended on their own: safe to reuse
RESULT_COLUMNS = ["status", "best_epoch", "best_eval_loss", "final_eval_loss", "base_eval_loss",
                  "final_eval_accuracy", "best_eval_accuracy", "diverged_at_step", "train_seconds",
                  "trainable_params", "run_name", "path"]


class RunList(list):
    """The Runs kept in df.attrs["runs"]. pandas deep-copies attrs into every derived table
    and compares them with == when concatenating; a Run holds DataFrames (no truth value) and
    maybe a model, so this list copies shallowly and compares runs by their folders."""

    def __deepcopy__(self, memo):
        return RunList(self)

    def __eq__(self, other):
        return isinstance(other, list) and [str(r.path) for r in self] == [str(r.path) for r in other]

    __hash__ = None


def best_rows(df: pd.DataFrame, by, metric: str = "best_eval_loss") -> pd.DataFrame:
    """The row of a sweep table with the lowest `metric` in each group of `by` (a column or a list of
    them), groups in the order they first appear: each seed's own best setting of the swept knob
    (by="seed"), or each optimizer's at each seed (by=["optim", "seed"])."""
    by = [by] if isinstance(by, str) else list(by)
    missing = [c for c in by + [metric] if c not in df]
    if missing:
        raise ValueError(_("best_rows: {missing} are not columns of the table; it has {columns}").format(
            missing=missing, columns=", ".join(df.columns)))
    return df.loc[df.groupby(by, sort=False)[metric].idxmin()]


def grid_configs(cfg: TrainConfig, grid: dict) -> list[tuple[dict, TrainConfig]]:
    """(combo, checked config) for every combination, in itertools.product order. Raises the
    config's ValueError for a bad name or value before anything trains."""
    if not grid:
        raise ValueError(_("grid is empty: give at least one knob, e.g. {{'learning_rate': [1e-4, 1e-3]}}").format())
    values = {}
    for knob, options in grid.items():
        options = [options] if isinstance(options, (str, bytes)) or not hasattr(options, "__iter__") else list(options)
        if not options:
            raise ValueError(_("grid[{knob!r}] is empty: give at least one value").format(knob=knob))
        values[knob] = options
    combos = [dict(zip(values, combo)) for combo in itertools.product(*values.values())]
    return [(combo, cfg.replace(**combo)) for combo in combos]


def _run_name(cfg: TrainConfig, knobs) -> str:
    """"learning_rate=0.001,seed=2": readable, and safe as part of a folder name."""
    name = file_safe_label(knob_label(cfg, knobs).replace(", ", ","))
    return f"{cfg.run_name}-{name}" if cfg.run_name else name


def result_row(run, knobs) -> dict:
    """A row of the sweep table for one run: its knob values, then RESULT_COLUMNS."""
    s = run.summary
    accuracy = run.epochs["eval_accuracy"] if "eval_accuracy" in run.epochs else pd.Series(dtype=float)
    row = {k: run.config.get(k) for k in knobs}
    row.update(status=run.status, best_epoch=s.get("best_epoch"), best_eval_loss=as_number(s.get("best_eval_loss")),
               final_eval_loss=as_number(s.get("final_eval_loss")), base_eval_loss=as_number(s.get("base_eval_loss")),
               final_eval_accuracy=as_number(s.get("final_eval_accuracy")),
               best_eval_accuracy=float(accuracy.max()) if accuracy.notna().any() else math.nan,
               diverged_at_step=as_number(s.get("diverged_at_step")), train_seconds=as_number(s.get("train_seconds")),
               trainable_params=s.get("trainable_params"), run_name=run.config.get("run_name"),
               path=str(run.path))
    return row


def _table(runs, knobs) -> pd.DataFrame:
    df = pd.DataFrame([result_row(r, knobs) for r in runs], columns=list(knobs) + RESULT_COLUMNS)
    df.attrs["knobs"] = list(knobs)
    df.attrs["runs"] = RunList(runs)
    return df


def _progress_line(i, n, run, label) -> str:
    loss = run.best_eval_loss
    loss = f"{loss:.4f}" if isinstance(loss, float) and math.isfinite(loss) else loss
    fields = dict(i=i, n=n, label=label, status=run.status, best_epoch=run.best_epoch, loss=loss,
                  seconds=as_number(run.summary.get("train_seconds")))
    if run.status == "diverged":
        return _("[{i}/{n}] {label}: {status}, best epoch {best_epoch}, best eval_loss {loss} "
                 "(diverged at step {step}), {seconds:.1f} s").format(step=run.summary.get("diverged_at_step"),
                                                                      **fields)
    return _("[{i}/{n}] {label}: {status}, best epoch {best_epoch}, best eval_loss {loss}, {seconds:.1f} s").format(
        **fields)


def _same_experiment(cfg: TrainConfig, run) -> bool:
    """Would training cfg repeat `run`? Same value of every knob (where runs are stored, their
    names and the progress bar do not count) and the run ended on its own."""
    if run.status not in FINISHED:
        return False
    mine, theirs = cfg.to_dict(), TrainConfig.from_dict(run.config).to_dict()
    return all(mine[k] == theirs[k] for k in mine if k not in NOT_KNOBS)


def _reusable(run_cfg: TrainConfig, reuse) -> object | None:
    return next((run for run in reuse if _same_experiment(run_cfg, run)), None)


def sweep(cfg: TrainConfig, grid: dict, callbacks=(), progress=True, stop_event=None,
          keep_models=False, reuse=None, workers: int = 1) -> pd.DataFrame:
    """Train cfg.replace(**combo) for every combination of grid values; a row per run.

    grid: {knob: [values]}, e.g. {"learning_rate": [1e-4, 1e-3], "lora_rank": [4, 16]}.
    callbacks, stop_event: passed to every train() call (setting the event ends the sweep).
    progress: print a line per finished run. keep_models: keep each Run's model and tokenizer
    in memory (off: a sweep of real models would hold all of them). reuse: runs made earlier
    (Runs, folders or a sweep table); a combination whose config matches one of them takes that
    run instead of training it again (same seed and config give the same curve). workers: train
    that many runs side by side in worker processes (nbkit.core.workers; callbacks and stop_event
    need the runs in this process, so they keep workers at 1). Returns the table, a row per run;
    as_runs(df) gives its Runs (by the path column), df.attrs["knobs"] the varied knobs.
    """
    planned = grid_configs(cfg, grid)  # every value checked before the first run
    knobs = list(planned[0][0])
    reuse = as_runs(reuse) if reuse is not None else []
    if workers > 1 and (callbacks or stop_event is not None):
        raise ValueError(_("workers={workers}: callbacks and stop_event run in this process; "
                           "allowed: workers=1 with them").format(workers=workers))
    named = [(combo, run_cfg.replace(run_name=_run_name(run_cfg, knobs))) for combo, run_cfg in planned]
    earlier = [_reusable(run_cfg, reuse) for _, run_cfg in planned]
    if workers > 1:
        runs = _train_side_by_side(named, earlier, workers, keep_models, progress, knobs)
        return _table(runs, knobs)
    runs, stopped = [], False
    for i, ((combo, run_cfg), done) in enumerate(zip(named, earlier), start=1):
        if done is not None:
            run = _reused(done, keep_models)
        else:
            try:
                run = train(run_cfg, callbacks=callbacks, stop_event=stop_event, keep_model=keep_models)
            except KeyboardInterrupt:  # stopped before train() could catch it (e.g. loading the model)
                stopped = True
                break
        runs.append(run)
        if progress:
            _print_progress(i, len(planned), run, knob_label(run_cfg, knobs), done is not None)
        if run.status == "interrupted":  # train() caught the stop button: the user wants out
            stopped = True
            break
    if stopped:
        print(_("sweep interrupted: returning the {done} of {total} runs made so far").format(
            done=len(runs), total=len(planned)), flush=True)
    return _table(runs, knobs)


def _reused(run, keep_models):
    """An earlier run standing in for a combination: a copy, never strip the caller's Run's model."""
    return run if keep_models else run.drop_weights(copy=True)


def _print_progress(i, n, run, label, reused) -> None:
    print(_progress_line(i, n, run, label) + (_(" (reused, not trained again)") if reused else ""), flush=True)


def _train_side_by_side(named, earlier, workers, keep_models, progress, knobs) -> list:
    """The runs of a sweep in `workers` processes (nbkit.core.workers.run_side_by_side), in the grid's
    order, the reused ones in their places; the stop button cancels the runs not started and keeps
    the finished ones; a dead worker ends the sweep with WorkerDied (the next sweep gets new workers)."""
    runs = []

    def add(run, reused):
        runs.append(run)
        if progress:
            _print_progress(len(runs), len(named), run, knob_label(named[len(runs) - 1][1], knobs), reused)

    def add_reused():  # the reused runs up to the next one that trains
        while len(runs) < len(named) and earlier[len(runs)] is not None:
            add(_reused(earlier[len(runs)], keep_models), reused=True)

    add_reused()
    jobs = [(run_cfg, keep_models) for (_, run_cfg), done in zip(named, earlier) if done is None]
    run_side_by_side(train_in_worker, jobs, workers, on_result=lambda i, run: (add(run, False), add_reused()),
                     on_stop="return", name="sweep", what=N_("runs to train"))
    return runs


def sweep_from_runs(runs, knobs=None) -> pd.DataFrame:
    """The sweep table for stored runs (Run objects or run folders), e.g. after a restart:
    sweep_from_runs(list_runs("runs")["path"]). knobs default to the fields that differ."""
    runs = as_runs(list(runs))
    knobs = list(knobs) if knobs is not None else differing_knobs([r.config for r in runs])
    return _table(runs, knobs)
