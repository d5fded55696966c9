"""nbkit.views.study_plots on small hand-built studies: each figure builds, draws one artist per
trial it claims to, marks pruned and failed trials apart from completed ones, and the PNGs land."""
import math

import matplotlib.pyplot as plt
import numpy as np
import optuna
import pytest
from matplotlib.colors import to_hex
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from nbkit.core import study_analysis as sa
from nbkit.views import study_plots as sp

optuna.logging.set_verbosity(optuna.logging.WARNING)

DISTRIBUTIONS = {"learning_rate": FloatDistribution(1e-5, 1e-2, log=True),
                 "warmup_ratio": FloatDistribution(0.0, 0.2),
                 "optim": CategoricalDistribution(["adamw_torch", "sgd"])}
SPEC = {"study_name": "small", "scientific": {"learning_rate": {"low": 1e-5, "high": 1e-2, "log": True}},
        "nuisance": {"warmup_ratio": {"low": 0.0, "high": 0.2, "log": False}, "optim": ["adamw_torch", "sgd"]},
        "fixed": {"seed": 0}}


def loss(lr, warmup, optim):
    return 1.0 + (math.log10(lr) + 3.5) ** 2 / 4 + warmup + (0.3 if optim == "sgd" else 0.0)


def small_study(n=14, n_pruned=3, n_failed=1, n_diverged=1, seed=0, best_lr=None):
    """n completed trials, then pruned (cut after 1-2 of 4 epochs), failed and diverged (COMPLETE, inf) ones."""
    rng = np.random.default_rng(seed)
    study = optuna.create_study(direction="minimize")
    study.set_user_attr("nbkit_spec", SPEC)
    kinds = ["completed"] * n + ["pruned"] * n_pruned + ["failed"] * n_failed + ["diverged"] * n_diverged
    for i, kind in enumerate(kinds):
        params = {"learning_rate": float(10 ** rng.uniform(-5, -2)), "warmup_ratio": float(rng.uniform(0, 0.2)),
                  "optim": ["adamw_torch", "sgd"][i % 2]}
        if best_lr is not None and i == 0:
            params["learning_rate"] = best_lr
        final = loss(params["learning_rate"], params["warmup_ratio"], params["optim"])
        if best_lr is not None and i == 0:
            final = 0.5
        epochs = {"completed": 4, "pruned": 1 + i % 2, "failed": 2, "diverged": 3}[kind]
        curve = {e: final + 0.2 * (4 - e) for e in range(1, epochs + 1)}
        value = {"completed": final, "diverged": math.inf}.get(kind)
        state = {"pruned": TrialState.PRUNED, "failed": TrialState.FAIL}.get(kind, TrialState.COMPLETE)
        study.add_trial(create_trial(params=params, distributions=DISTRIBUTIONS, value=value, state=state,
                                     intermediate_values=curve,
                                     user_attrs={"run_dir": f"runs/{i}", "run_status": kind}))
    return study


@pytest.fixture(scope="module")
def study():
    return small_study()


def with_gid(ax, gid):
    return [a for a in ax.lines + ax.patches + ax.texts if a.get_gid() == gid]


def count_of(study, state):
    return sum(t.state == state for t in study.trials)


def test_knob_plots_has_a_panel_per_searched_knob_and_marks_pruned_and_failed(study):
    fig = sp.knob_plots(study)
    space = sa.search_space(study)
    assert [ax.get_xlabel().split(" ")[0] for ax in fig.axes] == list(space)
    for ax, knob in zip(fig.axes, space):
        completed, pruned, failed = (with_gid(ax, g)[0] for g in ("completed", "pruned", "failed"))
        assert len(completed.get_xdata()) == len(sa.usable_trials(study))
        assert len(pruned.get_xdata()) == count_of(study, TrialState.PRUNED)
        assert len(failed.get_xdata()) == len(study.trials) - len(sa.usable_trials(study)) - len(pruned.get_xdata())
        assert pruned.get_marker() != completed.get_marker() and pruned.get_color() != completed.get_color()
        assert failed.get_marker() != completed.get_marker()
        assert with_gid(ax, "best")[0].get_ydata()[0] == sa.best_trial(study).value
        assert ax.get_ylabel() and ax.get_title().startswith(knob)
    lr_axis = fig.axes[list(space).index("learning_rate")]
    assert lr_axis.get_xscale() == "log"
    assert fig.axes[list(space).index("warmup_ratio")].get_xscale() == "linear"
    optim_axis = fig.axes[list(space).index("optim")]
    assert [t.get_text() for t in optim_axis.get_xticklabels()] == ["adamw_torch", "sgd"]


def test_knob_plots_put_an_edge_warning_on_the_axis_title():
    study = small_study(best_lr=1e-2)  # the best trial at the top of the learning-rate range
    assert "learning_rate" in sa.edge_warnings_by_knob(study)
    fig = sp.knob_plots(study)
    titles = {ax.get_xlabel().split(" ")[0]: ax.get_title() for ax in fig.axes}
    assert "widen the range upward" in titles["learning_rate"].replace("\n", " ")
    assert "widen" not in titles["optim"]


def test_isolation_plot_draws_the_best_per_scientific_value(study):
    fig = sp.isolation_plot(study)
    ax = fig.axes[0]
    table = sa.isolation(study)
    line = with_gid(ax, "isolation")[0]
    ok = table["best_value"].notna()
    assert list(line.get_ydata()) == list(table.loc[ok, "best_value"])
    assert list(line.get_xdata()) == list(table.loc[ok, "learning_rate"])
    winners = [t.get_text().replace("\n", ", ") for t in with_gid(ax, "winner")]  # a knob a line
    assert winners == list(table.loc[ok, "nuisance"])
    # the dots behind: every completed trial at or above its value's best
    assert len(with_gid(ax, "trial")[0].get_xdata()) == len(sa.usable_trials(study))
    assert min(with_gid(ax, "trial")[0].get_ydata()) == min(line.get_ydata())
    assert ax.get_xscale() == "log" and "learning_rate" in ax.get_xlabel()
    assert table.attrs["binned"] == ["learning_rate"]  # 14 values of a log range: cut into bins
    assert len(with_gid(ax, "bin_edge")) == len(sa.bin_edges(sa.search_space(study)["learning_rate"]))


def test_parallel_coordinates_draw_a_line_per_completed_trial_coloured_by_loss(study):
    fig = sp.parallel_coordinates(study)
    ax = fig.axes[0]
    lines = with_gid(ax, "trial")
    assert len(lines) == len(sa.usable_trials(study))
    assert len(fig.axes) == 2  # the axes and its colour bar
    assert [t.get_text() for t in ax.get_xticklabels()] == list(sa.search_space(study)) + ["validation loss"]
    # lower loss, brighter colour: the line ending lowest on the loss axis has the brightest colour
    ends = [line.get_ydata()[-1] for line in lines]
    brightness = [sum(line.get_color()[:3]) for line in lines]
    assert np.argmin(ends) == np.argmax(brightness)
    assert all(0 <= y <= 1 for line in lines for y in line.get_ydata() if not math.isnan(y))


def test_importance_plot_puts_the_most_important_knob_on_top(study):
    fig = sp.importance_plot(study)
    ax = fig.axes[0]
    bars = with_gid(ax, "importance")
    scores = sa.importance(study)
    assert len(bars) == len(scores)
    widths = {label.get_text(): bar.get_width() for label, bar in zip(ax.get_yticklabels(), bars)}
    assert widths == pytest.approx(scores)
    top = max(bars, key=lambda b: b.get_y())
    assert top.get_width() == max(scores.values())


def test_intermediate_plot_shows_pruned_curves_cut(study):
    fig = sp.intermediate_plot(study)
    ax = fig.axes[0]
    pruned, cuts = with_gid(ax, "pruned"), with_gid(ax, "cut")
    assert len(pruned) == len(cuts) == count_of(study, TrialState.PRUNED)
    completed = with_gid(ax, "completed") + with_gid(ax, "best")
    assert len(completed) == len(sa.usable_trials(study))
    assert pruned[0].get_linestyle() != completed[0].get_linestyle()
    assert to_hex(pruned[0].get_color()) != to_hex(completed[0].get_color())
    longest = max(len(t.intermediate_values) for t in study.trials)
    assert all(len(line.get_xdata()) < longest for line in pruned)  # cut before the end
    assert all(cut.get_xdata()[0] == line.get_xdata()[-1] for cut, line in zip(cuts, pruned))
    assert len(with_gid(ax, "failed")) == len(study.trials) - len(completed) - len(pruned)


def test_save_study_figures_writes_every_png(study, tmp_path):
    before = plt.get_fignums()
    paths = sp.save_study_figures(study, tmp_path / "figs")
    assert [p.name for p in paths] == [f"{name}.png" for name, _ in sp.FIGURES]
    assert all(p.exists() and p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    assert plt.get_fignums() == before  # nothing left in pyplot's list


def test_save_study_figures_skips_only_importance_for_one_trial(tmp_path):
    one = small_study(n=1, n_pruned=1, n_failed=0, n_diverged=0)
    with pytest.warns(UserWarning, match="importance.png not written: .*at least 2"):
        paths = sp.save_study_figures(one, tmp_path)
    assert sorted(p.name for p in paths) == sorted(f"{name}.png" for name, _ in sp.FIGURES if name != "importance")
    assert not (tmp_path / "importance.png").exists()


def with_dead_worker():
    """The study plus a trial whose worker died after one epoch (FAIL, no "error", no "run_status") and
    one whose code raised (FAIL with "error")."""
    study = optuna.create_study(direction="minimize")
    study.set_user_attr("nbkit_spec", SPEC)
    for t in small_study(n=6, n_pruned=1, n_failed=0, n_diverged=1).trials:
        study.add_trial(t)
    params = {"learning_rate": 1e-3, "warmup_ratio": 0.1, "optim": "sgd"}
    study.add_trial(create_trial(params=params, distributions=DISTRIBUTIONS, state=TrialState.FAIL,
                                 intermediate_values={1: 1.8}, user_attrs={"run_dir": "runs/dead"}))
    study.add_trial(create_trial(params=params, distributions=DISTRIBUTIONS, state=TrialState.FAIL,
                                 intermediate_values={1: 1.9},
                                 user_attrs={"run_dir": "runs/raised", "error": "ValueError: bad batch"}))
    return study


def test_a_dead_worker_has_its_own_marker_and_label_apart_from_failed_or_diverged():
    study = with_dead_worker()
    ax = sp.knob_plots(study).axes[0]
    died, failed = with_gid(ax, "worker_died")[0], with_gid(ax, "failed")[0]
    assert len(died.get_xdata()) == 1 and len(failed.get_xdata()) == 2  # the diverged run and the one that raised
    assert died.get_marker() != failed.get_marker() and to_hex(died.get_color()) != to_hex(failed.get_color())
    assert died.get_label() == "worker died (1): no loss" and failed.get_label() == "failed or diverged (2)"
    curves = sp.intermediate_plot(study).axes[0]
    (dead,) = with_gid(curves, "worker_died")
    assert dead.get_label().startswith("worker died") and list(dead.get_xdata()) == [1]
    assert with_gid(curves, "died_here")[0].get_marker() == died.get_marker()
    assert all(line.get_linestyle() != dead.get_linestyle() for line in with_gid(curves, "failed"))


def test_the_importance_hint_comes_from_the_analysis():
    assert sp.FEW_FOR_IMPORTANCE is sa.FEW_FOR_IMPORTANCE  # one constant, in core
    study = small_study()
    title = sp.importance_plot(study).axes[0].get_title()
    assert title.endswith(sa.importance_hint(len(sa.usable_trials(study))))


def test_save_study_figures_lists_what_it_cannot_draw_and_why(tmp_path):
    tuning = {"study_name": "tune", "scientific": {}, "nuisance": SPEC["nuisance"], "fixed": {}}
    study = small_study()
    study.set_user_attr("nbkit_spec", tuning)  # no scientific knob: nothing to isolate
    notes = []
    paths = sp.save_study_figures(study, tmp_path, notes=notes)
    assert [p.name for p in paths] == [f"{name}.png" for name, _ in sp.FIGURES if name != "isolation"]
    assert notes == [f"{tmp_path / 'isolation.png'} not written: the study has no scientific knob: it tunes "
                     "warmup_ratio, optim and asks no question about a knob, so there is nothing to isolate; "
                     "pass scientific='KNOB' to see the best validation loss per value of one of its knobs"]


def test_the_isolation_and_knob_plots_read_in_chinese():
    """In Chinese (nbkit/locale/zh_CN/LC_MESSAGES/nbkit.po): the isolation plot's title and axis, the per-knob
    plots' title, legend and edge warning."""
    from nbkit.core.i18n import set_language

    study = small_study(best_lr=1e-2)  # the best trial at the top of the learning-rate range
    set_language("zh")
    try:
        ax = sp.isolation_plot(study).axes[0]
        assert ax.get_title().replace("\n", "").startswith("隔离图：每个 learning_rate 取值的最佳验证损失")
        assert ax.get_ylabel() == "最佳验证损失"
        fig = sp.knob_plots(study)
        assert fig.get_suptitle() == f"验证损失随各旋钮取值的变化（{len(study.trials)} 个试验）"
        titles = {ax.get_title().split("\n")[0]: ax.get_title() for ax in fig.axes}
        assert "先向上扩大范围" in titles["learning_rate"].replace("\n", "")
        labels = fig.axes[0].get_legend_handles_labels()[1]
        assert any(label.startswith("已剪枝（") for label in labels)
    finally:
        set_language("en")
    assert sp.knob_plots(study).get_suptitle().startswith("Validation loss against each knob")
