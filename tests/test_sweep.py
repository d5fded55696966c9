"""nbkit.core.sweep on real small runs: a row per combination, divergence as a row, bad values
caught before anything trains, the stop button keeps finished rows; and the sweep plots."""
import contextlib
import io
import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nbkit import TrainConfig, load_run
from nbkit.core.callbacks import STEP, TRAIN_BEGIN
from nbkit.core.runs import as_runs
from nbkit.core.sweep import grid_configs, sweep, sweep_from_runs
from nbkit.views import plots


def small(tmp_dir, **kw) -> TrainConfig:
    base = dict(model="tiny", dataset="arithmetic", max_samples=64, max_steps=3, predict_with_generate=False,
                disable_tqdm=True, output_dir=str(tmp_dir), seed=7)
    base.update(kw)
    return TrainConfig(**base)


def run_folders(out) -> list:
    return sorted(p for p in Path(out).glob("*") if p.is_dir())


@pytest.fixture(scope="module")
def lr_sweep(tmp_path_factory):
    """SGD without clipping: 0.05 learns, 5.0 blows up within a few steps."""
    out = tmp_path_factory.mktemp("lr")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        df = sweep(small(out, optim="sgd", max_grad_norm=None), {"learning_rate": [0.05, 5.0]})
    return df, printed.getvalue(), out


@pytest.fixture(scope="module")
def batch_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("batch")
    return sweep(small(out, max_steps=2), {"per_device_train_batch_size": [8, 16]}, progress=False)


# ------------------------------------------------------------------ the table

def test_a_row_per_combination_with_its_knob_values(lr_sweep):
    df, _, out = lr_sweep
    assert list(df["learning_rate"]) == [0.05, 5.0]
    assert list(df["run_name"]) == ["learning_rate=0.05", "learning_rate=5"]
    runs = df.attrs["runs"]
    assert [r.config["learning_rate"] for r in runs] == [0.05, 5.0]
    assert [str(r.path) for r in runs] == list(df["path"]) and len(run_folders(out)) == 2
    assert [r.path.name.endswith(name) for r, name in zip(runs, df["run_name"])] == [True, True]
    for row, run in zip(df.itertuples(), runs):
        assert row.status == run.status and row.best_epoch == run.best_epoch
        assert row.best_eval_loss == run.best_eval_loss and row.base_eval_loss == run.epochs["eval_loss"][0]
        assert row.final_eval_loss == run.epochs["eval_loss"].iloc[-1]
        assert row.trainable_params == run.summary["trainable_params"] > 0
        assert math.isnan(row.final_eval_accuracy) and math.isnan(row.best_eval_accuracy)  # no generation
    assert run.model is None  # not kept: a sweep of real models would fill the memory


def test_divergence_is_a_row_not_an_exception(lr_sweep):
    df, printed, _ = lr_sweep
    assert list(df["status"]) == ["completed", "diverged"]
    assert math.isnan(df["diverged_at_step"][0]) and df["diverged_at_step"][1] >= 1
    assert df["best_eval_loss"][0] < df["base_eval_loss"][0]
    lines = printed.strip().splitlines()
    assert len(lines) == 2 and "learning_rate=0.05: completed" in lines[0] and "diverged" in lines[1]


def test_seed_is_constant_unless_varied(lr_sweep, batch_sweep):
    for df in (lr_sweep[0], batch_sweep):
        assert "seed" not in df
        assert {r.config["seed"] for r in df.attrs["runs"]} == {7}


def test_bad_grid_value_fails_before_any_run(tmp_path):
    out = tmp_path / "runs"
    with pytest.raises(ValueError, match="learning_rate"):
        sweep(small(out), {"per_device_train_batch_size": [8, 16], "learning_rate": [1e-3, -1.0]})
    with pytest.raises(ValueError, match="learning_rate"):  # a misspelt knob names the right one
        sweep(small(out), {"lr": [1e-3]})
    with pytest.raises(ValueError, match="empty"):
        sweep(small(out), {"learning_rate": []})
    assert not out.exists()


def test_combinations_in_product_order_and_values_coerced(tmp_path):
    grid = {"learning_rate": ["1e-4", 3e-4], "lr_scheduler_type": ["linear", "cosine"], "seed": [1, 2]}
    planned = grid_configs(small(tmp_path), grid)
    combos = list(itertools.product(*grid.values()))
    assert [tuple(c.values()) for c, _ in planned] == combos
    assert [(cfg.learning_rate, cfg.lr_scheduler_type, cfg.seed) for _, cfg in planned] == [
        (float(lr), s, seed) for lr, s, seed in combos]
    assert all(cfg.max_steps == 3 for _, cfg in planned)  # everything else from the base config


def test_stop_button_keeps_the_finished_rows(tmp_path, capsys):
    """A KeyboardInterrupt in the 2nd of 3 runs (train() records it as "interrupted"): the sweep
    stops there and returns both rows; the seed varies, so each row has its own."""
    started = []

    def interrupt_second_run(event, data):
        if event == TRAIN_BEGIN:
            started.append(data["path"])
        if event == STEP and len(started) == 2 and data["step"] == 2:
            raise KeyboardInterrupt

    df = sweep(small(tmp_path, max_steps=2), {"seed": [1, 2, 3]}, callbacks=[interrupt_second_run])
    assert list(df["seed"]) == [1, 2] and list(df["status"]) == ["completed", "interrupted"]
    assert [r.config["seed"] for r in df.attrs["runs"]] == [1, 2]
    assert len(run_folders(tmp_path)) == 2  # the third never started
    assert len(load_run(df["path"][1]).steps) == 2
    assert "interrupted" in capsys.readouterr().out


def test_sweep_from_runs_rebuilds_the_table(lr_sweep):
    df = lr_sweep[0]
    again = sweep_from_runs(list(df["path"]))  # from the folders, as after a kernel restart
    assert list(again.columns) == list(df.columns)
    pd.testing.assert_frame_equal(again.drop(columns="train_seconds"), df.drop(columns="train_seconds"))


def test_table_survives_pandas_operations(lr_sweep, batch_sweep):
    df = lr_sweep[0]
    both = pd.concat([df, df.copy()])  # attrs hold Runs: pandas copies and compares them
    assert len(both) == 4
    healthy = df[df["status"] != "diverged"]
    assert [r.path for r in as_runs(healthy)] == [df.attrs["runs"][0].path]  # aligned by path


# ------------------------------------------------------------------ plots of a sweep

def test_sweep_plot_lr_is_log_and_marks_divergence(lr_sweep):
    df = lr_sweep[0]
    ax = plots.sweep_plot(df, "learning_rate").axes[0]
    assert ax.get_xscale() == "log"
    diverged = [line for line in ax.lines if line.get_gid() == "diverged"]
    assert [line.get_xdata()[0] for line in diverged] == list(df.loc[df["status"] == "diverged", "learning_rate"])
    assert any(t.get_text() == "diverged" for t in ax.texts)
    best = [line for line in ax.lines if line.get_gid() == "best"][0]
    assert best.get_xdata()[0] == df.loc[df["status"] != "diverged", "learning_rate"].iloc[0]
    assert ax.get_xlabel() == "learning_rate" and ax.get_ylabel() == "best_eval_loss" and ax.get_title()


def test_sweep_plot_batch_is_linear_and_highlights_the_best(batch_sweep):
    ax = plots.sweep_plot(batch_sweep, "per_device_train_batch_size").axes[0]
    assert ax.get_xscale() == "linear"
    best = [line for line in ax.lines if line.get_gid() == "best"][0]
    winner = batch_sweep.loc[batch_sweep["best_eval_loss"].idxmin()]
    assert (best.get_xdata()[0], best.get_ydata()[0]) == (winner["per_device_train_batch_size"],
                                                        winner["best_eval_loss"])
    curve = [line for line in ax.lines if line.get_gid() == "sweep"][0]
    assert list(curve.get_xdata()) == [8, 16]
    with pytest.raises(ValueError, match="not a column"):
        plots.sweep_plot(batch_sweep, "learning_rate")


def test_compare_runs_of_a_sweep_labels_each_value(lr_sweep):
    df = lr_sweep[0]
    lines = [line for line in plots.compare_runs(df).axes[0].lines if line.get_gid() == "run"]
    assert [line.get_label() for line in lines] == ["learning_rate=0.05", "learning_rate=5 (diverged)"]
    assert [line.get_linestyle() for line in lines] == ["-", "--"]


def test_reuse_takes_an_identical_earlier_run_and_trains_the_rest(tmp_path):
    from nbkit import train

    earlier = train(small(tmp_path, learning_rate=1e-3))
    other_seed = train(small(tmp_path, learning_rate=2e-3, seed=8))  # differs in a knob: not reusable
    before = set(run_folders(tmp_path))
    df = sweep(small(tmp_path), {"learning_rate": [1e-3, 2e-3]}, reuse=[earlier, other_seed], progress=False)
    assert df.loc[0, "path"] == str(earlier.path)  # the same run, not a new one
    new = set(run_folders(tmp_path)) - before
    assert [str(p) for p in new] == [df.loc[1, "path"]]  # only 2e-3 (seed 7) was trained
    assert earlier.model is not None  # the caller's Run keeps its model
    assert df.attrs["runs"][0].model is None  # keep_models=False applies to the table's copy


def test_reuse_accepts_a_sweep_table_and_its_runs_match_a_fresh_training(tmp_path):
    first = sweep(small(tmp_path), {"learning_rate": [1e-3, 2e-3]}, progress=False)
    again = sweep(small(tmp_path), {"learning_rate": [2e-3, 4e-3]}, reuse=first, progress=False)
    assert again.loc[0, "path"] == first.loc[1, "path"]
    fresh = sweep(small(tmp_path, run_name="fresh"), {"learning_rate": [2e-3]}, progress=False)
    assert fresh.loc[0, "best_eval_loss"] == pytest.approx(again.loc[0, "best_eval_loss"])  # reuse is safe


def test_workers_train_side_by_side_in_grid_order_with_the_same_curves(tmp_path):
    cfg = small(tmp_path)
    grid = {"seed": [1, 2, 3]}
    serial = sweep(cfg.replace(output_dir=str(tmp_path / "serial")), grid, progress=False)
    reuse_first = serial.attrs["runs"][:1]
    parallel = sweep(cfg.replace(output_dir=str(tmp_path / "parallel")), grid, progress=False, workers=2,
                     reuse=reuse_first)
    assert list(parallel["seed"]) == [1, 2, 3]
    assert parallel.loc[0, "path"] == serial.loc[0, "path"]  # reused, not trained again
    assert all(str(tmp_path / "parallel") in p for p in parallel["path"][1:])  # trained by the workers
    # one thread in a worker, two here: the same run up to float rounding of the sums
    assert np.allclose(parallel["best_eval_loss"], serial["best_eval_loss"], rtol=1e-3)
    with pytest.raises(ValueError, match="workers=2"):
        sweep(cfg, grid, workers=2, callbacks=[lambda event, data: None])


def test_stop_button_with_workers_keeps_the_finished_rows_and_the_reused_ones_in_their_places(tmp_path, monkeypatch,
                                                                                               capsys):
    """The stop button while a sweep waits for its workers (simulated: a KeyboardInterrupt as the first
    trained run's progress line prints): the rows so far come back, the runs not started never train."""
    from nbkit.core import sweep as sweep_module
    cfg = small(tmp_path)
    first = sweep(cfg, {"seed": [1]}, progress=False).attrs["runs"]
    printed = []

    def stop_at_the_first_trained_run(i, n, run, label, reused):
        printed.append((label, reused))
        if not reused:
            raise KeyboardInterrupt

    monkeypatch.setattr(sweep_module, "_print_progress", stop_at_the_first_trained_run)
    df = sweep(cfg, {"seed": list(range(1, 21))}, workers=2, reuse=first)
    assert list(df["seed"]) == [1, 2] and df.loc[0, "path"] == str(first[0].path)
    assert printed == [("seed=1", True), ("seed=2", False)]
    assert "sweep interrupted: 1 of 19 runs to train finished" in capsys.readouterr().out
    from nbkit.core.workers import run_side_by_side
    run_side_by_side(sweep_module.train_in_worker, [(cfg.replace(max_steps=1, seed=99), False)] * 4, 2)  # drain
    trained = {load_run(p).config["seed"] for p in run_folders(tmp_path)}
    # seed 1 (reused), 2 (finished) and those already handed to the 2 workers (2 running, 3 in the pool's call
    # queue, and one or two more that a worker takes in the instant the stop is handled); the rest never train
    assert {1, 2} <= trained - {99} and len(trained - {99}) <= 10


def test_a_killed_worker_ends_the_sweep_with_a_message_and_the_next_sweep_gets_new_workers(tmp_path):
    import os
    import signal
    from nbkit.core import workers
    cfg = small(tmp_path, max_steps=40)
    executor = workers.pool(2)
    os.kill(executor.submit(os.getpid).result(), signal.SIGKILL)  # a worker dies (as under the out-of-memory killer)
    with pytest.raises(RuntimeError, match="worker process died"):
        sweep(cfg, {"seed": [1, 2]}, progress=False, workers=2)
    assert workers.pool(2) is not executor  # a fresh pool, not the broken one
    again = sweep(cfg.replace(max_steps=2), {"seed": [1, 2]}, progress=False, workers=2)
    assert list(again["status"]) == ["completed", "completed"]


def test_best_rows_picks_the_lowest_row_of_each_group_in_first_seen_order():
    from nbkit.core.sweep import best_rows

    df = pd.DataFrame({"optim": ["sgd", "sgd", "adamw", "adamw", "sgd"], "seed": [2, 2, 2, 1, 1],
                       "learning_rate": [1e-3, 3e-3, 1e-3, 3e-3, 1e-3], "best_eval_loss": [0.5, 0.4, 0.3, 0.2, 0.6]})
    per_seed = best_rows(df, "seed")
    assert per_seed["seed"].tolist() == [2, 1] and per_seed["best_eval_loss"].tolist() == [0.3, 0.2]
    both = best_rows(df, ["optim", "seed"])
    assert list(zip(both["optim"], both["seed"], both["learning_rate"])) == [
        ("sgd", 2, 3e-3), ("adamw", 2, 1e-3), ("adamw", 1, 3e-3), ("sgd", 1, 1e-3)]
    with pytest.raises(ValueError, match="'optim'"):
        best_rows(df.drop(columns="optim"), ["optim", "seed"])


def test_a_sweeps_lines_speak_chinese():
    """The real catalogue (nbkit/locale/zh_CN/LC_MESSAGES/nbkit.po): a progress line and a bad grid, in Chinese."""
    from types import SimpleNamespace

    from nbkit.core.i18n import set_language
    from nbkit.core.sweep import _progress_line

    run = SimpleNamespace(best_eval_loss=0.5, status="diverged", best_epoch=1,
                          summary={"diverged_at_step": 7, "train_seconds": 2.0})
    set_language("zh")
    try:
        assert _progress_line(2, 3, run, "learning_rate=1") == (
            "[2/3] learning_rate=1：diverged，最佳轮次 1，最佳 eval_loss 0.5000（在第 7 步发散），2.0 s")
        with pytest.raises(ValueError, match=r"^grid 为空：至少给出一个旋钮，例如 \{'learning_rate'"):
            grid_configs(TrainConfig(), {})
    finally:
        set_language("en")
