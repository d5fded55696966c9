"""nbkit.views.plots on real small runs of the tiny model: what each figure draws must match what
the run recorded (best epoch, divergence, early stop, clipping, the LR of every step)."""
import math

import matplotlib.pyplot as plt
import pytest

from nbkit import TrainConfig, load_run, train
from nbkit.core.runs import runs_table
from nbkit.views import plots
from conftest import tiny_config


small = tiny_config  # 80 rows: 4 batches of 16 per epoch (tests/conftest.py)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    before = plt.get_fignums()
    return {
        # 64 training rows, batch 16: 4 steps per epoch; 6 steps = epoch 1 and half of epoch 2
        "linear": train(small(out, max_steps=6, warmup_ratio=0.3)),
        "cosine": train(small(out, max_steps=4, lr_scheduler_type="cosine", warmup_steps=1, max_grad_norm=0.5)),
        "diverged": train(small(out, max_steps=4, learning_rate=5.0, optim="sgd", max_grad_norm=None)),
        # 32 training rows, batch 5 x 2: 4 steps per epoch. An epoch counts as better only if
        # eval_loss falls by > 100, so patience 1 stops it at the first epoch.
        "early": train(small(out, max_samples=40, num_train_epochs=3, per_device_train_batch_size=5,
                             gradient_accumulation_steps=2, early_stopping_patience=1,
                             early_stopping_threshold=100.0, predict_with_generate=True,
                             eval_generate_samples=4, max_new_tokens=4)),
        "fignums_before": before,
    }


def gid(ax, name):
    found = [line for line in ax.lines if line.get_gid() == name]
    assert found, f"no line with gid {name!r}"
    return found[0]


# ------------------------------------------------------------------ loss_curves

def test_loss_curves_mark_the_best_epoch(runs):
    run = runs["linear"]
    fig = plots.loss_curves(run)
    ax = fig.axes[0]
    best = gid(ax, "best_epoch")
    assert best.get_xdata()[0] == run.best_epoch
    assert f"best epoch {run.best_epoch}" in best.get_label()
    assert f"{run.best_eval_loss:.3g}" in best.get_label()
    eval_line = gid(ax, "eval_loss")
    assert list(eval_line.get_xdata()) == list(run.epochs["epoch"])  # epoch 0 = the base model included
    assert list(gid(ax, "train_loss").get_xdata()) == list(run.epochs["epoch"][1:])  # no train loss at 0
    assert len(gid(ax, "step_loss").get_xdata()) == len(run.steps)
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    assert len(fig.axes) == 1  # no accuracy axis without a metric


def test_loss_curves_show_divergence(runs):
    run = runs["diverged"]
    assert run.status == "diverged"
    step = run.summary["diverged_at_step"]
    marker = gid(plots.loss_curves(run).axes[0], "diverged")
    assert marker.get_label() == f"diverged at step {step}"
    assert marker.get_xdata()[0] == run.steps.loc[run.steps["step"] == step, "epoch"].iloc[0]


def test_loss_curves_show_early_stop_and_accuracy(runs):
    run = runs["early"]
    assert run.status == "early_stopped"
    fig = plots.loss_curves(run)
    stop = gid(fig.axes[0], "early_stop")
    assert stop.get_xdata()[0] == run.epochs["epoch"].max()
    accuracy = gid(fig.axes[1], "eval_accuracy")  # the twin axis
    assert list(accuracy.get_ydata()) == pytest.approx(list(run.epochs["eval_accuracy"]))


def test_loss_curves_draws_on_a_given_axes_and_loaded_runs(runs):
    fig = plots.step_traces(runs["linear"])  # any figure with axes
    ax = fig.axes[1]
    assert plots.loss_curves(load_run(runs["linear"].path), ax=ax) is fig


# ------------------------------------------------------------------ step_traces

def test_step_traces_clip_threshold_and_clipped_steps(runs):
    run = runs["cosine"]
    fig = plots.step_traces(run)
    ax_loss, ax_lr, ax_grad = fig.axes
    assert ax_loss.get_shared_x_axes().joined(ax_loss, ax_grad)
    assert list(gid(ax_lr, "learning_rate").get_ydata()) == list(run.steps["learning_rate"])
    assert gid(ax_grad, "clip").get_ydata()[0] == run.config["max_grad_norm"]
    clipped = run.steps[run.steps["clipped"].astype(bool)]
    assert len(clipped) > 0  # grad norms of a fresh fine-tune are far above 0.5
    assert list(gid(ax_grad, "clipped").get_xdata()) == list(clipped["step"])
    assert all(ax.get_ylabel() for ax in fig.axes) and ax_grad.get_xlabel()


def test_step_traces_without_clipping_draws_no_threshold(runs):
    ax_grad = plots.step_traces(runs["diverged"]).axes[2]
    assert not [line for line in ax_grad.lines if line.get_gid() in ("clip", "clipped")]


# ------------------------------------------------------------------ lr_schedule_preview / planned_steps

@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_schedule_preview_equals_the_recorded_lr(runs, name):
    run = runs[name]
    cfg = TrainConfig(**run.config)
    line = gid(plots.lr_schedule_preview(cfg).axes[0], "lr_schedule")
    assert list(line.get_xdata()) == list(run.steps["step"])
    assert list(line.get_ydata()) == pytest.approx(list(run.steps["learning_rate"]), rel=1e-9, abs=1e-15)


def test_planned_steps_match_the_trainer(runs):
    for run in (runs["linear"], runs["early"]):
        plan = plots.planned_steps(TrainConfig(**run.config))
        for key in ("num_train_examples", "steps_per_epoch", "total_steps", "warmup_steps"):
            assert plan[key] == run.summary[key], key


def test_schedule_preview_from_epochs_uses_the_dataset(runs):
    """No max_steps: the preview plans num_train_epochs x steps per epoch from the data, and its
    first steps are the LRs the (early-stopped) run really used."""
    run = runs["early"]
    line = gid(plots.lr_schedule_preview(TrainConfig(**run.config)).axes[0], "lr_schedule")
    assert len(line.get_xdata()) == run.summary["total_steps"] > len(run.steps)
    assert list(line.get_ydata()[:len(run.steps)]) == pytest.approx(list(run.steps["learning_rate"]))


def test_schedule_preview_overlays_configs_labelled_by_difference():
    cfg = TrainConfig(max_steps=20, warmup_ratio=0.1)
    cfgs = [cfg, cfg.replace(lr_scheduler_type="cosine"), cfg.replace(lr_scheduler_type="reduce_lr_on_plateau")]
    ax = plots.lr_schedule_preview(cfgs).axes[0]
    lines = [line for line in ax.lines if line.get_gid() == "lr_schedule"]
    assert [line.get_label() for line in lines] == [f"lr_scheduler_type={c.lr_scheduler_type}" for c in cfgs]
    assert set(lines[2].get_ydata()) == {cfg.learning_rate}  # plateau: constant start
    assert "reduce_lr_on_plateau" in ax.get_title()
    assert "reduce_lr_on_plateau" not in plots.lr_schedule_preview(cfgs[:2]).axes[0].get_title()
    warmup = math.ceil(0.1 * 20)
    assert lines[0].get_ydata()[0] == 0 and lines[0].get_ydata()[warmup] == cfg.learning_rate


def test_step_decay_preview_needs_steps_per_epoch():
    cfg = TrainConfig(max_steps=12, lr_scheduler_type="step", lr_scheduler_kwargs={"step_size": 1, "gamma": 0.5})
    y = gid(plots.lr_schedule_preview(cfg, steps_per_epoch=4).axes[0], "lr_schedule").get_ydata()
    assert list(y) == pytest.approx([cfg.learning_rate * 0.5 ** (i // 4) for i in range(12)])


# ------------------------------------------------------------------ compare_runs / runs_table

def test_compare_runs_labels_by_the_differing_knob(runs):
    base = runs["linear"]
    chosen = [base, runs["diverged"]]
    ax = plots.compare_runs(chosen).axes[0]
    lines = [line for line in ax.lines if line.get_gid() == "run"]
    assert "learning_rate=0.001" in lines[0].get_label() and "optim=adamw_torch" in lines[0].get_label()
    assert "learning_rate=5" in lines[1].get_label() and "diverged" in lines[1].get_label()
    assert lines[1].get_linestyle() == "--" and lines[0].get_linestyle() == "-"
    assert list(lines[0].get_ydata()) == list(base.epochs["eval_loss"])
    assert "learning_rate" in ax.get_title()


def test_compare_runs_per_step_and_bad_metric(runs):
    chosen = [runs["linear"], runs["cosine"]]
    ax = plots.compare_runs(chosen, per="step").axes[0]
    lines = [line for line in ax.lines if line.get_gid() == "run"]
    assert [list(line.get_xdata()) for line in lines] == [list(r.steps["step"]) for r in chosen]
    assert "lr_scheduler_type=cosine" in lines[1].get_label()
    with pytest.raises(ValueError, match="not a column"):
        plots.compare_runs(chosen, metric="eval_accuracy")


def test_runs_table_has_a_row_per_run_with_the_differing_knobs(runs):
    chosen = [runs["linear"], runs["diverged"], runs["early"]]
    table = runs_table([r.path for r in chosen])  # folders work as well as Runs
    assert list(table["status"]) == [r.status for r in chosen]
    assert list(table["learning_rate"]) == [r.config["learning_rate"] for r in chosen]
    assert "output_dir" not in table and "model" not in table  # same in all: not a column
    assert list(table["best_epoch"]) == [r.best_epoch for r in chosen]
    assert math.isnan(table["final_eval_accuracy"][0]) and table["final_eval_accuracy"][2] >= 0


# ------------------------------------------------------------------ no global state

def test_figures_leave_pyplot_alone_and_save(runs, tmp_path):
    figures = [plots.loss_curves(runs["early"]), plots.step_traces(runs["diverged"]),
               plots.lr_schedule_preview(TrainConfig(max_steps=5)),
               plots.compare_runs([runs["linear"], runs["cosine"], runs["diverged"]])]
    assert plt.get_fignums() == runs["fignums_before"]
    for i, fig in enumerate(figures):
        fig.savefig(tmp_path / f"{i}.png")
        assert (tmp_path / f"{i}.png").stat().st_size > 1000


def test_shade_range_marks_the_rule_band_on_a_sweep_plot():
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot()
    ax.plot([1e-5, 1e-3, 1e-1], [3.0, 1.0, 2.0])
    ax.set_xscale("log")
    plots.shade_range(fig, 3e-5, 3e-4, label="1/100 to 1/10 of the pretraining LR")
    band = [p for p in ax.patches if p.get_gid() == "range"]
    assert len(band) == 1
    left, width = band[0].get_x(), band[0].get_width()  # a Rectangle in (data x, axes y)
    assert left == pytest.approx(3e-5) and left + width == pytest.approx(3e-4)
    assert "1/100 to 1/10 of the pretraining LR" in [t.get_text() for t in ax.get_legend().get_texts()]
    with pytest.raises(ValueError, match="low"):
        plots.shade_range(fig, 1e-3, 1e-4, label="backwards")


# ------------------------------------------------------------------ sweep_heatmap

def _two_knob_table():
    """A made-up 3 x 2 sweep table: the best weight decay is 0.1 at LR 1e-3 and 0 at 1e-2;
    one run diverged."""
    import pandas as pd
    rows = [(1e-3, 0.0, 0.50, "completed"), (1e-3, 0.1, 0.40, "completed"),
            (1e-2, 0.0, 0.30, "completed"), (1e-2, 0.1, 0.35, "completed"),
            (1e-1, 0.0, float("nan"), "diverged"), (1e-1, 0.1, 0.90, "completed")]
    return pd.DataFrame(rows, columns=["learning_rate", "weight_decay", "best_eval_loss", "status"])


def test_sweep_heatmap_marks_the_best_cell_and_each_columns_best():
    df = _two_knob_table()
    fig = plots.sweep_heatmap(df, x="learning_rate", y="weight_decay")
    ax = fig.axes[0]
    best = [p for p in ax.patches if p.get_gid() == "best"]
    assert len(best) == 1
    row, column = df.loc[df["best_eval_loss"].idxmin(), ["weight_decay", "learning_rate"]]
    xs, ys = sorted(df["learning_rate"].unique()), sorted(df["weight_decay"].unique())
    assert best[0].get_xy() == (xs.index(column) - 0.5, ys.index(row) - 0.5)
    dots = [line for line in ax.lines if line.get_gid() == "column_best"]
    expected = plots.column_best(df, "learning_rate", "weight_decay")
    assert len(dots) == len(xs) == len(expected)
    for dot, lr in zip(sorted(dots, key=lambda d: d.get_xdata()[0]), xs):
        assert round(dot.get_ydata()[0] + 0.32) == ys.index(expected[lr])
    texts = [t.get_text() for t in ax.texts]
    assert "div" in texts and f"{df['best_eval_loss'].min():.3g}" in texts
    assert ax.get_xlabel() == "learning_rate" and ax.get_ylabel() == "weight_decay"


def test_column_best_follows_the_metric_and_skips_diverged_runs():
    df = _two_knob_table()
    best = plots.column_best(df, "learning_rate", "weight_decay")
    for lr, wd in best.items():
        ok = df[(df["learning_rate"] == lr) & (df["status"] != "diverged")]
        assert wd == ok.loc[ok["best_eval_loss"].idxmin(), "weight_decay"]
    with pytest.raises(ValueError, match="not a column"):
        plots.sweep_heatmap(df, metric="eval_accuracy")


def test_zoom_after_base_scales_to_the_trained_epochs(runs):
    fig = plots.loss_curves(runs["early"])
    ax = fig.axes[0]
    trained = runs["early"].epochs.query("epoch >= 1")
    plots.zoom_after_base(fig)
    top = ax.get_ylim()[1]
    assert top >= max(trained["eval_loss"].max(), trained["train_loss"].max())
    base_loss = runs["early"].epochs.query("epoch == 0")["eval_loss"].iloc[0]
    said = [t for t in ax.texts if t.get_gid() == "base_off_chart"]
    assert len(said) == (1 if base_loss > top else 0)  # off the chart: a note at the top says so
    fig = plots.compare_runs([runs["linear"], runs["cosine"]])
    plots.zoom_after_base(fig)
    assert fig.axes[0].get_ylim()[0] == 0


def test_figures_speak_chinese(runs):
    """The real catalogue (nbkit/locale/zh_CN/LC_MESSAGES/nbkit.po): titles, axis labels, legends and notes."""
    from nbkit.core.i18n import set_language

    run = runs["diverged"]
    set_language("zh")
    try:
        ax = plots.loss_curves(run).axes[0]
        assert ax.get_xlabel() == "轮次（0 = 基础模型，训练前）" and ax.get_title().startswith("每轮次损失：")
        assert gid(ax, "diverged").get_label() == f"在第 {run.summary['diverged_at_step']} 步发散"
        assert gid(ax, "eval_loss").get_label() == "验证损失"
        preview = plots.lr_schedule_preview(TrainConfig(max_steps=5)).axes[0]
        assert preview.get_title() == "学习率调度（预览：未进行训练）" and preview.get_xlabel() == "优化器步"
        heatmap = plots.sweep_heatmap(_two_knob_table()).axes[0]
        assert "发散" in [t.get_text() for t in heatmap.texts] and "最佳单元格" in heatmap.get_title()
        with pytest.raises(ValueError, match="不是扫描表的列"):
            plots.sweep_heatmap(_two_knob_table(), metric="eval_accuracy")
        set_language("en")
        assert plots.loss_curves(run).axes[0].get_xlabel() == "epoch (0 = base model, before training)"
    finally:
        set_language("en")
