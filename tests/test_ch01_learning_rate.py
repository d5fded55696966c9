"""nbkit.labs.ch01_learning_rate: the range tests and the LR sweep on a seed set, and the evidence
tables chapter 1's checks read (a row per seed), on tiny runs or small hand-built tables."""
import math

import pandas as pd
import pytest

from conftest import tiny_config
from nbkit.core.evaluate import heldout_text_loss
from nbkit.core.lr_finder import LRRangeTest, lr_range_test
from nbkit.core.runs import Run, as_runs
from nbkit.core.train import train
from nbkit.labs.ch01_learning_rate import (early_damage, early_loss_rise, final_loss_by_schedule, forgetting_by_rule,
                                           lr_sweep_facts, range_test_vs_sweep, range_tests, sweep_with_text_loss,
                                           warmup_damage)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return tiny_config(tmp_path_factory.mktemp("runs"))  # 80 rows: 4 batches of 16 per epoch


def fake_run(path=None, losses=(), epoch_losses=(), **config) -> Run:
    """A Run with these step losses (steps 1, 2, ...) and these validation losses (epochs 0, 1, ...)."""
    steps = pd.DataFrame({"step": range(1, len(losses) + 1), "loss": list(losses)})
    epochs = pd.DataFrame({"epoch": range(len(epoch_losses)), "eval_loss": list(epoch_losses)})
    return Run(path=path, config=config, steps=steps, epochs=epochs, summary={"status": "completed"})


def with_runs(rows: list[dict], runs: list[Run]) -> pd.DataFrame:
    """A sweep-like table of `rows` whose runs are kept with it, as the sweep keeps them (found by path)."""
    df = pd.DataFrame(rows)
    df.attrs["runs"] = runs
    return df


# ---------------------------------------------------------------- the range tests and the sweep

@pytest.mark.extended  # minutes: make test-extended (test-all), not CI's 45
def test_range_tests_one_per_seed_side_by_side_equal_one_by_one(cfg):
    short = dict(start_lr=1e-5, end_lr=1e-1, num_steps=10)
    serial = range_tests(cfg, [3, 4], **short)
    assert [r.config["seed"] for r in serial] == [3, 4]
    assert serial[0].losses == lr_range_test(cfg.replace(seed=3), **short).losses
    assert serial[0].losses != serial[1].losses  # another seed, another data order
    side_by_side = range_tests(cfg, [3, 4], workers=2, **short)
    # the same runs: a worker's 1 thread sums its matrices in another order than this process's threads, so the
    # losses agree to float32 rounding (measured: 1e-6 relative), not bit for bit
    for worker_run, serial_run in zip(side_by_side, serial, strict=True):
        assert worker_run.losses == pytest.approx(serial_run.losses, rel=1e-4)
    with pytest.raises(ValueError, match="workers=1"):
        range_tests(cfg, [3], workers=2, model=object())


def test_sweep_with_text_loss_measures_every_run_and_lets_the_weights_go(cfg):
    short = cfg.replace(max_steps=2, num_train_epochs=1)
    first = train(short.replace(learning_rate=1e-3, seed=5))  # reused by the sweep, not trained again
    df = sweep_with_text_loss(short, [1e-4, 1e-3], [5, 6], reuse=[first])
    assert df[["learning_rate", "seed"]].values.tolist() == [[1e-4, 5], [1e-3, 5], [1e-4, 6], [1e-3, 6]]
    assert df.loc[1, "path"] == str(first.path)
    assert df.loc[1, "heldout_text_loss"] == pytest.approx(heldout_text_loss(first.model, first.tokenizer))
    assert df["heldout_text_loss"].notna().all() and df.attrs["knobs"] == ["learning_rate", "seed"]
    assert all(r.model is None for r in as_runs(df)) and first.model is not None  # the caller's run keeps its own
    # every seed in one sweep, in worker processes; df's runs lost their weights: trained again, `first` reused
    side_by_side = sweep_with_text_loss(short, [1e-4, 1e-3], [5, 6], reuse=as_runs(df) + [first], workers=2)
    assert side_by_side[["learning_rate", "seed"]].values.tolist() == df[["learning_rate", "seed"]].values.tolist()
    assert (side_by_side["path"] == df["path"]).tolist() == [False, True, False, False]
    assert side_by_side["heldout_text_loss"].tolist() == pytest.approx(df["heldout_text_loss"].tolist(), rel=1e-4)


def lr_sweep(seed_losses: dict, lrs=(1e-4, 1e-3, 1e-2, 1e-1), diverged=(), steps=4) -> pd.DataFrame:
    """A hand-built LR sweep: best_eval_loss per LR at each seed; (lr, seed) in `diverged` diverged. Each
    run has `steps` steps and validation losses 5.0, loss + 0.5, loss."""
    rows, runs = [], []
    for seed, losses in seed_losses.items():
        for lr, loss in zip(lrs, losses):
            path = f"/runs/lr{lr}-s{seed}"
            status = "diverged" if (lr, seed) in diverged else "completed"
            rows.append(dict(learning_rate=lr, seed=seed, status=status, best_eval_loss=loss, base_eval_loss=5.0,
                             diverged_at_step=3.0 if status == "diverged" else math.nan, path=path))
            runs.append(fake_run(path, [1.0] * steps, [5.0, loss + 0.5, loss], seed=seed))
    return with_runs(rows, runs)


def test_lr_sweep_facts_per_seed():
    facts = lr_sweep_facts(lr_sweep({1: [3.0, 1.0, 1.5, 2.0], 2: [3.0, 1.2, 1.1, 1.0]}, diverged=[(1e-1, 1)]))
    assert facts.index.tolist() == [1, 2]
    one, two = facts.loc[1], facts.loc[2]
    assert one["best_lr"] == 1e-3 and one["best_after_one_epoch"] == 1.5  # the diverged run is not a candidate
    assert one["above_best_lrs"] == [1e-3, 1e-2] and one["above_best_monotonic"]
    assert one["largest_status"] == "diverged" and one["smallest_best_eval_loss"] == 3.0
    assert two["best_lr"] == 1e-1 and not two["above_best_monotonic"]  # nothing above the best: no trend to read
    assert two["largest_status"] == "completed"


# ---------------------------------------------------------------- the evidence of the checks

def test_forgetting_by_rule_compares_the_rule_range_with_the_lrs_at_or_above_pretraining():
    rows = [dict(seed=seed, learning_rate=lr, status=status, heldout_text_loss=loss, path=f"/runs/{seed}-{lr}")
            for seed, losses in [(7, [2.0, 2.1, 2.5, 2.6]), (8, [2.0, 2.7, 2.5, 2.6])]
            for lr, loss, status in zip([1e-4, 1e-3, 1e-2, 1e-1], losses, ["completed"] * 3 + ["diverged"])]
    forgetting = forgetting_by_rule(pd.DataFrame(rows), rule=(1e-4, 1e-3), pretraining_lr=1e-2)
    assert forgetting.index.tolist() == [7, 8]
    seven = forgetting.loc[7]
    assert seven["inside_lrs"] == [1e-4, 1e-3] and seven["above_lrs"] == [1e-2]  # the diverged 1e-1 is left out
    assert seven["inside_text_loss"] == [2.0, 2.1] and seven["above_text_loss"] == [2.5]
    assert seven["inside_worst"] == 2.1 and seven["above_best"] == 2.5
    assert seven["paths"] == ["/runs/7-0.0001", "/runs/7-0.001", "/runs/7-0.01"]
    assert forgetting.loc[8, "inside_worst"] == 2.7  # forgets more inside the range than above: the rule fails there
    nothing_above = forgetting_by_rule(pd.DataFrame(rows), rule=(1e-4, 1e-3), pretraining_lr=1.0)
    assert not (nothing_above["inside_worst"] < nothing_above["above_best"]).any()  # no run to compare: no verdict


def test_final_loss_by_schedule_names_each_schedule_and_the_worst_decaying_one():
    final = {(3, "constant"): 1.0, (3, "linear"): 0.7, (3, "cosine"): 0.8,
             (4, "constant"): 0.9, (4, "linear"): 0.95, (4, "cosine"): 0.6}
    df = pd.DataFrame([dict(lr_scheduler_type=s, seed=seed, final_eval_loss=final[seed, s])
                       for s in ["constant", "linear", "cosine"] for seed in [4, 3]])
    table = final_loss_by_schedule(df)
    assert table.index.tolist() == [4, 3]  # the table's order of seeds
    assert table.columns.tolist() == ["final_eval_loss_constant", "final_eval_loss_linear",
                                      "final_eval_loss_cosine", "worst_decaying"]
    assert table.loc[3].tolist() == [1.0, 0.7, 0.8, 0.8]
    assert table.loc[4, "worst_decaying"] == 0.95  # linear ended above constant at seed 4
    df.loc[(df["seed"] == 3) & (df["lr_scheduler_type"] == "cosine"), "final_eval_loss"] = math.nan
    assert math.isnan(final_loss_by_schedule(df).loc[3, "worst_decaying"])  # a missing schedule is not a win


def test_warmup_damage_reads_each_seed_without_and_with_warmup():
    climbs, gentle = [5.0, 9.0, 6.0, 9.0] + [1.0] * 12, [5.0, 5.0, 4.0, 3.0] + [1.0] * 12
    plan = [(0.0, 1, climbs), (0.25, 1, gentle), (0.0, 2, gentle), (0.25, 2, climbs)]
    runs = [fake_run(f"/runs/{ratio}-{seed}", losses) for ratio, seed, losses in plan]
    df = with_runs([dict(warmup_ratio=ratio, seed=seed, path=f"/runs/{ratio}-{seed}") for ratio, seed, _ in plan], runs)
    damage = warmup_damage(df, warmup_ratio=0.25)
    assert damage.index.tolist() == [1, 2]
    assert damage.loc[1, "early_rise_no_warmup"] == pytest.approx(early_damage(runs[0])["rise"])
    assert damage.loc[1, "early_rise_warmup"] == pytest.approx(early_damage(runs[1])["rise"])
    assert damage.loc[2, "mean_over_first_loss_no_warmup"] == pytest.approx(early_damage(runs[2])["mean_ratio"])
    assert damage.loc[2, "mean_over_first_loss_warmup"] == pytest.approx(early_damage(runs[3])["mean_ratio"])
    assert damage.loc[1, "early_rise_no_warmup"] > damage.loc[1, "early_rise_warmup"]
    assert damage.loc[2, "early_rise_no_warmup"] < damage.loc[2, "early_rise_warmup"]


def range_test(seed: int, suggestion: float, steps: int = 10) -> LRRangeTest:
    return LRRangeTest(lrs=[], losses=[], smoothed=[], suggestion=suggestion, min_loss_lr=suggestion * 10,
                       stopped_early=False, stop_reason="", steps=steps, seconds=0.0, config={"seed": seed})


def test_range_test_vs_sweep_sets_each_suggestion_beside_the_best_lr_of_its_seed():
    df = lr_sweep({1: [3.0, 1.0, 1.5, 2.0], 2: [3.0, 1.2, 1.1, 1.0]}, steps=6)  # best LR: 1e-3 at seed 1, 1e-1 at 2
    versus = range_test_vs_sweep([range_test(2, 5e-3, steps=12), range_test(1, 2e-3)], df)
    assert versus.index.tolist() == [2, 1]  # the tests' order
    assert versus.columns.tolist() == ["suggestion", "sweep_best_lr", "ratio", "range_test_steps", "sweep_steps"]
    assert versus.loc[2].tolist() == pytest.approx([5e-3, 1e-1, 0.05, 12, 4 * 6])
    assert versus.loc[1, "ratio"] == pytest.approx(2.0)


# ---------------------------------------------------------------- warmup: the early steps

def test_early_loss_rise_measures_the_jump_above_the_first_loss_in_the_first_quarter():
    assert early_loss_rise(fake_run(losses=[5.0, 7.5, 6.0, 4.0] + [3.0] * 12)) == pytest.approx(2.5)
    # later jumps don't count
    assert early_loss_rise(fake_run(losses=[5.0, 4.0, 3.0, 2.0] + [9.0] * 12)) == pytest.approx(-1.0)


def test_early_damage_reads_the_smoothed_climb_and_the_mean_of_the_first_quarter():
    # 16 steps: the first quarter after step 1 is steps 2-4 (3 losses), averaged over windows of 3
    damage = early_damage(fake_run(losses=[5.0, 9.0, 6.0, 9.0] + [1.0] * 12))
    assert damage["steps"] == 3
    assert damage["rise"] == pytest.approx(8.0 - 5.0)  # (9 + 6 + 9) / 3, not the single 9
    assert damage["mean_ratio"] == pytest.approx(8.0 / 5.0)
    falling = early_damage(fake_run(losses=[5.0, 4.0, 3.0, 2.0] + [9.0] * 12))  # later jumps don't count
    assert falling["rise"] == pytest.approx(-2.0) and falling["mean_ratio"] == pytest.approx(0.6)


def test_early_damage_of_a_short_run_uses_the_steps_it_has():
    damage = early_damage(fake_run(losses=[4.0, 6.0, 1.0, 1.0]))  # a quarter of 4 steps: step 2 alone
    assert damage == {"rise": pytest.approx(2.0), "mean_ratio": pytest.approx(1.5), "steps": 1}
    with pytest.raises(ValueError, match="window"):
        early_damage(fake_run(losses=[4.0, 6.0]), window=0)
