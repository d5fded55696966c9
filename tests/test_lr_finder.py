"""nbkit.core.lr_finder (the LR range test) and plots.lr_finder_plot, on real short ramps of the
tiny model: the ramp, the early stop, the restored weights, determinism, the suggestion."""
import inspect
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from nbkit.core.lr_finder import (LRRangeTest, SKIP_START, exponential_lrs, lr_range_test, slopes_per_decade,
                                  suggest_lr)
from nbkit.core.models import load_model, load_tokenizer
from nbkit.core.train import build_datasets, build_train_loader
from nbkit.views import plots
from conftest import tiny_config

# to 100 with AdamW the tiny model blows up well before the last step; smoothing 0.9 lets
# the smoothed loss follow the blow-up within a few steps
DIVERGING = dict(start_lr=1e-5, end_lr=100.0, num_steps=40, smoothing=0.9)
GENTLE = dict(start_lr=1e-6, end_lr=1e-2, num_steps=30)  # never leaves the basin: runs to the end


small = tiny_config  # 80 rows: 4 batches of 16 per epoch (tests/conftest.py)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return small(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def diverging(cfg):
    return lr_range_test(cfg, **DIVERGING)


@pytest.fixture(scope="module")
def gentle(cfg):
    return lr_range_test(cfg, **GENTLE)


def gid(ax, name):
    found = [line for line in ax.lines if line.get_gid() == name]
    assert found, f"no line with gid {name!r}"
    return found[0]


# ------------------------------------------------------------------ the ramp

def test_ramp_is_exponential_from_start_to_end():
    lrs = np.array(exponential_lrs(1e-7, 1.0, 50))
    assert len(lrs) == 50
    assert lrs[0] == 1e-7 and lrs[-1] == pytest.approx(1.0)
    assert (np.diff(lrs) > 0).all()
    ratios = lrs[1:] / lrs[:-1]  # a constant factor per step: equal steps on a log scale
    np.testing.assert_allclose(ratios, (1.0 / 1e-7) ** (1 / 49), rtol=1e-9)


def test_full_ramp_uses_every_lr_and_cycles_the_loader(cfg, gentle):
    tokenizer = load_tokenizer(cfg)
    features, _, _ = build_datasets(cfg, tokenizer)
    assert GENTLE["num_steps"] > len(build_train_loader(cfg, features, tokenizer))  # more than an epoch
    assert not gentle.stopped_early and gentle.steps == GENTLE["num_steps"]
    assert "finished" in gentle.stop_reason
    np.testing.assert_allclose(gentle.lrs, exponential_lrs(GENTLE["start_lr"], GENTLE["end_lr"],
                                                           GENTLE["num_steps"]), rtol=1e-12)
    assert gentle.lrs[-1] == pytest.approx(GENTLE["end_lr"])
    assert all(math.isfinite(x) for x in gentle.losses + gentle.smoothed)


def test_smoothed_is_the_bias_corrected_average(gentle):
    beta, avg = inspect.signature(lr_range_test).parameters["smoothing"].default, 0.0  # the default smoothing
    for i, (loss, smoothed) in enumerate(zip(gentle.losses, gentle.smoothed)):
        avg = beta * avg + (1 - beta) * loss
        assert smoothed == pytest.approx(avg / (1 - beta ** (i + 1)))
    assert gentle.smoothed[0] == pytest.approx(gentle.losses[0])  # the first point is the loss itself


# ------------------------------------------------------------------ stopping, restoring, seeding

def test_huge_end_lr_stops_early_and_says_why(diverging):
    r = diverging
    assert r.stopped_early and r.steps < DIVERGING["num_steps"] and len(r.lrs) == r.steps
    assert "diverged" in r.stop_reason and f"step {r.steps}" in r.stop_reason
    last, best_before = r.smoothed[-1], min(r.smoothed[:-1])
    assert not math.isfinite(last) or last > 4.0 * best_before  # the rule that stopped it
    assert all(s <= 4.0 * min(r.smoothed[:i + 1]) for i, s in enumerate(r.smoothed[:-1]))  # not earlier
    np.testing.assert_allclose(r.lrs, exponential_lrs(DIVERGING["start_lr"], DIVERGING["end_lr"],
                                                      DIVERGING["num_steps"])[:r.steps], rtol=1e-12)


def test_model_passed_in_comes_back_exactly(cfg, diverging):
    model, tokenizer = load_model(cfg)
    model.eval()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    r = lr_range_test(cfg, model=model, tokenizer=tokenizer, **DIVERGING)
    assert r.stopped_early  # the weights went through a blow-up, and still:
    after = dict(model.named_parameters())
    assert before.keys() == after.keys()
    for name, p in after.items():
        assert torch.equal(p, before[name]), name
        assert p.grad is None, name
    assert not model.training  # eval mode, as it went in
    assert r.losses == diverging.losses  # the same steps as on a freshly loaded model


def test_same_seed_gives_identical_curves(cfg, diverging):
    again = lr_range_test(cfg, **DIVERGING)
    assert again.losses == diverging.losses and again.lrs == diverging.lrs
    assert again.suggestion == diverging.suggestion and again.stop_reason == diverging.stop_reason


# ------------------------------------------------------------------ the suggestion

@pytest.mark.parametrize("name", ["diverging", "gentle"])
def test_suggestion_inside_range_and_before_the_stop(name, request):
    r = request.getfixturevalue(name)
    assert r.suggestion_rule == "steepest descent"
    assert r.lrs[0] <= r.suggestion <= r.min_loss_lr <= r.lrs[-1]
    assert r.min_loss_lr == r.lrs[int(np.argmin(r.smoothed))]
    assert r.min_loss_lr_over_10 == pytest.approx(r.min_loss_lr / 10)
    if r.stopped_early:
        assert r.suggestion < r.lrs[-1]
    # the smoothed loss really falls there, and no later point before the minimum falls faster
    i, i_min = r.lrs.index(r.suggestion), int(np.argmin(r.smoothed))
    slopes = slopes_per_decade(r.lrs, r.smoothed)[:i_min + 1]
    assert slopes[i] < 0 and slopes[i] == slopes[SKIP_START:].min()


def test_suggestion_rule_on_a_known_curve():
    """A loss that falls along a logistic in log10(lr), centred at lr0, then rises: the
    steepest descent is at lr0, whatever the minimum does."""
    lrs = np.array(exponential_lrs(1e-6, 1.0, 121))
    x, lr0 = np.log10(lrs), 1e-3
    curve = 3.0 - 2.0 / (1 + np.exp(-4 * (x - np.log10(lr0)))) + np.where(x > -1, 5 * (x + 1) ** 2, 0)
    suggestion, min_loss_lr, rule = suggest_lr(lrs, curve)
    assert rule == "steepest descent"
    assert suggestion == pytest.approx(lr0, rel=0.05)
    assert min_loss_lr == lrs[np.argmin(curve)]
    # a NaN tail (a blow-up) is ignored, not an error
    with_nan = np.concatenate([curve[:100], [np.nan]])
    assert suggest_lr(lrs[:101], with_nan)[0] == suggestion


def test_two_noisy_batches_early_are_not_the_steepest_descent():
    """The capstone's tiny model on one seed: a flat start with two low batches in a row (14 points
    a decade), then the real descent two decades later. Read across a decade, the dip is small."""
    lrs = np.array(exponential_lrs(1e-7, 1.0, 100))
    x = np.log10(lrs)
    curve = 7.0 - 2.5 / (1 + np.exp(-3 * (x - np.log10(2e-3))))  # falls from 7 to 4.5 around 2e-3
    curve[7:9] -= [0.15, 0.3]  # a smoothed curve's dip after two low batches, as steep as the descent
    assert np.gradient(curve, x)[SKIP_START:].argmin() + SKIP_START in (6, 7, 8)  # neighbours are fooled
    suggestion, _, rule = suggest_lr(lrs, curve)
    assert rule == "steepest descent" and suggestion == pytest.approx(2e-3, rel=0.2)


def test_a_coarse_test_reads_its_neighbours():
    """At 3 points a decade half a decade either side is the neighbouring point: numpy's slope."""
    lrs = np.array(exponential_lrs(1e-7, 1.0, 22))
    curve = np.cos(np.linspace(0, 3, 22))
    assert slopes_per_decade(lrs, curve)[1:-1] == pytest.approx(np.gradient(curve, np.log10(lrs))[1:-1])


def test_no_descent_falls_back_to_a_tenth_of_the_minimum():
    lrs = exponential_lrs(1e-6, 1.0, 30)
    rising = np.linspace(2.0, 5.0, 30)
    suggestion, min_loss_lr, rule = suggest_lr(lrs, rising)
    assert min_loss_lr == lrs[0] and suggestion == lrs[0]  # a tenth of it would leave the range
    assert "no descent" in rule
    falls_late = np.concatenate([np.full(SKIP_START + 10, 3.0), [2.0], np.full(30 - SKIP_START - 11, 9.0)])
    suggestion, min_loss_lr, _ = suggest_lr(lrs, falls_late)
    assert lrs[SKIP_START] <= suggestion <= min_loss_lr == lrs[SKIP_START + 10]


# ------------------------------------------------------------------ arguments

@pytest.mark.parametrize("name,value", [
    ("start_lr", 0.0), ("start_lr", -1e-5), ("start_lr", math.nan),
    ("end_lr", 1e-7), ("end_lr", 1e-8), ("end_lr", math.inf),
    ("num_steps", 9), ("num_steps", 20.5),
    ("stop_factor", 1.0), ("stop_factor", 0.5),
    ("smoothing", 1.0), ("smoothing", -0.1)])
def test_bad_arguments_name_the_argument(tmp_path, name, value):
    with pytest.raises(ValueError) as err:
        lr_range_test(small(tmp_path), **{name: value})
    message = str(err.value)
    assert message.startswith(f"{name}={value!r}") and "allowed:" in message


# ------------------------------------------------------------------ the result as data

def test_frame_and_json_round_trip(diverging, tmp_path):
    df = diverging.to_frame()
    assert list(df.columns) == ["step", "learning_rate", "loss", "smoothed_loss"]
    assert len(df) == diverging.steps and df["step"].iloc[-1] == diverging.steps
    assert df["learning_rate"].tolist() == diverging.lrs
    path = diverging.save(tmp_path / "lr")
    assert path.name == "lr_range_test.json"
    assert LRRangeTest.load(path) == diverging == LRRangeTest.load(tmp_path / "lr")
    assert LRRangeTest.load(path).config["model"] == "tiny"


# ------------------------------------------------------------------ the plot

def test_plot_marks_suggestion_stop_and_compare(diverging):
    before = plt.get_fignums()
    fig = plots.lr_finder_plot(diverging, compare_lr=3e-3, compare_label="sweep best")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    suggestion = gid(ax, "suggestion")
    assert suggestion.get_xdata()[0] == diverging.suggestion
    assert f"{diverging.suggestion:.2g}" in suggestion.get_label()
    assert list(gid(ax, "smoothed").get_ydata()) == diverging.smoothed
    assert len(gid(ax, "loss").get_xdata()) == diverging.steps
    assert gid(ax, "min_loss_lr").get_xdata()[0] == diverging.min_loss_lr
    stopped = gid(ax, "stopped")
    assert stopped.get_xdata()[0] == diverging.lrs[-1] and "stopped" in stopped.get_label()
    compare = gid(ax, "compare")
    assert compare.get_xdata()[0] == 3e-3 and compare.get_label().startswith("sweep best")
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    assert plt.get_fignums() == before  # never pyplot


def test_plot_of_a_full_ramp_from_its_saved_file(gentle, tmp_path):
    fig = plots.lr_finder_plot(gentle.save(tmp_path))
    ax = fig.axes[0]
    assert gid(ax, "suggestion").get_xdata()[0] == gentle.suggestion
    assert not [line for line in ax.lines if line.get_gid() in ("stopped", "compare")]
    fig.savefig(tmp_path / "lr.png")  # headless, no backend set


def test_a_bad_argument_is_named_in_chinese():
    """The real catalogue (nbkit/locale/zh_CN/LC_MESSAGES/nbkit.po)."""
    from nbkit.core.i18n import set_language
    from nbkit.core.lr_finder import check_arguments

    set_language("zh")
    try:
        with pytest.raises(ValueError, match=r"^num_steps=5 无效；允许：一个整数 >= 10（点再少就读不出曲线）。$"):
            check_arguments(1e-7, 1.0, 5, 4.0, 0.98)
    finally:
        set_language("en")
