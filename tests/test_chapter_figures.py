"""nbkit.views.chapter_figures: each chapter figure draws the lab table it is given (every row, the
right column, the reference lines at the right place) and never touches pyplot. Tables are small and
made here; runs are Run objects with a few steps: nothing trains."""
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from nbkit.core.runs import Run
from nbkit.views import chapter_figures as cf


@pytest.fixture(autouse=True)
def no_pyplot_figure():
    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before  # a Figure, not a pyplot figure left open in the kernel


def lines_by_label(ax) -> dict:
    return {line.get_label(): line for line in ax.get_lines()}


def bar_heights(ax) -> list[float]:
    return [patch.get_height() for patch in ax.patches]


def test_noise_figure_draws_each_measure_with_its_power_law_through_the_smallest_batch():
    spread = pd.DataFrame({"batch_size": [4, 8, 16, 32], "gradient_variance": [8.0, 4.2, 1.9, 1.1],
                           "loss_std": [0.4, 0.3, 0.19, 0.15]})
    fig = cf.noise_figure(spread)
    assert isinstance(fig, Figure)
    for ax, column, power in zip(fig.axes, ["gradient_variance", "loss_std"], [1.0, 0.5]):
        assert ax.get_xscale() == ax.get_yscale() == "log"
        lines = lines_by_label(ax)
        np.testing.assert_allclose(lines["measured"].get_ydata(), spread[column])
        reference = lines[f"1/B^{power:g} from the smallest"].get_ydata()
        assert reference[0] == spread[column].iloc[0]
        np.testing.assert_allclose(reference, spread[column].iloc[0] * (4 / spread["batch_size"]) ** power)


def test_throughput_memory_figure_plots_memory_only_where_it_was_measured():
    table = pd.DataFrame({"batch_size": [4, 8, 16], "tokens_per_second": [900.0, 1500.0, 2100.0],
                          "measured_MB": [120.0, np.nan, 300.0], "planned_MB": [110.0, np.nan, 280.0]})
    left, right = cf.throughput_memory_figure(table).axes
    np.testing.assert_allclose(left.get_lines()[0].get_ydata(), table["tokens_per_second"])
    lines = lines_by_label(right)
    np.testing.assert_allclose(lines["measured peak"].get_xdata(), [4, 16])
    np.testing.assert_allclose(lines["planned (nbkit.core.memory)"].get_ydata(), [110.0, 280.0])


def a_run(batch, losses, accumulation=1, name="run") -> Run:
    steps = pd.DataFrame({"step": np.arange(1, len(losses) + 1), "loss": losses})
    return Run(path=Path(name), config={"per_device_train_batch_size": batch,
                                        "gradient_accumulation_steps": accumulation},
               steps=steps, epochs=pd.DataFrame(), summary={})


def test_samples_figure_puts_every_run_on_samples_seen():
    runs = [a_run(4, [2.0, 1.8, 1.7, 1.6]), a_run(8, [2.0, 1.5], accumulation=2)]
    ax = cf.samples_figure(runs, ["B=4", "B=16"], smooth_samples=1).axes[0]
    lines = lines_by_label(ax)
    np.testing.assert_allclose(lines["B=4"].get_xdata(), [4, 8, 12, 16])
    np.testing.assert_allclose(lines["B=16"].get_xdata(), [16, 32])  # batch x accumulation per step
    np.testing.assert_allclose(lines["B=4"].get_ydata(), [2.0, 1.8, 1.7, 1.6])  # a window of 1: unsmoothed


def test_an_infinite_noise_scale_is_a_hatched_bar_above_every_finite_one():
    table = pd.DataFrame({"seed": [42, 43], "b_simple_base": [50.0, np.inf], "b_simple_end": [200.0, 80.0]})
    ax = cf.noise_scale_seeds_figure(table).axes[0]
    hatched = [p for p in ax.patches if p.get_hatch()]
    finite = [p.get_height() for p in ax.patches if not p.get_hatch()]
    assert len(hatched) == 1 and sorted(finite) == [50.0, 80.0, 200.0]
    assert hatched[0].get_height() > max(finite)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["seed 42", "seed 43"]


def methods_table() -> pd.DataFrame:
    return pd.DataFrame({"trainable_params": [1_000_000, 8_000], "weights_MB": [4.0, 4.0],
                         "gradients_MB": [4.0, 0.1], "optimizer_MB": [8.0, 0.2], "best_eval_loss": [1.1, 1.2],
                         "forgetting": [0.3, 0.05]}, index=["full", "lora"])


def test_plot_methods_stacks_the_memory_and_dots_each_seed():
    rows = pd.DataFrame({"method": ["full", "full", "lora", "lora"], "best_eval_loss": [1.0, 1.2, 1.15, 1.25],
                         "forgetting": [0.2, 0.4, 0.0, 0.1]})
    params, memory, loss, forgetting = cf.plot_methods(methods_table(), rows).axes
    assert bar_heights(params) == [1_000_000, 8_000] and params.get_yscale() == "log"
    tops = {}
    for patch in memory.patches:  # stacked: each method's top is the sum of its three parts
        tops[patch.get_x()] = max(tops.get(patch.get_x(), 0), patch.get_y() + patch.get_height())
    assert sorted(tops.values()) == pytest.approx([4.3, 16.0])
    dots = sorted(y for line in loss.get_lines() for y in line.get_ydata())
    assert dots == sorted(rows["best_eval_loss"])
    assert sorted(y for line in forgetting.get_lines() for y in np.atleast_1d(line.get_ydata())
                  if line.get_marker() == "o") == sorted(rows["forgetting"])


def test_plot_ranks_draws_each_seed_and_their_mean_per_task():
    table = pd.DataFrame({"lora_rank": [4, 8, 4, 8], "seed": [0, 0, 1, 1], "best_eval_loss": [1.4, 1.2, 1.6, 1.0],
                          "trainable_params": [4096, 8192, 4096, 8192]})
    fig = cf.plot_ranks({"arithmetic": table, "reviews": table})
    assert len(fig.axes) == 3 and fig.axes[0].get_title() == "arithmetic"
    lines = lines_by_label(fig.axes[0])
    np.testing.assert_allclose(lines["mean"].get_ydata(), [1.5, 1.1])
    np.testing.assert_allclose(lines["seed 1"].get_ydata(), [1.6, 1.0])
    np.testing.assert_allclose(fig.axes[-1].get_lines()[0].get_ydata(), [4096, 8192])


def test_plot_update_norms_draws_a_line_per_scaling_and_seed():
    table = pd.DataFrame({"use_rslora": [False, False, True, True] * 2, "seed": [0] * 4 + [1] * 4,
                          "lora_rank": [4, 16] * 4, "update_norm": [1.0, 0.5, 1.0, 1.0, 1.1, 0.6, 1.1, 1.0]})
    ax = cf.plot_update_norms(table).axes[0]
    labels = sorted(line.get_label() for line in ax.get_lines())
    assert labels == ["rsLoRA: alpha / sqrt(r), seed 0", "rsLoRA: alpha / sqrt(r), seed 1",
                      "standard: alpha / r, seed 0", "standard: alpha / r, seed 1"]


def test_band_figure_draws_the_seed_band_under_each_run():
    band = pd.DataFrame({"min": [1.0, 0.8], "max": [1.4, 1.0], "mean": [1.2, 0.9]}, index=[1, 2])
    ax = cf.band_figure(band, {"lr 1e-2": a_run(4, [1.5, 1.3])}).axes[0]
    lines = lines_by_label(ax)
    np.testing.assert_allclose(lines["mean over seeds"].get_ydata(), [1.2, 0.9])
    np.testing.assert_allclose(lines["lr 1e-2"].get_ydata(), [1.5, 1.3])
    assert "seed band (min-max)" in [h.get_label() for h in ax.collections]


def test_bar_figure_has_a_bar_per_row_named_by_x():
    table = pd.DataFrame({"workers": [1, 2, 4], "tokens_per_second": [100.0, 190.0, 330.0]})
    ax = cf.bar_figure(table, "workers", "tokens_per_second", "workers against throughput").axes[0]
    assert bar_heights(ax) == [100.0, 190.0, 330.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4"]
    assert ax.get_title() == "workers against throughput" and ax.get_xlabel() == "workers"


def test_chapter_figures_speak_chinese():
    """The real catalogue (nbkit/locale/zh_CN/LC_MESSAGES/nbkit.po): axis labels and legends in Chinese."""
    from nbkit.core.i18n import set_language

    spread = pd.DataFrame({"batch_size": [4, 8], "gradient_variance": [8.0, 4.2], "loss_std": [0.4, 0.3]})
    band = pd.DataFrame({"min": [1.0, 0.8], "max": [1.4, 1.0], "mean": [1.2, 0.9]}, index=[1, 2])
    set_language("zh")
    try:
        ax = cf.noise_figure(spread).axes[0]
        assert ax.get_xlabel() == "批量大小" and ax.get_ylabel() == "批量梯度的方差"
        assert {"实测", "1/B^1，过最小批量处"} <= set(lines_by_label(ax))
        ax = cf.band_figure(band, {"lr 1e-2": a_run(4, [1.5, 1.3])}).axes[0]
        assert "各种子的均值" in lines_by_label(ax) and ax.get_xlabel() == "优化器步"
        assert "种子波动带（最小值-最大值）" in [h.get_label() for h in ax.collections]
        assert cf.plot_methods(methods_table()).axes[1].get_title() == "内存，MB（实测）"
        set_language("en")
        assert cf.noise_figure(spread).axes[0].get_xlabel() == "batch size"
    finally:
        set_language("en")
